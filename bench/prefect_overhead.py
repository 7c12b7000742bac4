"""Per-GPU-job cost of the Prefect layer against the engine alone, on an instant preview worker.

Sequential jobs (one at a time, so each figure is latency added to one job), unique seeds so nothing is
served from any cache unless stated:

* **engine**: ``run_template`` (bind, submit, wait on the WebSocket, download the output): the baseline.
* **engine + store**: the same plus sha256 and ``put_file`` into a local store (what the task adds for storage).
* **task**: ``GpuJobs.run`` -> the ``gpu_job`` task in a flow: task run states, cache key, lock, persisted
  result, progress tracker callbacks, the ``reelforge.job.completed`` event; plus the flow's summary artifacts
  (gallery + table) once at the end, divided over the jobs.
* **task + slot**: the same with ``REELFORGE_GLOBAL_LIMITS`` on: a global concurrency slot per job.
* **cache hit**: the task jobs again: what serving a finished job from Prefect's cache costs.

    .venv/bin/python bench/prefect_overhead.py            # 30 jobs per variant (~1 min with server start-up)
    .venv/bin/python bench/prefect_overhead.py --jobs 60
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from prefect import flow  # noqa: E402

from reelforge.comfy.collect import run_template  # noqa: E402
from reelforge.comfy.fleet import open_fleet  # noqa: E402
from reelforge.comfy.pool import WorkerPool  # noqa: E402
from reelforge.hashing import sha256_file  # noqa: E402
from reelforge.settings import LimitSettings, StoreSettings, WorkerSettings  # noqa: E402
from reelforge.storage import open_store  # noqa: E402
from reelforge.templates.template import load_template  # noqa: E402
from tasks.artifacts import publish_summary  # noqa: E402
from tasks.gpu import GpuJobs, JobRuntime  # noqa: E402
from tasks.progress import FlowProgress  # noqa: E402

TEMPLATE = "character_base_realistic"


def params(i: int, salt: str) -> dict[str, object]:
    return {"prompt": f"overhead {salt} {i}", "seed": i, "width": 256, "height": 256}


async def timed(jobs: int, one: Callable[[int], Awaitable[object]]) -> list[float]:
    times = []
    for i in range(jobs):
        started = time.perf_counter()
        await one(i)
        times.append((time.perf_counter() - started) * 1000.0)
    return times


@flow(name="bench-prefect-overhead")
async def measure(jobs: int, warmup: int, store_dir: str) -> dict[str, list[float]]:
    settings = StoreSettings(store=store_dir)
    store = open_store(settings)
    template = load_template(TEMPLATE)
    out: dict[str, list[float]] = {}
    async with open_fleet(WorkerSettings(preview_workers=1, preview_latency="instant")) as pool:
        work = Path(tempfile.mkdtemp(prefix="reelforge-overhead-"))

        async def engine(i: int, salt: str = "engine") -> Path:
            record = await run_template(
                pool, template, params(i, salt), job_id=f"{salt}-{i}", dest_dir=work / salt / str(i)
            )
            return record.files[0]

        async def engine_store(i: int) -> None:
            path = await engine(i, "store")
            sha, _ = await asyncio.to_thread(sha256_file, path)
            await asyncio.to_thread(store.put_file, path, f"bench/engine/{sha[:16]}.png")

        async def task_variant(name: str, pool: WorkerPool, global_limits: bool, salt: str) -> list[float]:
            progress = FlowProgress(description=name)
            await progress.start()
            runtime = JobRuntime(pool, store, LimitSettings(global_limits=global_limits), progress=progress)
            runner = await GpuJobs.create(runtime, settings)
            progress.plan(jobs + warmup)
            await timed(warmup, lambda i: runner.run(TEMPLATE, params(100000 + i, salt), prefix="bench/w", job_id="w"))
            times = await timed(
                jobs, lambda i: runner.run(TEMPLATE, params(i, salt), prefix=f"bench/{salt}", job_id=f"{salt}-{i}")
            )
            started = time.perf_counter()
            await publish_summary(runner.results, store, key=f"bench-{salt}", title=name)
            await progress.close()
            summary_ms = (time.perf_counter() - started) * 1000.0
            return [t + summary_ms / jobs for t in times]

        await timed(warmup, lambda i: engine(100000 + i, "warm"))
        out["engine"] = await timed(jobs, engine)
        out["engine + store"] = await timed(jobs, engine_store)
        out["task + slot"] = await task_variant("task + slot", pool, True, "slot")
        out["task"] = await task_variant("task", pool, False, "task")
        out["cache hit"] = await task_variant("cache hit", pool, False, "task")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="reelforge-bench-overhead-") as store_dir:
        results = asyncio.run(measure(args.jobs, args.warmup, store_dir))
    base = statistics.mean(results["engine"])
    print()
    print(f"{args.jobs} sequential jobs per variant, one instant preview worker, local store")
    print(f"{'variant':<16}{'mean ms':>10}{'p50 ms':>10}{'p95 ms':>10}{'added ms/job':>14}")
    for name, times in results.items():
        ordered = sorted(times)
        p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
        mean = statistics.mean(times)
        added = "" if name == "engine" else f"{mean - base:+.1f}"
        print(f"{name:<16}{mean:>10.1f}{statistics.median(times):>10.1f}{p95:>10.1f}{added:>14}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
