"""Run one job through the pool and bring its output files home: the unit of work tasks wrap."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from reelforge.comfy.client import ComfyClient
from reelforge.comfy.pool import WorkerPool
from reelforge.comfy.types import Graph, JobOwner, JobResult, Progress
from reelforge.templates.errors import TemplateError
from reelforge.templates.template import Template, validate_on_worker


class JobRecord(BaseModel):
    """What a finished job produced and cost; small enough to pass between tasks."""

    job_id: str
    prompt_id: str
    worker: str
    files: list[Path]
    sha256: list[str] = []  # digest of each file in ``files``, computed while it downloaded
    by_node: dict[str, list[Path]] = {}  # output node id -> its files, in the order the worker listed them
    gpu_seconds: float
    wall_s: float
    cached: bool
    template: str | None = None
    template_version: str | None = None


async def run_template(
    pool: WorkerPool,
    template: Template,
    params: Mapping[str, Any],
    *,
    job_id: str,
    dest_dir: Path,
    inputs: Mapping[str, Path] | None = None,
    owner: JobOwner | None = None,
    timeout: float | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> JobRecord:
    """Bind ``template`` and run it; ``inputs`` maps image/audio parameters to local files.

    Parameters are checked before anything is queued (all problems at once). Input files are uploaded to
    whichever worker the pool picks, under content-hash names, so a retry or failover uploads again only
    where needed.
    """
    files = dict(inputs or {})
    # Bind up front with stand-in references: bad parameters fail here, before any upload or queueing.

    async def prepare(client: ComfyClient, _graph: Graph) -> Graph:
        refs = {name: (await client.upload(path, filename=path.name)).ref for name, path in files.items()}
        return template.bind({**params, **refs})

    graph = template.bind({**params, **{name: path.name for name, path in files.items()}})
    result = await pool.run(
        graph,
        job_id=job_id,
        owner=owner,
        models=template.models,
        timeout=timeout,
        on_progress=on_progress,
        prepare=prepare if files else None,
    )
    record = await _collect(pool, result, job_id, dest_dir)
    return record.model_copy(update={"template": template.name, "template_version": template.version})


async def validate_on_pool(
    pool: WorkerPool, templates: Iterable[Template], params: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, list[str]]:
    """Validate templates against the healthy workers' /object_info and model lists before queueing anything.

    Returns, per template, the workers it validated on. Raises ``TemplateError`` (every problem, from the
    first worker checked) for a template that validates on none of them.
    """
    healthy = [w.name for w in pool.status() if w.healthy]
    passed: dict[str, list[str]] = {}
    for template in templates:
        values = (params or {}).get(template.name)
        outcomes = await asyncio.gather(
            *(validate_on_worker(template, pool.client_for(name), values) for name in healthy),
            return_exceptions=True,
        )
        passed[template.name] = [n for n, o in zip(healthy, outcomes, strict=True) if not isinstance(o, BaseException)]
        if not passed[template.name]:
            errors = [o for o in outcomes if isinstance(o, TemplateError)]
            if errors:
                raise errors[0]
            failures = [o for o in outcomes if isinstance(o, BaseException)]
            if failures:
                raise failures[0]
    return passed


async def _collect(pool: WorkerPool, result: JobResult, job_id: str, dest_dir: Path) -> JobRecord:
    client = pool.client_for(result.worker)
    await asyncio.to_thread(dest_dir.mkdir, parents=True, exist_ok=True)
    files: list[Path] = []
    digests: list[str] = []
    by_node: dict[str, list[Path]] = {}
    for output in result.outputs:
        fetched = await client.download_file(output, dest_dir)
        files.append(fetched.path)
        digests.append(fetched.sha256)
        by_node.setdefault(output.node_id, []).append(fetched.path)
    return JobRecord(
        job_id=job_id,
        prompt_id=result.prompt_id,
        worker=result.worker,
        files=files,
        sha256=digests,
        by_node=by_node,
        gpu_seconds=result.gpu_seconds,
        wall_s=result.wall_s,
        cached=result.fully_cached,
    )
