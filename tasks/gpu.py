"""The GPU job task: one workflow template run on the worker pool, its outputs stored before it returns.

* **Cache from content** (ARCHITECTURE.md principle 8): the key is sha256 over the template's version (graph +
  manifest hash, which names the model files), the bound parameters (canonical JSON), the input artifacts'
  sha256 and the code version; never the run id, the job id, the output prefix or the worker. Results persist
  under the store (``<store>/.prefect-results`` locally, ``s3://bucket/prefix/.prefect-results`` on S3), so a
  flow run in another process reuses every finished job; SERIALIZABLE isolation with a file lock makes two
  concurrent runs of the same job compute it once.
* **Retries** for transient failures only (worker down, 5xx, lost prompt, store unavailable), exponential
  backoff with jitter; validation and bad inputs fail at once with their message.
* **Timeouts** per template kind (``LimitSettings.timeout_for``). The pool gets the same deadline and stops the
  prompt itself; Prefect's timeout is a backstop a little later.
* **Results** are small: ``GpuJobResult`` with one ``ArtifactRecord`` (uri, sha256, lineage) per output file.

``run_gpu_job`` is the flow-side driver of one job: it calls the task, tells a cache hit from an execution
(the task run's state is named ``Cached``), recomputes when a cached result points at artifacts that are gone,
feeds the progress tracker and emits ``reelforge.job.completed``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Mapping
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from prefect import Task, task
from prefect.cache_policies import CachePolicy
from prefect.client.schemas.objects import State
from prefect.context import FlowRunContext, TaskRunContext
from prefect.locking.filesystem import FileSystemLockManager
from prefect.tasks import exponential_backoff
from pydantic import BaseModel, ConfigDict

from reelforge.comfy.collect import run_template
from reelforge.comfy.pool import WorkerPool
from reelforge.comfy.types import JobOwner
from reelforge.settings import LimitSettings, StoreSettings
from reelforge.storage.base import ArtifactRef, ArtifactStore
from reelforge.storage.lineage import ArtifactRecord, ParentRef, cost_for
from reelforge.templates.template import Template, load_template
from tasks.admission import GpuAdmission
from tasks.events import job_completed
from tasks.progress import FlowProgress
from tasks.retry import retry_transient

# Bump when the task body changes what it stores for the same template, parameters and inputs.
CODE_VERSION = "gpu-job/1"
RESULTS_DIR = ".prefect-results"
LOCKS_DIR = ".prefect-locks"
# Prefect's own timeout fires this long after the pool's job deadline, which interrupts the prompt cleanly.
TIMEOUT_GRACE_S = 30.0


def _package_version() -> str:
    try:
        return metadata.version("reelforge")
    except metadata.PackageNotFoundError:  # running from a checkout that was never installed
        return "0+unknown"


CODE_VERSIONS: dict[str, str] = {"reelforge": _package_version(), "gpu_job": CODE_VERSION}


# ---------------------------------------------------------------------------------------------- the result


class GpuJobResult(BaseModel):
    """What a GPU job produced: references to stored artifacts with their lineage, never bytes."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    template: str
    template_version: str
    prompt_id: str
    worker: str
    worker_labels: list[str] = []
    gpu_seconds: float
    cost: float
    wall_s: float
    outputs: list[ArtifactRecord]
    executed: bool = True  # False when the flow was served this result from Prefect's cache
    flow_run_id: str | None = None  # of the run that executed it
    task_run_id: str | None = None

    @property
    def refs(self) -> list[ArtifactRef]:
        return [record.as_ref() for record in self.outputs]

    @property
    def cached(self) -> bool:
        return not self.executed


# ---------------------------------------------------------------------------------------------- live objects


