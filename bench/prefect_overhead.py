"""Per-GPU-job cost of the Prefect layer against the engine alone, on an instant preview worker.

Sequential jobs (one at a time, so each figure is latency added to one job), unique seeds so nothing is
served from any cache unless stated:

* **engine**: ``run_template`` (bind, submit, wait on the WebSocket, download the output): the baseline.
* **engine + store**: the same plus sha256 and ``put_file`` into a local store (what the task adds for storage).
* **task**: ``StageRunner.run`` of the template's GPU stage in a flow: task run states, cache key, lock,
  persisted result, progress tracker callbacks, the ``reelforge.job.completed`` event; plus the flow's summary
  artifacts (gallery + table) once at the end, divided over the jobs.
* **task + slot**: the same with ``REELFORGE_GLOBAL_LIMITS`` on: a global concurrency slot per job.
* **task + shared admission**: the task with ``REELFORGE_ADMISSION=shared`` (the worker's queue read before and
  after each submit, the way several orchestrator processes share workers without Prefect slots); its added
  cost is printed against **task** (target <= 50 ms per job).
* **cache hit**: the task jobs again: what serving a finished job from Prefect's cache costs.

And the same for a CPU stage (the pHash of a stored 256x256 PNG), against calling its engine function:

* **cpu engine**: ``phash_file`` on the stored file, in this process (the baseline);
* **cpu stage (thread)** / **cpu stage (process)**: ``StageRunner.run`` of the stage as a thread / child-process
  stage: the same task machinery plus fetching the input from the store and running the call off the loop.

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

from reelforge.engine import Engine, open_engine  # noqa: E402
from reelforge.hashing import sha256_file  # noqa: E402
from reelforge.jobs import run_template  # noqa: E402
from reelforge.media.phash import phash_file, phash_stage  # noqa: E402
from reelforge.settings import LimitSettings, LLMSettings, Settings, StoreSettings, WorkerSettings  # noqa: E402
from reelforge.storage import ArtifactRef  # noqa: E402
from reelforge.templates import load_template  # noqa: E402
from tasks.artifacts import publish_summary  # noqa: E402
from tasks.progress import FlowProgress  # noqa: E402
from tasks.stage import Stage, StageRunner  # noqa: E402

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


def settings_for(store_dir: str, *, global_limits: bool = False, admission: str = "auto") -> Settings:
    return Settings(
        workers=WorkerSettings(preview_workers=1, preview_latency="instant", admission=admission),  # type: ignore[arg-type]
        store=StoreSettings(store=store_dir),
        limits=LimitSettings(global_limits=global_limits),
        llm=LLMSettings(),
    )


@flow(name="bench-prefect-overhead")
async def measure(jobs: int, warmup: int, store_dir: str) -> dict[str, list[float]]:
    template = load_template(TEMPLATE)
    stage = Stage.gpu(TEMPLATE)
    out: dict[str, list[float]] = {}
    async with open_engine(settings_for(store_dir)) as engine:
        store = engine.store
        work = Path(tempfile.mkdtemp(prefix="reelforge-overhead-"))

        async def engine_only(i: int, salt: str = "engine") -> Path:
            run = await run_template(
                engine.pool, template, params(i, salt), job_id=f"{salt}-{i}", dest_dir=work / salt / str(i)
            )
            return run.files[0].path

        async def engine_store(i: int) -> None:
            path = await engine_only(i, "store")
            sha, _ = await asyncio.to_thread(sha256_file, path)
            await asyncio.to_thread(store.put_file, path, f"bench/engine/{sha[:16]}.png")

        async def task_variant(name: str, with_engine: Engine, salt: str) -> list[float]:
            progress = FlowProgress(description=name)
            await progress.start()
            runner = await StageRunner.create(with_engine, progress=progress)
            progress.plan(jobs + warmup)
            await timed(warmup, lambda i: runner.run(stage, params(100000 + i, salt), place="bench/w/", job_id="w"))
            times = await timed(
                jobs, lambda i: runner.run(stage, params(i, salt), place=f"bench/{salt}/", job_id=f"{salt}-{i}")
            )
            started = time.perf_counter()
            await publish_summary(runner.records, store, key=f"bench-{salt}", title=name)
            await progress.close()
            summary_ms = (time.perf_counter() - started) * 1000.0
            return [t + summary_ms / jobs for t in times]

        async def cpu_variant(name: str, cpu_stage: Stage, images: list[ArtifactRef]) -> list[float]:
            runner = await StageRunner.create(engine)
            def call(i: int, params: dict[str, object], image: ArtifactRef) -> Awaitable[object]:
                return runner.run(cpu_stage, params, inputs={"image": image}, place="bench/h/", job_id=f"{name}{i}")

            await timed(warmup, lambda i: call(i, {"warmup": i}, images[0]))  # starts the child processes
            return await timed(jobs, lambda i: call(i, {}, images[i]))

        await timed(warmup, lambda i: engine_only(100000 + i, "warm"))
        out["engine"] = await timed(jobs, engine_only)
        out["engine + store"] = await timed(jobs, engine_store)
        async with open_engine(settings_for(store_dir, global_limits=True)) as limited:
            out["task + slot"] = await task_variant("task + slot", limited, "slot")
        out["task"] = await task_variant("task", engine, "task")
        async with open_engine(settings_for(store_dir, admission="shared")) as shared:
            assert shared.pool.admission == "shared"
            out["task + shared admission"] = await task_variant("task + shared admission", shared, "shared")
        out["cache hit"] = await task_variant("cache hit", engine, "task")

        # CPU stages: one distinct stored image per call, so nothing is cached.
        runner = await StageRunner.create(engine)  # the task images again (cached): their stored files
        images = [
            (await runner.run(stage, params(i, "task"), place="bench/task/", job_id=f"t{i}")).refs[0]
            for i in range(jobs)
        ]
        paths = [Path(store.path_for(ref.key)) for ref in images]  # type: ignore[attr-defined]

        async def direct(i: int) -> None:
            phash_file(paths[i])

        await timed(warmup, direct)  # imagehash imports scipy's DCT on its first call
        out["cpu engine"] = await timed(jobs, direct)
        out["cpu stage (thread)"] = await cpu_variant(
            "thread", Stage.cpu("phash-bench-thread", version="1", fn=phash_stage), images
        )
        out["cpu stage (process)"] = await cpu_variant(
            "process", Stage.cpu("phash-bench-process", version="1", fn=phash_stage, process=True), images
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="reelforge-bench-overhead-") as store_dir:
        results = asyncio.run(measure(args.jobs, args.warmup, store_dir))
    print()
    print(f"{args.jobs} sequential calls per variant, one instant preview worker, local store")
    print(f"{'variant':<26}{'mean ms':>10}{'p50 ms':>10}{'p95 ms':>10}{'added ms/call':>15}")
    for name, times in results.items():
        base = statistics.mean(results["cpu engine" if name.startswith("cpu") else "engine"])
        ordered = sorted(times)
        p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
        mean = statistics.mean(times)
        added = "" if name in ("engine", "cpu engine") else f"{mean - base:+.1f}"
        print(f"{name:<26}{mean:>10.1f}{statistics.median(times):>10.1f}{p95:>10.1f}{added:>15}")
    shared = statistics.mean(results["task + shared admission"]) - statistics.mean(results["task"])
    verdict = "OK" if shared <= 50 else "MISSED"
    print(f"\nshared admission adds {shared:+.1f} ms per job against the task alone (target <= 50 ms)  {verdict}")
    slot = statistics.mean(results["task + slot"]) - statistics.mean(results["task"])
    print(f"a Prefect global concurrency slot adds {slot:+.1f} ms per job against the task alone")
    return 0


if __name__ == "__main__":
    sys.exit(main())
