"""Run one job through the pool and bring its output files home: the unit of work tasks wrap."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from reelforge.comfy.pool import WorkerPool
from reelforge.comfy.types import Graph, JobOwner, Progress


class JobRecord(BaseModel):
    """What a finished job produced and cost; small enough to pass between tasks."""

    job_id: str
    prompt_id: str
    worker: str
    files: list[Path]
    gpu_seconds: float
    wall_s: float
    cached: bool


async def run_and_collect(
    pool: WorkerPool,
    graph: Graph,
    *,
    job_id: str,
    dest_dir: Path,
    owner: JobOwner | None = None,
    timeout: float | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> JobRecord:
    """Run ``graph`` on the best worker and download every output file into ``dest_dir``."""
    result = await pool.run(graph, job_id=job_id, owner=owner, timeout=timeout, on_progress=on_progress)
    client = pool.client_for(result.worker)
    await asyncio.to_thread(dest_dir.mkdir, parents=True, exist_ok=True)
    files = [await client.download(output, dest_dir) for output in result.outputs]
    return JobRecord(
        job_id=job_id,
        prompt_id=result.prompt_id,
        worker=result.worker,
        files=files,
        gpu_seconds=result.gpu_seconds,
        wall_s=result.wall_s,
        cached=result.fully_cached,
    )