class JobRuntime:
    """The live objects every GPU job of a flow run shares (excluded from the cache key)."""

    def __init__(
        self,
        pool: WorkerPool,
        store: ArtifactStore,
        limits: LimitSettings,
        *,
        progress: FlowProgress | None = None,
        admission: GpuAdmission | None = None,
    ) -> None:
        self.pool = pool
        self.store = store
        self.limits = limits
        self.progress = progress
        self.admission = admission or GpuAdmission(pool, enabled=limits.global_limits)

    def __repr__(self) -> str:  # shown in Prefect's logs of task parameters
        return f"JobRuntime({len(self.pool.status())} workers, {self.store!r})"


# ---------------------------------------------------------------------------------------------- cache key


@lru_cache(maxsize=256)
def _template(name: str) -> Template:
    return load_template(name)


def canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def job_cache_key(
    template_version: str, params: Mapping[str, Any], inputs: Mapping[str, ArtifactRef] | None = None
) -> str:
    """sha256 of (template version, bound parameters, input artifact hashes by parameter, code version)."""
    material = {
        "template": template_version,
        "params": dict(params),
        "inputs": sorted((name, ref.sha256) for name, ref in (inputs or {}).items()),
        "code": CODE_VERSIONS,
    }
    return hashlib.sha256(canonical_json(material).encode("utf-8")).hexdigest()


def gpu_job_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """``cache_key_fn`` of ``gpu_job``: content only (no run id, job id, output prefix or live objects)."""
    template = _template(parameters["template_name"])
    return f"gpu-{job_cache_key(template.version, parameters['params'], parameters.get('inputs'))}"


def _local_results_dir(settings: StoreSettings) -> Path:
    return Path(settings.store).expanduser().resolve() / RESULTS_DIR


async def result_storage_for(settings: StoreSettings) -> Any:
    """Where Prefect persists task results and cache records: beside the artifacts they point at.

    A ``pathlib.Path`` for a local store (a bare string would be read as a block name). For S3 an ``S3Bucket``
    block (prefect-aws) with the store's endpoint and credentials, saved on the Prefect server as
    ``reelforge-results-<hash of the store URL>`` (Prefect refuses unsaved blocks as result storage).
    """
    if not settings.is_s3:
        return await asyncio.to_thread(_local_results_dir, settings)
    from prefect_aws import AwsClientParameters, AwsCredentials, S3Bucket

    bucket, _, prefix = settings.store.removeprefix("s3://").partition("/")
    folder = f"{prefix.strip('/')}/{RESULTS_DIR}" if prefix.strip("/") else RESULTS_DIR
    credentials = AwsCredentials(
        aws_access_key_id=settings.s3_access_key_id.get_secret_value() if settings.s3_access_key_id else None,
        aws_secret_access_key=settings.s3_secret_access_key if settings.s3_secret_access_key else None,
        region_name=settings.s3_region,
        profile_name=settings.aws_profile,
        aws_client_parameters=AwsClientParameters(endpoint_url=settings.s3_endpoint_url),
    )
    block = S3Bucket(bucket_name=bucket, bucket_folder=folder, credentials=credentials)
    name = "reelforge-results-" + hashlib.sha256(settings.store.encode("utf-8")).hexdigest()[:16]
    await block.save(name, overwrite=True)
    return block


def lock_folder_for(settings: StoreSettings) -> Path:
    """Cache locks: beside a local store; for S3 under PREFECT_HOME (locks are per machine, see README)."""
    if not settings.is_s3:
        return Path(settings.store).expanduser().resolve() / LOCKS_DIR
    from prefect.settings import PREFECT_HOME

    digest = hashlib.sha256(settings.store.encode("utf-8")).hexdigest()[:16]
    return Path(PREFECT_HOME.value()) / "reelforge-locks" / digest


def cache_policy_for(settings: StoreSettings) -> CachePolicy:
    return CachePolicy.from_cache_key_fn(gpu_job_cache_key).configure(
        isolation_level="SERIALIZABLE", lock_manager=FileSystemLockManager(lock_folder_for(settings))
    )


# ---------------------------------------------------------------------------------------------- the task


