"""Soak: continuous batches for a bounded time on a faulty fleet; the orchestrator must neither lose, repeat
nor leak.

    .venv/bin/python bench/soak.py                  # 20 minutes, 3 workers
    .venv/bin/python bench/soak.py --minutes 5      # shorter

One long-lived orchestrator process (the way a served deployment lives) runs ``batch_flow`` from Python again
and again (``--count`` characters each, a new seed each time) against a real ``prefect server`` and W preview
workers in their own processes, each with recurring faults:

* ``http500`` answers and ``near_duplicate`` images at the rates of ``--faults`` (every worker's spec);
* per worker life one crash mid-prompt (``crash_at_node``, coming back after 3 s with an empty queue and
  history: ``restart_after``) and one dropped set of WebSockets (``drop_ws_after``), at a point drawn per life;
* every ``--kill-every`` seconds one worker (in turn) is killed with SIGKILL mid-work and started again on the
  same port and folder after 3 s: the real crash, queue and history gone.

Every few seconds it records each worker's history (so a restart loses nothing from the count), the
orchestrator's RSS (with its children) and open file descriptors. At the end it prints the figures over time
and: characters completed and failed, jobs lost (cache keys submitted that never completed anywhere), jobs
executed twice (cache keys with two successful executions, from the prompts' ``extra_data.reelforge.cache_key``),
runs stuck (flow or task runs left Running or Pending, and prompts left on a worker's queue), and the RSS growth
from the end of the first batch to the end, against its bound (``--rss-bound``, default 25%).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import REPO, batch_env, free_port, open_fds, prefect_server, rss_bytes, start_worker, stop, tree_of

SNAPSHOT_S = 2.0
SAMPLE_S = 10.0


# ------------------------------------------------------------------------------------------ orchestrator


def orchestrate(args: argparse.Namespace) -> int:
    """The child process: batches back to back until ``--until``, one JSON line per batch on stdout."""
    import asyncio

    from flows.batch import BatchResult, batch_flow

    number = 0
    while time.time() < args.until:
        number += 1
        began = time.time()
        state = asyncio.run(batch_flow(  # type: ignore[call-overload]
            character_type=args.type, count=args.count, seed=args.seed + number, variations=args.variations,
            width=args.size, height=args.size, intro=args.intro, return_state=True,
        ))
        result = state.result(raise_on_failure=False)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
        line: dict[str, Any] = {"batch": number, "state": state.type.value, "wall_s": round(time.time() - began, 1)}
        if isinstance(result, BatchResult):
            totals = result.summary.totals
            line |= {"id": result.batch_id, "completed": totals.completed, "failed": totals.failed,
                     "errors": [r.error for r in result.summary.rows if r.error][:3]}
        else:
            line |= {"completed": 0, "failed": args.count, "errors": [repr(result)[:300]]}
        print(json.dumps(line), flush=True)
    return 0


# ------------------------------------------------------------------------------------------ the fleet


@dataclass
class Worker:
    index: int
    port: int
    base: str  # the recurring faults (--faults)
    spec: str = ""  # this life's whole spec
    proc: subprocess.Popen[bytes] | None = None
    lives: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Record:
    """What the workers' histories showed, kept across restarts: prompt id -> (cache key, status)."""

    prompts: dict[tuple[int, int, str], tuple[str, str]] = field(default_factory=dict)
    details: dict[tuple[int, int, str], dict[str, Any]] = field(default_factory=dict)  # job, run, times
    kill_times: list[tuple[float, int, int]] = field(default_factory=list)  # (epoch, worker, its life then)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self, workers: list[Worker], *, items: int | None = 200) -> None:
        for w in workers:
            try:
                query = f"?max_items={items}" if items else ""
                history = httpx.get(f"{w.url}/history{query}", timeout=10).json()
            except (httpx.HTTPError, ValueError):
                continue  # down (killed, restarting) or an injected 500: the next snapshot catches up
            with self.lock:
                for prompt_id, entry in history.items():
                    extra = entry["prompt"][3].get("reelforge", {})
                    key = extra.get("cache_key") or f"job:{extra.get('flow_run_id')}:{extra.get('job_id')}"
                    self.prompts[(w.index, w.lives, prompt_id)] = (key, entry["status"]["status_str"])
                    stamps = {m[0]: round(m[1].get("timestamp", 0) / 1000, 2) for m in entry["status"]["messages"]}
                    self.details[(w.index, w.lives, prompt_id)] = {
                        "job": extra.get("job_id"), "run": extra.get("flow_run_id"),
                        "task_run": extra.get("task_run_id"),
                        "start": stamps.get("execution_start"), "end": max(stamps.values(), default=None),
                        "status": entry["status"]["status_str"]}


