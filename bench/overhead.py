"""Benchmark: what the client + pool cost per job, and how busy they keep a fleet.

Run: ``.venv/bin/python bench/overhead.py [--jobs 500] [--fleet-jobs 200] [--fleet-workers 4]``

(a) Per-job overhead, sequential, one ``instant`` preview worker, the same trivial graph (EmptyImage 8x8 ->
    SaveImage, a new colour per job so nothing is served from the cache):
    * raw: httpx ``POST /prompt``, then ``GET /history/<id>`` every ``--poll-ms`` (1 ms) until the entry has
      a status: the least a client can do without a WebSocket;
    * pool: ``WorkerPool.run`` over ``ComfyClient`` (routing, slot accounting, owner stamping, completion
      from the WebSocket ``executing{node:null}`` event raced with /history, output parsing).
    The client is notified by its WebSocket instead of polling. Reported: mean and p50 per job, the ratio
    of means (target <= 1.1) and the added p50 latency (target <= 10 ms).
(b) Fleet utilization: ``--fleet-workers`` workers with latency ``fixed:0.2``, ``--fleet-jobs`` jobs given to
    the pool at once; per worker busy time (the worker's own executor stats) / wall time of the batch, and the
    fleet mean (target >= 97 %).
(c) Two orchestrators: ``--shared-processes`` (2) orchestrator processes, each its own ``WorkerPool`` with
    ``admission="shared"``, share the same ``--fleet-workers`` workers and get ``--fleet-jobs`` jobs between
    them at once. Reported: fleet utilization (target >= 97 %), the most prompts a worker ever held that went
    on to run (target <= 1 + queue depth), the most it held counting prompts taken back as a simultaneous
    submit's overshoot (they sat pending for milliseconds and never ran), declines and withdrawals, and the
    same run with ``admission="local"`` for comparison (each process then counts only its own prompts).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from reelforge.comfy.client import ComfyClient
from reelforge.comfy.pool import WorkerPool
from reelforge.comfy.types import Graph
from reelforge.preview.server import PreviewWorker


def trivial_graph(i: int, prefix: str) -> Graph:
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": (i * 2654435761) % 0xFFFFFF},
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
    }


async def raw_jobs(http: httpx.AsyncClient, first: int, jobs: int, poll_s: float) -> list[float]:
    """The minimal client: POST /prompt, then poll /history/<id> until the entry has a status."""
    times: list[float] = []
    for i in range(first, first + jobs):
        t0 = time.perf_counter()
        answer = await http.post("/prompt", json={"prompt": trivial_graph(i, "raw")})
        answer.raise_for_status()
        prompt_id = answer.json()["prompt_id"]
        while True:
            entry = (await http.get(f"/history/{prompt_id}")).json().get(prompt_id)
            if entry and entry.get("status"):
                break
            await asyncio.sleep(poll_s)
        assert entry["status"]["status_str"] == "success", entry["status"]
        times.append(time.perf_counter() - t0)
    return times


async def pool_jobs(pool: WorkerPool, first: int, jobs: int) -> list[float]:
    times: list[float] = []
    for i in range(first, first + jobs):
        t0 = time.perf_counter()
        result = await pool.run(trivial_graph(i, "pool"), job_id=f"bench-{i}")
        assert result.outputs, result
        times.append(time.perf_counter() - t0)
    return times


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:8.2f} ms"


async def bench_overhead(root: Path, jobs: int, poll_ms: float, warmup: int, rounds: int) -> bool:
    worker = PreviewWorker(root / "overhead", latency="instant")
    url = await worker.start()
    raw: list[float] = []
    pool: list[float] = []
    try:
        async with (
            httpx.AsyncClient(base_url=url, timeout=30.0) as raw_http,
            httpx.AsyncClient(timeout=30.0) as http,
        ):
            client = ComfyClient(url, http=http, name="bench-0")
            try:
                async with WorkerPool([client], health_interval=30.0) as the_pool:
                    # Warm-up: imports, first files, connections, the client's WebSocket.
                    await raw_jobs(raw_http, 0, warmup, poll_ms / 1000)
                    await pool_jobs(the_pool, 1_000_000, warmup)
                    # Interleaved rounds, so that drifting machine load hits both loops alike.
                    per_round = max(1, jobs // rounds)
                    for r in range(rounds):
                        first = 1 + r * per_round
                        raw += await raw_jobs(raw_http, first, per_round, poll_ms / 1000)
                        pool += await pool_jobs(the_pool, 2_000_000 + first, per_round)
            finally:
                await client.aclose()
    finally:
        await worker.stop()
    jobs = len(raw)
    raw_mean, pool_mean = statistics.fmean(raw), statistics.fmean(pool)
    raw_p50, pool_p50 = statistics.median(raw), statistics.median(pool)
    ratio = pool_mean / raw_mean
    added_p50 = pool_p50 - raw_p50
    print(
        f"(a) per-job overhead: {jobs} sequential jobs each (in {rounds} alternating rounds), "
        f"1 'instant' worker, raw poll {poll_ms:g} ms"
    )
    print(f"    {'':14}{'mean':>12}{'p50':>12}{'p95':>12}")
    for label, data in (("raw httpx", raw), ("client+pool", pool)):
        p95 = statistics.quantiles(data, n=20)[18]
        mean, p50 = _ms(statistics.fmean(data)), _ms(statistics.median(data))
        print(f"    {label:14}{mean:>12}{p50:>12}{_ms(p95):>12}")
    ok_ratio, ok_added = ratio <= 1.1, added_p50 <= 0.010
    print(f"    ratio of means (pool/raw): {ratio:.3f}   target <= 1.10  {'OK' if ok_ratio else 'MISSED'}")
    verdict = "OK" if ok_added else "MISSED"
    print(f"    p50 added latency: {added_p50 * 1000:+.2f} ms   target <= 10 ms  {verdict}")
    return ok_ratio and ok_added


async def bench_fleet(root: Path, workers_n: int, jobs: int, latency: str) -> bool:
    workers = [PreviewWorker(root / f"fleet-{i}", latency=latency) for i in range(workers_n)]
    urls = [await w.start() for w in workers]
    try:
        async with httpx.AsyncClient(timeout=30.0) as http:
            clients = [ComfyClient(u, http=http, name=f"fleet-{i}") for i, u in enumerate(urls)]
            try:
                async with WorkerPool(clients, queue_depth=1, health_interval=30.0) as pool:
                    await pool.run(trivial_graph(0, "warm"), job_id="warm")  # one warm-up job
                    t0 = time.monotonic()  # the workers record busy intervals on this clock
                    results = await asyncio.gather(
                        *(pool.run(trivial_graph(i + 1, "fleet"), job_id=f"fleet-{i}") for i in range(jobs))
                    )
                    t1 = time.monotonic()
                    wall = t1 - t0
                    busy = [w.stats.busy_between(t0, t1) for w in workers]
            finally:
                for c in clients:
                    await c.aclose()
    finally:
        for w in workers:
            await w.stop()
    per_worker: dict[str, int] = {}
    for r in results:
        per_worker[r.worker] = per_worker.get(r.worker, 0) + 1
    utils = [b / wall for b in busy]
    mean = statistics.fmean(utils)
    print(f"(b) fleet utilization: {workers_n} workers '{latency}', {jobs} jobs at once, queue_depth=1")
    print(f"    wall {wall:.3f} s (ideal {jobs * _fixed(latency) / workers_n:.3f} s)")
    for i, (b, u) in enumerate(zip(busy, utils, strict=True)):
        print(f"    worker {i}: busy {b:7.3f} s  utilization {u * 100:6.2f} %")
    print(f"    jobs per worker: {sorted(per_worker.values())}")
    ok = mean >= 0.97
    print(f"    fleet mean utilization: {mean * 100:.2f} %   target >= 97 %  {'OK' if ok else 'MISSED'}")
    return ok


async def orchestrator(urls: list[str], jobs: int, offset: int, admission: str) -> None:
    """One orchestrator process of (c): its own pool over the shared workers; prints its counters as JSON."""
    async with httpx.AsyncClient(timeout=30.0) as http:
        clients = [ComfyClient(u, http=http, name=f"w{i}") for i, u in enumerate(urls)]
        async with WorkerPool(clients, queue_depth=1, health_interval=30.0, admission=admission) as pool:  # type: ignore[arg-type]
            print("ready", flush=True)
            sys.stdin.readline()  # the parent starts every orchestrator at once
            await asyncio.gather(
                *(pool.run(trivial_graph(offset + i, "shared"), job_id=f"o{offset}-{i}") for i in range(jobs))
            )
            print(json.dumps({"declined": pool.declined, "withdrawn": pool.withdrawn}), flush=True)
        for c in clients:
            await c.aclose()


async def bench_shared(root: Path, workers_n: int, jobs: int, latency: str, processes: int, admission: str) -> bool:
    workers = [PreviewWorker(root / f"{admission}-{i}", latency=latency) for i in range(workers_n)]
    urls = [await w.start() for w in workers]
    per = jobs // processes
    try:
        children = [
            await asyncio.create_subprocess_exec(
                sys.executable, __file__, "--orchestrator", json.dumps(urls), str(per), str(n * per), admission,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            )
            for n in range(processes)
        ]
        for child in children:  # each pool started (health checks done) before the clock starts
            assert child.stdout is not None
            assert (await child.stdout.readline()).strip() == b"ready"
        t0 = time.monotonic()
        for child in children:
            assert child.stdin is not None
            child.stdin.write(b"go\n")
            await child.stdin.drain()
        counters = []
        for child in children:
            out, _ = await child.communicate()
            counters.append(json.loads(out.decode().strip().splitlines()[-1]))
            assert child.returncode == 0
        ends = [e for w in workers for _, _, e in w.stats.intervals if e >= t0]
        t1 = max(ends)  # the last prompt finished (the children then exit, which is not the fleet's time)
        busy = [w.stats.busy_between(t0, t1) for w in workers]
        kept = [w.stats.max_held(kept_only=True) for w in workers]
        held = [w.stats.max_held() for w in workers]
        executed = sum(w.stats.prompts_executed for w in workers)
        sat = sorted((e - q) * 1000 for w in workers for q, e, gone in w.stats.held.values() if gone and e)
    finally:
        for w in workers:
            await w.stop()
    wall = t1 - t0
    mean = statistics.fmean(b / wall for b in busy)
    declined = sum(c["declined"] for c in counters)
    withdrawn = sum(c["withdrawn"] for c in counters)
    print(f"(c) {processes} orchestrator processes, admission={admission!r}: {workers_n} workers '{latency}', "
          f"{per * processes} jobs, queue_depth=1")
    print(f"    wall {wall:.3f} s (ideal {per * processes * _fixed(latency) / workers_n:.3f} s), "
          f"prompts executed {executed}")
    print(f"    fleet mean utilization: {mean * 100:.2f} %")
    print(f"    most prompts a worker held that went on to run: {kept}   (1 + queue depth = 2)")
    print(f"    most held counting withdrawn overshoots:         {held}")
    print(f"    submits declined after reading the queue: {declined}; prompts withdrawn: {withdrawn}")
    if sat:
        print(f"    a withdrawn prompt sat pending {statistics.median(sat):.1f} ms (p50), {sat[-1]:.1f} ms (max); "
              "none ran")
    ok = mean >= 0.97 and max(kept) <= 2 and executed == per * processes
    if admission == "shared":
        print(f"    target: >= 97 % busy and <= 2 held per worker  {'OK' if ok else 'MISSED'}")
    return ok


def _fixed(latency: str) -> float:
    return float(latency.split(":", 1)[1]) if latency.startswith("fixed:") else 0.0


async def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=500, help="sequential jobs per loop in (a)")
    parser.add_argument("--poll-ms", type=float, default=1.0, help="history poll interval of the raw loop")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=10, help="(a) alternates raw/pool blocks this often")
    parser.add_argument("--fleet-workers", type=int, default=4)
    parser.add_argument("--fleet-jobs", type=int, default=200)
    parser.add_argument("--fleet-latency", default="fixed:0.2")
    parser.add_argument("--shared-processes", type=int, default=2, help="orchestrator processes in (c)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--orchestrator", nargs=4, metavar=("URLS", "JOBS", "OFFSET", "ADMISSION"),
                        help=argparse.SUPPRESS)  # a child of (c)
    args = parser.parse_args()
    if args.orchestrator:
        urls, jobs, offset, admission = args.orchestrator
        await orchestrator(json.loads(urls), int(jobs), int(offset), admission)
        return 0
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="reelforge-bench-") as tmp:
        root = Path(tmp)
        ok_a = await bench_overhead(root, args.jobs, args.poll_ms, args.warmup, args.rounds)
        print()
        ok_b = await bench_fleet(root, args.fleet_workers, args.fleet_jobs, args.fleet_latency)
        print()
        ok_c = await bench_shared(root, args.fleet_workers, args.fleet_jobs, args.fleet_latency,
                                  args.shared_processes, "shared")
        print()
        await bench_shared(root, args.fleet_workers, args.fleet_jobs, args.fleet_latency, args.shared_processes,
                           "local")
    return 0 if (ok_a and ok_b and ok_c) or not args.strict else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
