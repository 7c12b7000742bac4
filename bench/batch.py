"""Batch throughput on a simulated fleet: characters per hour against the fleet's bound, makespan against ideal.

    .venv/bin/python bench/batch.py                          # 12 characters, 4 workers, gpu:0.02 (~6 min)
    .venv/bin/python bench/batch.py --characters 24 --workers 4 --scale 0.02 --concurrency 24
    .venv/bin/python bench/batch.py --postgres               # the Prefect server on PostgreSQL (127.0.0.1:5432)

Everything runs as a studio runs it, each in its own process: a real ``prefect server`` (SQLite, or PostgreSQL
with ``--postgres``; never the ephemeral one, which drops records), W preview workers whose latency profile is
the preview's per-node model of a real GPU worker (``gpu``) scaled by ``--scale``, and the orchestrator:
``reelforge run batch --type kpop_idol --count N --variations 20 --json`` (the whole character of Stages 2:
images, dedup, LoRA training and test, voice, intro clip).

Figures (GPU time is what the workers themselves recorded: execution_start to the prompt's last message):

* characters per hour, and the fleet bound: W x 3600 / (GPU seconds per character); their ratio (target >= 0.95);
* makespan (the batch flow's own wall time) against ideal (sum of GPU seconds / W) (target <= 1.05);
* mean worker utilization over the makespan;
* Prefect: task runs per second, the server's CPU (share of one core, and CPU ms per task run), and from that
  the largest fleet one SQLite server can drive at real (unscaled) GPU timings;
* the orchestrator's CPU per character and its peak RSS (the process alone, and with its child processes).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Prompt, batch_env, fleet, prefect_server, prompts, run_batch

SQLITE_TASK_RUNS_PER_S = 12.0  # shared/reference/prefect-facts.md: one SQLite server sustains ~12-15 task runs/s


@contextlib.contextmanager
def _postgres_database() -> Iterator[str]:
    """A new database on the local PostgreSQL for one run (trust auth, user postgres), dropped afterwards."""
    name = f"reelforge_bench_{int(time.time())}"
    subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", name], check=True)
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    finally:
        subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", "--force", name], check=False)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="reelforge-bench-batch-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        postgres = stack.enter_context(_postgres_database()) if args.postgres else None
        with prefect_server(work, postgres=postgres) as server, \
                fleet(work, args.workers, f"gpu:{args.scale}") as workers:
            env = batch_env(server.url, workers.urls, work,
                            REELFORGE_BATCH_CONCURRENCY=str(args.concurrency or args.characters))
            cli = ["--type", args.type, "--count", str(args.characters), "--variations", str(args.variations),
                   "--seed", str(args.seed)]
            if not args.intro:
                cli.append("--no-intro")
            server_cpu, task_runs, flow_runs = server.cpu(), server.count_task_runs(), server.count_flow_runs()
            began = time.time()
            batch = run_batch(cli, env, work / "orchestrator.log")
            server_cpu = server.cpu() - server_cpu
            task_runs = server.count_task_runs() - task_runs
            flow_runs = server.count_flow_runs() - flow_runs
            done = prompts(workers.histories(), since=began)
        summary = (batch.payload.get("result") or {}).get("summary")
        if batch.returncode != 0:
            print(batch.stderr_tail, file=sys.stderr)
            if not summary or not summary["totals"]["completed"]:
                raise SystemExit(f"the batch failed (exit {batch.returncode}): {json.dumps(batch.payload)[:2000]}")
            failed = [(r["row"], r["error"]) for r in summary["rows"] if r["status"] != "completed"]
            print(f"WARNING: the batch failed (exit {batch.returncode}); rows not made: {failed}", file=sys.stderr)
    if args.timeline:
        args.timeline.write_text(json.dumps([p.__dict__ for p in sorted(done, key=lambda p: p.start)], indent=1))
    return figures(args, summary, batch, done, server_cpu, task_runs, flow_runs, server.database)


def figures(args: argparse.Namespace, summary: dict[str, Any], batch: Any, done: list[Prompt], server_cpu: float,
            task_runs: int, flow_runs: int, database: str) -> dict[str, Any]:
    made = summary["totals"]["completed"]
    makespan = float(summary["totals"]["wall_s"])
    busy = [sum(p.end - p.start for p in done if p.worker == w) for w in range(args.workers)]
    gpu_total = sum(busy)
    per_character = gpu_total / made
    bound = args.workers * 3600 / per_character
    rate = made * 3600 / makespan
    ideal = gpu_total / args.workers
    window = max(p.end for p in done) - min(p.start for p in done)
    tasks_per_character = task_runs / made
    cpu_per_task = server_cpu / task_runs
    # At real GPU timings a character takes per_character / scale GPU seconds; a fleet of F workers then asks for
    # F * tasks_per_character * scale / per_character task runs per second.
    real_per_character = per_character / args.scale
    sqlite_fleet = SQLITE_TASK_RUNS_PER_S * real_per_character / tasks_per_character
    cpu_bound_fleet = (1.0 / cpu_per_task) * real_per_character / tasks_per_character
    orchestrator_cpu_per_character = batch.cpu_s / made
    return {
        "characters": made, "not_made": summary["totals"]["rows"] - made,
        "rows_run_again": sum(1 for row in summary["rows"] if row.get("attempts", 1) > 1),
        "workers": args.workers, "scale": args.scale, "variations": args.variations,
        "concurrency": args.concurrency or args.characters, "prompts": len(done),
        "regenerated": sum(1 for p in done if re.search(r"-r\d+$", p.job_id)),
        "gpu_s_per_character": round(per_character, 2),
        "real_gpu_s_per_character": round(real_per_character, 1),
        "characters_per_hour": round(rate, 1), "fleet_bound_per_hour": round(bound, 1),
        "ratio_to_bound": round(rate / bound, 3),
        "makespan_s": round(makespan, 1), "ideal_s": round(ideal, 1), "makespan_over_ideal": round(makespan / ideal, 3),
        "prompt_window_s": round(window, 1), "window_over_ideal": round(window / ideal, 3),
        "utilization": [round(b / makespan, 3) for b in busy],
        "mean_utilization": round(gpu_total / args.workers / makespan, 3),
        "database": database, "task_runs": task_runs, "flow_runs": flow_runs,
        "task_runs_per_character": round(tasks_per_character, 1),
        "task_runs_per_s": round(task_runs / makespan, 2),
        "server_cpu_share_of_one_core": round(server_cpu / makespan, 3),
        "server_cpu_ms_per_task_run": round(1000 * cpu_per_task, 1),
        "largest_fleet_sqlite_at_12_task_runs_per_s": int(sqlite_fleet),
        "largest_fleet_server_cpu_bound": int(cpu_bound_fleet),
        "orchestrator_cpu_s_per_character": round(orchestrator_cpu_per_character, 2),
        "orchestrator_peak_rss_mib": round(batch.peak_rss / 2**20, 1),
        "orchestrator_tree_peak_rss_mib": round(batch.peak_tree_rss / 2**20, 1),
        "process_wall_s": round(batch.wall_s, 1),
    }


def report(r: dict[str, Any]) -> None:
    print(f"\n{r['characters']} characters ({r['variations']} variations each), {r['workers']} preview workers at "
          f"gpu:{r['scale']} ({r['gpu_s_per_character']} GPU s per character here, {r['real_gpu_s_per_character']} "
          f"at real timings), {r['concurrency']} at once, Prefect on {r['database']}")
    print(f"  prompts executed            {r['prompts']} ({r['regenerated']} near-duplicate regenerations); "
          f"characters not made {r['not_made']}, run again {r['rows_run_again']}")
    print(f"  characters per hour         {r['characters_per_hour']}   fleet bound {r['fleet_bound_per_hour']}   "
          f"ratio {r['ratio_to_bound']} (target >= 0.95)")
    print(f"  makespan                    {r['makespan_s']} s   ideal {r['ideal_s']} s   ratio "
          f"{r['makespan_over_ideal']} (target <= 1.05); first prompt to last: {r['prompt_window_s']} s "
          f"({r['window_over_ideal']})")
    print(f"  worker utilization          mean {r['mean_utilization']}  per worker {r['utilization']}")
    print(f"  Prefect                     {r['task_runs']} task runs ({r['task_runs_per_character']} per character), "
          f"{r['task_runs_per_s']}/s; server CPU {r['server_cpu_share_of_one_core']} of a core, "
          f"{r['server_cpu_ms_per_task_run']} ms per task run")
    print(f"  largest fleet, one SQLite server (a projection): ~{r['largest_fleet_sqlite_at_12_task_runs_per_s']} "
          f"workers at {SQLITE_TASK_RUNS_PER_S:g} task runs/s; ~{r['largest_fleet_server_cpu_bound']} if the "
          "server's CPU per task run were the only limit (real GPU timings; with --postgres the database's own "
          "processes are not in that CPU)")
    print(f"  orchestrator                {r['orchestrator_cpu_s_per_character']} CPU s per character; peak RSS "
          f"{r['orchestrator_peak_rss_mib']} MiB (with children {r['orchestrator_tree_peak_rss_mib']} MiB); "
          f"process wall {r['process_wall_s']} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--characters", type=int, default=12)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--scale", type=float, default=0.02, help="the preview's gpu latency model times this")
    parser.add_argument("--variations", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=0, help="characters at once (default: all)")
    parser.add_argument("--type", default="kpop_idol")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-intro", dest="intro", action="store_false", help="leave out the intro clip")
    parser.add_argument("--postgres", action="store_true", help="the Prefect server on PostgreSQL")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--timeline", type=Path, help="write every prompt (worker, job, start, end) here")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()
    result = measure(args)
    report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    missed = result["ratio_to_bound"] < 0.95 or result["makespan_over_ideal"] > 1.05
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