def life_spec(base: str, rng: random.Random) -> str:
    """A worker life's faults: the recurring rates plus one crash and one WebSocket drop at drawn points."""
    extra = f"crash_at_node={rng.randint(150, 600)},restart_after=3,drop_ws_after={rng.randint(200, 2000)}"
    return ",".join(p for p in (base, extra, f"seed={rng.randint(0, 10**6)}") if p)


def launch(work: Path, w: Worker, latency: str, rng: random.Random) -> None:
    w.lives += 1
    w.spec = life_spec(w.base, rng)
    w.proc, _, _ = start_worker(work, f"worker{w.index}", latency, w.spec, port=w.port)


# ------------------------------------------------------------------------------------------ the soak


def soak(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="reelforge-soak-") as tmp:
        work = Path(tmp)
        latency = f"gpu:{args.scale}"
        with prefect_server(work) as server, contextlib.ExitStack() as stack:
            workers = [Worker(i, free_port(), args.faults) for i in range(args.workers)]
            for w in workers:
                launch(work, w, latency, rng)
                stack.callback(lambda w=w: w.proc is not None and stop(w.proc, grace=5))  # its current life
            record = Record()
            env = batch_env(server.url, [w.url for w in workers], work,
                            REELFORGE_BATCH_CONCURRENCY=str(args.concurrency), PYTHONUNBUFFERED="1")
            until = time.time() + args.minutes * 60
            cmd = [sys.executable, str(Path(__file__).resolve()), "--orchestrate", "--until", str(until),
                   "--count", str(args.count), "--variations", str(args.variations), "--type", args.type,
                   "--seed", str(args.seed), "--size", str(args.size)]
            if not args.intro:
                cmd.append("--no-intro")
            log = work / "orchestrator.log"
            began = time.monotonic()
            with log.open("wb") as err:
                orch = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=err,
                                        start_new_session=True)
            batches: list[dict[str, Any]] = []
            samples: list[tuple[float, int, int, int, int]] = []  # (t, RSS, tree RSS, fds, characters done)
            kills = 0

            def read_batches() -> None:
                assert orch.stdout is not None
                for raw in orch.stdout:
                    line = json.loads(raw)
                    batches.append(line)
                    print(f"  [{time.monotonic() - began:6.0f} s] batch {line['batch']}: {line['state']}, "
                          f"{line['completed']} made, {line['failed']} failed, {line['wall_s']} s"
                          + (f"; {line['errors']}" if line.get("errors") else ""), flush=True)

            reader = threading.Thread(target=read_batches, daemon=True)
            reader.start()
            next_kill = time.monotonic() + args.kill_every
            next_sample = time.monotonic()
            victim = 0
            try:
                while orch.poll() is None:
                    time.sleep(SNAPSHOT_S)
                    record.snapshot(workers)
                    now = time.monotonic()
                    if now >= next_sample:
                        next_sample = now + SAMPLE_S
                        pids = tree_of(orch.pid)
                        done = sum(b["completed"] for b in batches)
                        samples.append((now - began, rss_bytes(orch.pid), sum(rss_bytes(p) for p in pids),
                                        open_fds(orch.pid), done))
                        t, rss, tree, fds, _ = samples[-1]
                        print(f"  [{t:6.0f} s] orchestrator RSS {rss / 2**20:6.1f} MiB (with its CPU stage processes "
                              f"{tree / 2**20:6.1f} MiB), {fds} fds, {done} characters", flush=True)
                    if args.kill_every and now >= next_kill and time.time() < until:
                        next_kill = now + args.kill_every
                        w = workers[victim % len(workers)]
                        victim += 1
                        record.snapshot([w], items=None)
                        if w.proc is not None:
                            os.killpg(w.proc.pid, signal.SIGKILL)
                            w.proc.wait()
                        kills += 1
                        record.kill_times.append((round(time.time(), 2), w.index, w.lives))
                        print(f"  [{now - began:6.0f} s] SIGKILL worker{w.index}; back in 3 s", flush=True)
                        time.sleep(3)
                        launch(work, w, latency, rng)
            finally:
                stop(orch, grace=10)  # on an error or SIGTERM here too: it lives in its own session
            reader.join(timeout=30)
            wall = time.monotonic() - began
            record.snapshot(workers, items=None)
            stuck = stuck_runs(server.url) + queued_prompts(workers)
            lives = sum(w.lives for w in workers)
            if orch.returncode != 0:
                print(log.read_text(errors="replace")[-3000:], file=sys.stderr)
    return report(args, batches, samples, record, stuck, kills, lives, wall, orch.returncode)