def _owner(job_id: str) -> JobOwner:
    ctx = TaskRunContext.get()
    if ctx is None:
        return JobOwner(job_id=job_id)
    return JobOwner(job_id=job_id, flow_run_id=str(ctx.task_run.flow_run_id), task_run_id=str(ctx.task_run.id))


def _local_path(store: ArtifactStore, ref: ArtifactRef, folder: Path) -> Path:
    """A local file with the artifact's bytes: the store's own file when it has one, else a download."""
    path_for = getattr(store, "path_for", None)
    if callable(path_for):
        path = Path(path_for(ref.key))
        if path.is_file():
            return path
    if ref.uri.startswith("file://"):
        path = Path(unquote(urlsplit(ref.uri).path))
        if path.is_file():
            return path
    return store.get_file(ref.key, folder / ref.name)


def _store_outputs(
    store: ArtifactStore,
    files: list[Path],
    digests: list[str],
    prefix: str,
    kind_by_file: Mapping[Path, str | None],
) -> list[ArtifactRef]:
    """Store each output under its content hash; the digests were computed while the files downloaded, so no
    file is read again just to be hashed."""
    refs = []
    for path, sha in zip(files, digests, strict=True):
        key = f"{prefix.strip('/')}/{sha[:16]}{path.suffix.lower()}"
        refs.append(store.put_file(path, key, kind=kind_by_file.get(path), sha256=sha))
    return refs


@task(
    name="gpu-job",
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_transient,
    # Content key without locking here; GpuJobs swaps in the same key with SERIALIZABLE + a file lock.
    cache_policy=CachePolicy.from_cache_key_fn(gpu_job_cache_key),
    persist_result=True,
    task_run_name="{template_name}-{job_id}",
)
async def gpu_job(
    runtime: JobRuntime,
    template_name: str,
    params: dict[str, Any],
    inputs: dict[str, ArtifactRef],
    prefix: str,
    job_id: str,
) -> GpuJobResult:
    """Run ``template_name`` with ``params`` (``inputs``: image/audio parameters -> stored artifacts) on the
    pool, store every output under ``prefix/<sha256[:16]><ext>`` and return references to them."""
    template = await asyncio.to_thread(_template, template_name)
    timeout = runtime.limits.timeout_for(template.kind)
    on_progress = runtime.progress.callback(job_id) if runtime.progress else None
    work = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="reelforge-job-"))
    try:
        await asyncio.to_thread((work / "in").mkdir)
        local = {
            name: await asyncio.to_thread(_local_path, runtime.store, ref, work / "in")
            for name, ref in inputs.items()
        }
        async with runtime.admission.slot(template.kind):
            record = await run_template(
                runtime.pool, template, params, job_id=job_id, dest_dir=work / "out", inputs=local,
                owner=_owner(job_id), timeout=timeout, on_progress=on_progress,
            )
        kinds = {path: _kind(template, node) for node, paths in record.by_node.items() for path in paths}
        refs = await asyncio.to_thread(_store_outputs, runtime.store, record.files, record.sha256, prefix, kinds)
    finally:
        await asyncio.to_thread(shutil.rmtree, work, True)
    labels = next((sorted(w.labels) for w in runtime.pool.status() if w.name == record.worker), [])
    cost = cost_for(record.gpu_seconds, runtime.limits.price_per_hour(frozenset(labels)))
    ctx = TaskRunContext.get()
    flow_run_id = str(ctx.task_run.flow_run_id) if ctx and ctx.task_run.flow_run_id else None
    task_run_id = str(ctx.task_run.id) if ctx else None
    seed = params.get("seed")
    parents = [ParentRef.of(ref) for ref in inputs.values()]
    share = max(1, len(refs))  # a job's time and cost are split over its output files
    records = [
        ArtifactRecord.from_ref(
            ref,
            template=template.name,
            template_version=template.version,
            params=dict(params),
            seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
            worker=record.worker,
            worker_labels=labels,
            model_files=[str(m) for m in template.models],
            gpu_seconds=record.gpu_seconds / share,
            cost=cost / share,
            parents=parents,
            job_id=job_id,
            prompt_id=record.prompt_id,
            flow_run_id=flow_run_id,
            task_run_id=task_run_id,
            cached=False,
        )
        for ref in refs
    ]
    return GpuJobResult(
        job_id=job_id,
        template=template.name,
        template_version=template.version,
        prompt_id=record.prompt_id,
        worker=record.worker,
        worker_labels=labels,
        gpu_seconds=record.gpu_seconds,
        cost=cost,
        wall_s=record.wall_s,
        outputs=records,
        executed=True,
        flow_run_id=flow_run_id,
        task_run_id=task_run_id,
    )


