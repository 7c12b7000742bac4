"""Run one template on the worker pool and bring its outputs home: the engine call of every GPU stage.

* ``run_template`` binds the parameters (every problem at once, before anything is queued), uploads input files
  to whichever worker the pool picks (content-hash names, so a failover uploads again only where needed), runs
  the prompt and downloads every output.
* **Downloads have their own retries.** A completed prompt's outputs stay on its worker, so a failed or slow
  ``/view`` is retried as a download (``download_retries`` times, backoff 0.5 s doubling), never by running the
  prompt again. When the retries run out, the worker is reported to the pool (it cools down) and
  ``OutputFetchFailed`` (transient) carries the finished ``JobResult``: a retry passes it back as ``resume`` and
  only the downloads are tried again, on that worker, once it is healthy. A job that ran elsewhere because of a
  failure avoids the worker that failed it (``avoid``).
* ``validate_on_pool`` checks templates against every healthy worker's ``/object_info`` and model lists before
  any GPU time is spent; with no healthy worker it raises ``NoWorkerAvailable`` naming each worker and why.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict

from reelforge.comfy.client import ComfyClient
from reelforge.comfy.datasets import upload_captioned_folder
from reelforge.comfy.errors import (
    NoWorkerAvailable,
    OutputError,
    TransientComfyError,
    WorkerServerError,
    WorkerTimeout,
    WorkerUnavailable,
)
from reelforge.comfy.pool import WorkerPool
from reelforge.comfy.types import DownloadedFile, Graph, JobOwner, JobResult, OutputFile, Progress, SavedModel
from reelforge.templates.errors import TemplateError
from reelforge.templates.template import Template, validate_on_worker

__all__ = [
    "KIND_LABELS",
    "OutputFetchFailed",
    "TemplateRun",
    "fetch_outputs",
    "find_saved",
    "label_for_kind",
    "run_template",
    "validate_on_pool",
]

log = logging.getLogger(__name__)

# Download failures worth another try: the prompt finished, its files are on the worker.
T = TypeVar("T")

_RETRY_DOWNLOAD: tuple[type[TransientComfyError], ...] = (WorkerUnavailable, WorkerTimeout, WorkerServerError)


# Template kind -> the worker label that serves it (workers labelled so, or unlabelled, take the job).
KIND_LABELS: dict[str, str] = {
    "image": "image", "upscale": "image", "video": "video", "audio": "audio", "lora": "train",
}


def label_for_kind(kind: str) -> str:
    return KIND_LABELS.get(kind, kind)


class TemplateRun(BaseModel):
    """A finished job: the worker's result (prompt id, worker, timings) and one record per downloaded output."""

    model_config = ConfigDict(frozen=True)

    template: str
    template_version: str
    result: JobResult
    files: list[DownloadedFile]


class OutputFetchFailed(TransientComfyError):
    """The prompt completed but its outputs could not be downloaded; ``result`` says where they wait."""

    def __init__(self, message: str, *, result: JobResult, **kw: Any) -> None:
        self.result = result
        super().__init__(message, worker=result.worker, prompt_id=result.prompt_id, **kw)


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
    download_retries: int = 3,
    resume: JobResult | None = None,
    avoid: Collection[str] = (),
    folders: Mapping[str, Sequence[tuple[Path, str]]] | None = None,
) -> TemplateRun:
    """Bind ``template`` with ``params`` and run it; ``inputs`` maps image/audio parameters to local files and
    ``folders`` maps folder parameters to ``(image, caption)`` pairs (a training set, uploaded as one folder).

    ``resume``: a result whose downloads failed before; when its worker is healthy, only the downloads are
    tried again (the prompt is not run twice). ``avoid``: workers to use only if no other eligible one is
    healthy.
    """
    files = dict(inputs or {})
    sets = dict(folders or {})
    # Bind up front with stand-in references: bad parameters fail here, before any upload or queueing.
    stand_ins = {**{name: path.name for name, path in files.items()}, **{name: "rf-dataset" for name in sets}}
    graph = template.bind({**params, **stand_ins})
    if resume is not None and _healthy(pool, resume.worker):
        log.info("job %s: prompt %s already finished on %s; downloading again", job_id, resume.prompt_id, resume.worker)
        fetched = await fetch_outputs(pool, resume, dest_dir, retries=download_retries)
        return TemplateRun(template=template.name, template_version=template.version, result=resume, files=fetched)
    if resume is not None:
        avoid = {*avoid, resume.worker}

    async def prepare(client: ComfyClient, _graph: Graph) -> Graph:
        refs = {name: (await client.upload(path, filename=path.name)).ref for name, path in files.items()}
        refs |= {name: await upload_captioned_folder(client, pairs) for name, pairs in sets.items()}
        return template.bind({**params, **refs})

    result = await pool.run(
        graph,
        job_id=job_id,
        owner=owner,
        models=template.models,
        timeout=timeout,
        on_progress=on_progress,
        prepare=prepare if files or sets else None,
        avoid=avoid,
        label=label_for_kind(template.kind),
    )
    fetched = await fetch_outputs(pool, result, dest_dir, retries=download_retries)
    return TemplateRun(template=template.name, template_version=template.version, result=result, files=fetched)


