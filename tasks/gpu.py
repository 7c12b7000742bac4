"""The GPU kind of stage: a workflow template run on the worker pool (``Stage.gpu(template_name)``).

The engine call is ``reelforge.jobs.run_template``; around it this adds only what needs the flow run: the
prompt's owner (flow run and task run ids, for cancellation), the progress callback, the global GPU slot
(``REELFORGE_GLOBAL_LIMITS``), the deadline, and the memory of a retried stage (``StageRuntime``): a prompt
that finished but whose downloads failed is resumed (downloads only), and a worker that failed the stage is
avoided by its retry. Cost comes from the worker's labels and ``REELFORGE_GPU_PRICE_PER_HOUR``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from reelforge.comfy import ComfyError, JobOwner
from reelforge.jobs import OutputFetchFailed, run_template
from reelforge.records import Product, StageOutput
from reelforge.storage import ArtifactKind, JobFacts, cost_for
from reelforge.templates import Template, load_template
from reelforge.training import read_dataset
from tasks.context import current_flow_run_id, current_task_run

if TYPE_CHECKING:
    from tasks.stage import Stage, StageRuntime

__all__ = ["gpu_call", "template_named"]

_STORED_KINDS = frozenset({"image", "video", "audio", "lora", "json", "text"})


@lru_cache(maxsize=256)
def template_named(name: str, folder: str | None = None) -> Template:
    """The template ``name`` of ``folder`` (default workflows/), loaded once per process."""
    return load_template(name, folder=Path(folder) if folder else None)


def _owner(job_id: str, cache_key: str) -> JobOwner:
    """Who the prompt belongs to: its flow run id is what cancellation matches on, its cache key what a
    worker's history counts executions by."""
    task = current_task_run()
    return JobOwner(
        job_id=job_id, flow_run_id=current_flow_run_id(), task_run_id=task[0] if task else None, cache_key=cache_key
    )


def _kind(template: Template, node_id: str, fallback: str) -> ArtifactKind:
    """The manifest's kind of an output node (``lora`` for a LoRA file), else what the worker listed it as."""
    for output in template.outputs:
        if output.node_id == node_id and output.kind in _STORED_KINDS:
            return cast(ArtifactKind, output.kind)
    return cast(ArtifactKind, fallback if fallback in _STORED_KINDS else "file")


async def gpu_call(
    runtime: StageRuntime,
    stage: Stage,
    params: Mapping[str, Any],
    inputs: Mapping[str, Path],
    out_dir: Path,
    *,
    job_id: str,
    cache_key: str,
) -> StageOutput:
    """Run the stage's template and return its downloaded outputs and the job's facts."""
    assert stage.template is not None
    template = template_named(stage.template, stage.folder)
    engine = runtime.engine
    workers = engine.settings.workers
    timeout = min(runtime.timeout_for(stage), workers.job_timeout_s)
    on_progress = runtime.progress.callback(job_id) if runtime.progress else None
    avoid = [runtime.failed_on[cache_key]] if cache_key in runtime.failed_on else []
    # A folder parameter's input is a stored training set (reelforge.training): unpack it for the upload.
    folder_params = {name for name, p in template.parameters.items() if p.type == "folder"}
    folders = {
        name: (await asyncio.to_thread(read_dataset, path, out_dir.parent / f"set-{name}"))[1]
        for name, path in inputs.items()
        if name in folder_params
    }
    files = {name: path for name, path in inputs.items() if name not in folder_params}
    try:
        async with runtime.admission.slot(template.kind):
            run = await run_template(
                engine.pool, template, params, job_id=job_id, dest_dir=out_dir, inputs=files, folders=folders,
                owner=_owner(job_id, cache_key), timeout=timeout, on_progress=on_progress,
                download_retries=workers.download_retries, resume=runtime.resumable.pop(cache_key, None),
                avoid=avoid,
            )
    except OutputFetchFailed as err:
        runtime.resumable[cache_key] = err.result  # the retry downloads again instead of running it again
        raise
    except ComfyError as err:
        if err.worker:
            runtime.failed_on[cache_key] = err.worker
        raise
    result = run.result
    labels = next((sorted(w.labels) for w in engine.pool.status() if w.name == result.worker), [])
    job = JobFacts(
        prompt_id=result.prompt_id,
        worker=result.worker,
        worker_labels=labels,
        gpu_seconds=result.gpu_seconds,
        cost=cost_for(result.gpu_seconds, runtime.limits.price_per_hour(frozenset(labels))),
        queued_s=result.queued_s,
    )
    products = [Product.downloaded(f, _kind(template, f.node_id, f.kind)) for f in run.files]
    return StageOutput(products=products, job=job)
