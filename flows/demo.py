"""Demo flow: start the embedded fleet (or use real workers) and run the demo image job several times."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from prefect import flow, get_run_logger
from rich.console import Console
from rich.table import Table

from reelforge.comfy.collect import JobRecord
from reelforge.comfy.fleet import open_fleet
from reelforge.demo import demo_graph
from reelforge.settings import WorkerSettings
from tasks.comfy import run_gpu_job


@flow(name="reelforge-demo", log_prints=True)
async def demo_flow(jobs: int = 6, out_dir: str = "demo-output") -> list[JobRecord]:
    """Run ``jobs`` demo image jobs across the pool and write their outputs under ``out_dir``."""
    settings = WorkerSettings()
    dest = await asyncio.to_thread(Path(out_dir).resolve)
    async with open_fleet(settings) as pool:
        records = await asyncio.gather(
            *(run_gpu_job(pool, demo_graph(i), f"demo-{i:03d}", dest) for i in range(jobs))
        )
    get_run_logger().info("%d jobs done, outputs in %s", len(records), dest)
    return list(records)


def print_summary(records: list[JobRecord], console: Console) -> None:
    table = Table(title="reelforge demo: jobs", expand=False)
    for column in ("job", "worker", "GPU s", "wall s", "cached", "files"):
        table.add_column(column)
    for r in records:
        files = ", ".join(f.name for f in r.files)
        table.add_row(r.job_id, r.worker, f"{r.gpu_seconds:.3f}", f"{r.wall_s:.3f}", str(r.cached), files)
    console.print(table)
    total = sum(r.gpu_seconds for r in records)
    console.print(f"{len(records)} jobs, {total:.2f} GPU-seconds in all.")


def main() -> int:
    records = asyncio.run(demo_flow())
    print_summary(records, Console())
    dest = records[0].files[0].parent if records and records[0].files else Path("demo-output")
    print(f"Outputs are in {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