def stuck_runs(api: str) -> int:
    """Flow and task runs left Running or Pending once the orchestrator is gone."""
    body = {"flow_runs": {"state": {"type": {"any_": ["RUNNING", "PENDING"]}}}}
    flows = int(httpx.post(f"{api}/flow_runs/count", json=body, timeout=30).json())
    body_t = {"task_runs": {"state": {"type": {"any_": ["RUNNING", "PENDING"]}}}}
    tasks = int(httpx.post(f"{api}/task_runs/count", json=body_t, timeout=30).json())
    if flows or tasks:
        print(f"  stuck: {flows} flow runs, {tasks} task runs Running or Pending")
    return flows + tasks


def queued_prompts(workers: list[Worker]) -> int:
    left = 0
    for w in workers:
        try:
            queue = httpx.get(f"{w.url}/queue", timeout=10).json()
        except (httpx.HTTPError, ValueError):
            continue
        left += len(queue.get("queue_running", [])) + len(queue.get("queue_pending", []))
    return left


def report(args: argparse.Namespace, batches: list[dict[str, Any]], samples: list[tuple[float, int, int, int, int]],
           record: Record, stuck: int, kills: int, lives: int, wall: float, rc: int) -> int:
    by_key: dict[str, list[str]] = {}
    for key, status in record.prompts.values():
        by_key.setdefault(key, []).append(status)
    twice = sorted(k for k, s in by_key.items() if s.count("success") > 1)
    lost = sorted(k for k, s in by_key.items() if "success" not in s)
    made = sum(b["completed"] for b in batches)
    failed = sum(b["failed"] for b in batches)
    # RSS growth of the orchestrator process (its CPU stage processes come and go): the median of the last
    # quarter of the samples against the median of the first quarter after the first batch ended.
    samples = [s for s in samples if s[1] > 0]  # a sample taken as the orchestrator exited reads nothing
    first_end = next((i for i, s in enumerate(samples) if s[4] > 0), None)
    growth = fd_growth = None
    if first_end is not None and len(samples) - first_end >= 8:
        settled = samples[first_end:]
        quarter = len(settled) // 4
        head, tail = settled[:quarter], settled[-quarter:]
        growth = statistics.median(s[1] for s in tail) / statistics.median(s[1] for s in head) - 1.0
        fd_growth = max(s[3] for s in tail) - max(s[3] for s in head)
    figures = {
        "minutes": args.minutes, "workers": args.workers, "scale": args.scale, "faults": args.faults,
        "kill_every_s": args.kill_every, "worker_kills": kills, "worker_lives": lives, "batches": len(batches),
        "characters_completed": made, "characters_failed": failed, "prompts": len(record.prompts),
        "cache_keys": len(by_key), "jobs_lost": len(lost), "executed_twice": len(twice), "runs_stuck": stuck,
        "rss_first_batch_mib": round(samples[first_end][1] / 2**20, 1) if first_end is not None else None,
        "tree_rss_peak_mib": round(max(s[2] for s in samples) / 2**20, 1) if samples else None,
        "rss_end_mib": round(samples[-1][1] / 2**20, 1) if samples else None,
        "rss_peak_mib": round(max(s[1] for s in samples) / 2**20, 1) if samples else None,
        "rss_growth": round(growth, 3) if growth is not None else None, "rss_bound": args.rss_bound,
        "fd_growth": fd_growth, "wall_s": round(wall, 1), "orchestrator_exit": rc,
    }
    print(f"\nsoak: {args.minutes} min, {args.workers} preview workers at gpu:{args.scale}, faults "
          f"'{args.faults}' + per life one crash mid-prompt and one WebSocket drop, SIGKILL every "
          f"{args.kill_every} s ({kills} kills)")
    print(f"  batches {len(batches)}, characters completed {made}, failed {failed}")
    print(f"  prompts seen {len(record.prompts)} for {len(by_key)} cache keys: jobs lost {len(lost)}, executed twice "
          f"{len(twice)}, runs stuck {stuck}")
    if lost:
        print(f"  lost: {lost[:5]}")
    for key in twice[:8]:
        print(f"  twice: {key[:16]}:")
        for (w, life, pid), d in sorted(((k, d) for k, d in record.details.items() if record.prompts[k][0] == key),
                                        key=lambda kd: kd[1]["start"] or 0):
            print(f"      worker{w} life {life} prompt {pid[:8]} {d['status']} job {d['job']} task run "
                  f"{(d['task_run'] or '')[:8]} {d['start']} -> {d['end']}")
    if twice:
        # A prompt that finished in the instant before its worker was killed: its history (in memory, in ComfyUI
        # too) went with the worker before the client read it, so the job ran again elsewhere.
        def killed_after(key: str) -> bool:
            runs = [k for k in record.details if record.prompts[k] == (key, "success")]
            first = min(runs, key=lambda k: record.details[k]["end"] or 0)
            end = record.details[first]["end"] or 0
            return any(w == first[0] and life == first[1] and 0 <= t - end < 3 for t, w, life in record.kill_times)
        print(f"  of the keys run twice, {sum(killed_after(k) for k in twice)} finished less than 3 s before their "
              "worker was killed")
    print(f"  orchestrator RSS: {figures['rss_first_batch_mib']} MiB after the first batch, {figures['rss_end_mib']}"
          f" MiB at the end, peak {figures['rss_peak_mib']} MiB (with its CPU stage processes "
          f"{figures['tree_rss_peak_mib']} MiB); growth {figures['rss_growth']} (bound {args.rss_bound}, last "
          f"quarter against the first); open fds growth {fd_growth}")
    if args.json:
        args.json.write_text(json.dumps(figures | {"batch_lines": batches, "samples": samples}, indent=1))
    ok = (rc == 0 and not lost and not twice and not stuck and made > 0 and failed == 0
          and growth is not None and growth <= args.rss_bound)
    print("  PASS" if ok else "  FAIL")
    return 0 if ok or not args.strict else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--scale", type=float, default=0.01, help="the preview's gpu latency model times this")
    parser.add_argument("--count", type=int, default=2, help="characters per batch")
    parser.add_argument("--concurrency", type=int, default=2, help="characters at once in a batch")
    parser.add_argument("--variations", type=int, default=8)
    parser.add_argument("--size", type=int, default=512, help="picture width and height")
    parser.add_argument("--type", default="kpop_idol")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-intro", dest="intro", action="store_false", help="leave out the intro clip")
    parser.add_argument("--faults", default="http500=0.02,near_duplicate=0.05",
                        help="recurring faults on every worker (preview-worker --faults grammar)")
    parser.add_argument("--kill-every", type=float, default=90.0, help="SIGKILL a worker this often (0: never)")
    parser.add_argument("--rss-bound", type=float, default=0.25, help="allowed RSS growth after the first batch")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--strict", action="store_true", help="exit 1 unless every check passes")
    parser.add_argument("--orchestrate", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--until", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    # SIGTERM unwinds like Ctrl-C, so the server, the workers and the orchestrator (own sessions) are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    return orchestrate(args) if args.orchestrate else soak(args)


if __name__ == "__main__":
    raise SystemExit(main())
