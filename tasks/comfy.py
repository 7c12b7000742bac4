"""Prefect tasks around GPU jobs: retries for transient failures only, the engine does the work."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NONE
from prefect.context import TaskRunContext
from prefect.tasks import exponential_backoff

from reelforge.comfy.collect import JobRecord, run_template
from reelforge.comfy.errors import TransientComfyError
from reelforge.comfy.pool import WorkerPool
from reelforge.comfy.types import JobOwner
from reelforge.templates.template import load_template


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry only failures a retry can fix (worker down, timeouts, 5xx, lost prompt)."""
    try:
        state.result()
    except TransientComfyError:
        return True
    except BaseException:
        return False
    return False


def _owner(job_id: str) -> JobOwner:
    ctx = TaskRunContext.get()
    if ctx is None:
        return JobOwner(job_id=job_id)
    return JobOwner(job_id=job_id, flow_run_id=str(ctx.task_run.flow_run_id), task_run_id=str(ctx.task_run.id))


@task(
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_transient,
    cache_policy=NONE,
    task_run_name="{template_name}-{job_id}",
)
async def run_template_job(
    pool: WorkerPool,
    template_name: str,
    params: dict[str, Any],
    job_id: str,
    dest_dir: Path,
    inputs: dict[str, Path] | None = None,
) -> JobRecord:
    """Bind a workflow template, run it on the pool (uploading ``inputs``), download its outputs.

    The pool holds live connections, so this task is not cached yet (content caching arrives with storage).
    """
    template = load_template(template_name)
    return await run_template(
        pool, template, params, job_id=job_id, dest_dir=dest_dir, inputs=inputs, owner=_owner(job_id)
    )