def _healthy(pool: WorkerPool, worker: str) -> bool:
    return any(w.healthy and worker in (w.name, w.url) for w in pool.status())


async def fetch_outputs(
    pool: WorkerPool, result: JobResult, dest_dir: Path, *, retries: int = 3, backoff_s: float = 0.5
) -> list[DownloadedFile]:
    """Download every output of a finished prompt into ``dest_dir``, each with its own retries.

    After ``retries`` failed attempts on one file the worker is reported to the pool (it cools down and is
    checked again) and ``OutputFetchFailed`` is raised with the result, so the caller can resume later.
    """
    client = pool.client_for(result.worker)
    await asyncio.to_thread(dest_dir.mkdir, parents=True, exist_ok=True)

    async def patiently(what: str, fetch: Callable[[], Awaitable[T]]) -> T:
        # A finished prompt's outputs are asked for again, never the prompt run again: a 500 from /view or from
        # /models (where saved models are found) ends, after the retries, in OutputFetchFailed with the result.
        attempt = 0
        while True:
            try:
                return await fetch()
            except _RETRY_DOWNLOAD as err:
                attempt += 1
                if attempt > retries:
                    pool.report_failure(result.worker, err)
                    raise OutputFetchFailed(
                        f"could not {what} after {attempt} attempts ({err.message})", result=result
                    ) from err
                delay = backoff_s * 2 ** (attempt - 1)
                log.warning(
                    "%s (prompt %s) from %s failed (%s); retry %d/%d in %.1f s",
                    what, result.prompt_id, result.worker, err.message, attempt, retries, delay,
                )
                await asyncio.sleep(delay)

    outputs = list(result.outputs)
    for saved in result.saved_models:
        outputs += await patiently(f"list the files node {saved.node_id} saved", partial(find_saved, client, saved))
    return [
        await patiently(f"download {output.filename}", partial(client.download_file, output, dest_dir))
        for output in outputs
    ]


async def find_saved(client: ComfyClient, saved: SavedModel) -> list[OutputFile]:
    """The files a save node wrote without listing them: found in the worker's model list for its folder.

    ``output/<folder>`` is a model search path of the worker, so ``GET /models/<folder>`` lists the file by its
    path relative to it; ``/view`` serves it from the output folder's ``<folder>`` subfolder.
    """
    head = f"{saved.folder}/"
    if not saved.prefix.startswith(head):
        raise OutputError(
            f"node {saved.node_id} saves under {saved.prefix!r}, outside output/{saved.folder}: the file cannot be "
            f"found through /models/{saved.folder}",
            worker=client.name,
        )
    relative = saved.prefix[len(head) :]
    names = [n for n in await client.models(saved.folder) if n.startswith(f"{relative}_")]
    if not names:
        raise OutputError(
            f"node {saved.node_id} wrote no file {saved.prefix}_* that /models/{saved.folder} lists", worker=client.name
        )
    files = []
    for name in sorted(names):
        folder, _, filename = f"{saved.folder}/{name}".rpartition("/")
        files.append(OutputFile(node_id=saved.node_id, kind="file", filename=filename, subfolder=folder))
    return files


VALIDATE_RETRY_DELAYS_S = (0.2, 1.0)  # a worker's /object_info or /models answering 500 once fails no run


async def _validate_patiently(template: Template, client: ComfyClient, values: Mapping[str, Any] | None) -> Any:
    """``validate_on_worker``, asked again after a transient failure (a 5xx, a dropped connection)."""
    for delay in (*VALIDATE_RETRY_DELAYS_S, None):
        try:
            return await validate_on_worker(template, client, values)
        except TransientComfyError:
            if delay is None:
                raise
            await asyncio.sleep(delay)


async def validate_on_pool(
    pool: WorkerPool, templates: Iterable[Template], params: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, list[str]]:
    """Validate templates against the healthy workers' /object_info and model lists before queueing anything.

    Returns, per template, the workers it validated on. Raises ``TemplateError`` (every problem, from the
    first worker checked) for a template that validates on none of them, and ``NoWorkerAvailable`` (naming
    each worker and its last error) when no worker is healthy at all.
    """
    status = pool.status()
    healthy = [w.name for w in status if w.healthy]
    if not healthy:
        raise NoWorkerAvailable(
            "no healthy worker to validate the templates on: "
            + "; ".join(f"{w.name}: {w.last_error or 'never answered'}" for w in status)
        )
    passed: dict[str, list[str]] = {}
    for template in templates:
        values = (params or {}).get(template.name)
        outcomes = await asyncio.gather(
            *(_validate_patiently(template, pool.client_for(name), values) for name in healthy),
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