def _kind(template: Template, node_id: str) -> str | None:
    """The manifest's kind of an output node, when it is one the store knows (image, video, audio...)."""
    for output in template.outputs:
        if output.node_id == node_id and output.kind in ("image", "video", "audio", "lora", "json", "text"):
            return output.kind
    return None


# ---------------------------------------------------------------------------------------------- flow side


class GpuJobs:
    """Configures ``gpu_job`` for one flow run's store and limits, and drives jobs from the flow."""

    def __init__(self, runtime: JobRuntime, store_settings: StoreSettings, result_storage: Any) -> None:
        self.runtime = runtime
        self.result_storage = result_storage
        self.cache_policy = cache_policy_for(store_settings)
        self._variants: dict[tuple[float, bool], Task[..., Any]] = {}
        self.results: list[GpuJobResult] = []

    @classmethod
    async def create(cls, runtime: JobRuntime, store_settings: StoreSettings) -> GpuJobs:
        return cls(runtime, store_settings, await result_storage_for(store_settings))

    def task_for(self, kind: str, *, refresh: bool = False) -> Task[..., Any]:
        timeout = self.runtime.limits.timeout_for(kind) + TIMEOUT_GRACE_S
        variant = self._variants.get((timeout, refresh))
        if variant is None:
            variant = gpu_job.with_options(
                timeout_seconds=timeout,
                result_storage=self.result_storage,
                cache_policy=self.cache_policy,
                refresh_cache=refresh,
            )
            self._variants[(timeout, refresh)] = variant
        return variant

    async def run(
        self,
        template_name: str,
        params: dict[str, Any],
        *,
        prefix: str,
        job_id: str,
        inputs: dict[str, ArtifactRef] | None = None,
    ) -> GpuJobResult:
        """Run one job (or take it from the cache) and account for it; raises the task's error on failure."""
        template = await asyncio.to_thread(_template, template_name)
        started = time.monotonic()
        refresh = False
        try:
            while True:
                state: State[GpuJobResult] = await self.task_for(template.kind, refresh=refresh)(
                    self.runtime, template_name, params, dict(inputs or {}), prefix, job_id, return_state=True
                )
                result = await state.aresult()
                cached = state.name == "Cached"
                if not cached or refresh or await self._outputs_exist(result):
                    break
                refresh = True  # a cached result whose artifacts are gone from the store: run it again
        except BaseException:
            if self.runtime.progress:
                self.runtime.progress.job_failed(job_id)
            raise
        if cached:
            result = result.model_copy(
                update={
                    "executed": False,
                    "job_id": job_id,
                    "wall_s": time.monotonic() - started,
                    "outputs": [r.model_copy(update={"cached": True}) for r in result.outputs],
                }
            )
        self.results.append(result)
        if self.runtime.progress:
            self.runtime.progress.job_done(job_id)
        ctx = FlowRunContext.get()
        job_completed(result, flow_run_id=str(ctx.flow_run.id) if ctx and ctx.flow_run else None)
        return result

    async def _outputs_exist(self, result: GpuJobResult) -> bool:
        checks = await asyncio.gather(
            *(asyncio.to_thread(self.runtime.store.exists, r.key) for r in result.outputs)
        )
        return all(checks)

    @property
    def executed(self) -> int:
        return sum(1 for r in self.results if r.executed)

    @property
    def cached(self) -> int:
        return sum(1 for r in self.results if not r.executed)
