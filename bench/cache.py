"""Content caching of GPU jobs: a flow of 10 GPU jobs run twice, the second time in a new process.

Prints the GPU jobs executed on the second run (target 0) and the wall-time ratio second/first (flow wall
time, measured inside each process, so the ephemeral server's start-up is not counted).

    .venv/bin/python bench/cache.py                       # 10 jobs, 2 preview workers at fixed:0.5 s per job
    .venv/bin/python bench/cache.py --jobs 20 --latency fixed:1.0 --same-process
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from prefect import flow  # noqa: E402

from reelforge.engine import open_engine  # noqa: E402
from reelforge.settings import LimitSettings, LLMSettings, Settings, StoreSettings, WorkerSettings  # noqa: E402
from tasks.progress import FlowProgress  # noqa: E402
from tasks.stage import Stage, StageRunner  # noqa: E402


@flow(name="bench-cache")
async def ten_jobs(store_dir: str, jobs: int, workers: int, latency: str) -> dict[str, float]:
    settings = Settings(
        workers=WorkerSettings(preview_workers=workers, preview_latency=latency),
        store=StoreSettings(store=store_dir),
        limits=LimitSettings(),
        llm=LLMSettings(),
    )
    progress = FlowProgress(description="bench-cache")
    await progress.start()
    started = time.perf_counter()
    stage = Stage.gpu("character_base_realistic")
    async with open_engine(settings) as engine:
        runner = await StageRunner.create(engine, progress=progress)
        progress.plan(jobs)
        await asyncio.gather(
            *(
                runner.run(
                    stage,
                    {"prompt": f"bench portrait {i}", "seed": i, "width": 256, "height": 256},
                    place="bench/cache/",
                    job_id=f"bench-{i:02d}",
                )
                for i in range(jobs)
            )
        )
    await progress.close()
    return {"wall_s": time.perf_counter() - started, "executed": runner.executed, "cached": runner.cached}


def run_phase(store_dir: str, jobs: int, workers: int, latency: str) -> dict[str, float]:
    return asyncio.run(ten_jobs(store_dir, jobs, workers, latency))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--latency", default="fixed:0.5", help="preview worker latency profile")
    parser.add_argument("--same-process", action="store_true", help="run the second flow in this process")
    parser.add_argument("--phase-json", help=argparse.SUPPRESS)  # internal: run one phase, print JSON
    args = parser.parse_args()

    if args.phase_json:
        print("PHASE " + json.dumps(run_phase(args.phase_json, args.jobs, args.workers, args.latency)))
        return 0

    with tempfile.TemporaryDirectory(prefix="reelforge-bench-cache-") as store_dir:
        first = run_phase(store_dir, args.jobs, args.workers, args.latency)
        if args.same_process:
            second = run_phase(store_dir, args.jobs, args.workers, args.latency)
        else:
            proc = subprocess.run(
                [sys.executable, __file__, "--jobs", str(args.jobs), "--workers", str(args.workers),
                 "--latency", args.latency, "--phase-json", store_dir],
                capture_output=True, text=True, check=True, cwd=ROOT,
            )
            line = next(x for x in proc.stdout.splitlines() if x.startswith("PHASE "))
            second = json.loads(line.removeprefix("PHASE "))
    where = "same process" if args.same_process else "a new process"
    print()
    print(f"GPU jobs: {args.jobs} on {args.workers} preview workers ({args.latency}); second run in {where}")
    print(f"first run:  {first['executed']:.0f} executed, {first['cached']:.0f} cached, {first['wall_s']:.2f} s")
    print(f"second run: {second['executed']:.0f} executed, {second['cached']:.0f} cached, {second['wall_s']:.2f} s")
    print(f"GPU jobs executed on the second run: {second['executed']:.0f} (target 0)")
    print(f"wall-time ratio second/first: {second['wall_s'] / first['wall_s']:.3f}")
    return 0 if second["executed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
