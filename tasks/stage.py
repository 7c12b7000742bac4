"""The stage: one named, versioned unit of work whose result is stored artifacts plus a small typed record.

Every task of every flow is a stage. The mechanism below owns, once, what each of them needs:

* **Content cache key**: sha256 over the stage's name and version, its canonical parameters, the sha256 of its
  input artifacts and the code version (``CODE_VERSIONS``); never a run id, job id, output place or worker.
* **Persisted results** beside the store (tasks/results.py) and **SERIALIZABLE isolation** with a lock that a
  crash cannot leave behind (tasks/locks.py): two runs of one stage compute it once, in any process.
* **Retries for transient errors only** (tasks/retry.py), with exponential backoff and jitter; a **timeout per
  kind** (``REELFORGE_TIMEOUT_<KIND>_S``), passed down to the engine call as its own deadline too.
* **Inputs fetched from the store** into a job folder (the store's own file when it has one), **outputs stored
  atomically** under content-hash keys (``reelforge.storage.keys.content_key``), a **lineage record**
  (``StageRecord``: parameters, inputs, outputs, the GPU job's facts once), **executed-vs-cached accounting**,
  **recomputation when a cached result points at artifacts that are gone**, progress and the
  ``reelforge.*.completed`` event.

Kinds: ``gpu`` (a workflow template on the worker pool, tasks/gpu.py), ``thread`` (an engine function in a worker
thread) and ``process`` (an engine function in a child process, for CPU-heavy work such as hashing and ffmpeg).
A new stage is a few lines::

    PHASH = Stage.cpu("phash", version="1", fn=phash_stage, process=True)
    record = await stages.run(PHASH, {}, inputs={"image": ref}, place=prefix, job_id="mina-v1-phash-base")
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Awaitable, Callable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any, Literal, Protocol, cast
from urllib.parse import unquote, urlsplit

from prefect import Task, task
from prefect.cache_policies import CachePolicy
from prefect.client.schemas.objects import State
from prefect.context import TaskRunContext
from prefect.tasks import exponential_backoff
from pydantic import BaseModel, ConfigDict

from reelforge.cpu import function_path
from reelforge.engine import Engine
from reelforge.hashing import canonical_sha256, sha256_file
from reelforge.liveness import make_job_dir
from reelforge.records import Product, StageOutput
from reelforge.settings import LimitSettings
from reelforge.storage import (
    ArtifactRef,
    ArtifactStore,
    ParentRef,
    StageKind,
    StageRecord,
    StoredOutput,
    content_key,
)
from tasks.admission import GpuAdmission
from tasks.context import current_flow_run_id, current_task_run
from tasks.events import stage_completed
from tasks.gpu import gpu_call, template_named
from tasks.locks import RedisStageLockManager, lock_manager_for
from tasks.progress import FlowProgress
from tasks.results import result_storage_for
from tasks.retry import retry_transient

__all__ = ["CODE_VERSIONS", "Stage", "StageRunner", "StageRuntime", "stage_cache_key"]

log = logging.getLogger(__name__)

# Bump when the mechanism changes what it stores for the same stage, parameters and inputs.
MECHANISM_VERSION = "stage/1"
# Prefect's own timeout fires this long after the engine call's deadline, which stops the work cleanly.
TIMEOUT_GRACE_S = 30.0

TimeoutKind = Literal["image", "upscale", "video", "audio", "lora", "cpu"]
_GPU_TIMEOUTS = frozenset({"image", "upscale", "video", "audio", "lora"})


def _package_version() -> str:
    try:
        return metadata.version("reelforge")
    except metadata.PackageNotFoundError:  # running from a checkout that was never installed
        return "0+unknown"


CODE_VERSIONS: dict[str, str] = {"reelforge": _package_version(), "mechanism": MECHANISM_VERSION}


class Stage(BaseModel):
    """What a stage is: plain data (a function by import path, a template by name), so it can be a task
    parameter, part of a cache key and imported by a child process."""

    model_config = ConfigDict(frozen=True)

    name: str
    version: str
    kind: StageKind
    timeout: TimeoutKind = "cpu"
    fn: str | None = None  # "module:function" for thread/process stages
    template: str | None = None  # for gpu stages
    folder: str | None = None  # the template's folder when it is not workflows/ (not part of the cache key)

    @classmethod
    def cpu(
        cls, name: str, *, version: str, fn: Callable[..., StageOutput], process: bool = False,
        timeout: TimeoutKind = "cpu",
    ) -> Stage:
        """A CPU stage around ``fn(inputs: Mapping[str, Path], params, out_dir: Path) -> StageOutput``; ``timeout``
        names the setting that bounds it (``lora`` for an external trainer)."""
        kind: StageKind = "process" if process else "thread"
        return cls(name=name, version=version, kind=kind, fn=function_path(fn), timeout=timeout)

    @classmethod
    def gpu(cls, template_name: str, folder: str | None = None) -> Stage:
        """The GPU stage of a workflow template (from ``folder``, default workflows/): its version is the
        template's content hash."""
        template = template_named(template_name, folder)
        timeout = cast(TimeoutKind, template.kind if template.kind in _GPU_TIMEOUTS else "video")
        return cls(name=template.name, version=template.version, kind="gpu", timeout=timeout, template=template.name,
                   folder=folder)


def stage_cache_key(stage: Stage, params: Mapping[str, Any], inputs: Mapping[str, ArtifactRef] | None = None) -> str:
    """sha256 of (stage name and version, parameters, input sha256s by name, code version): content only."""
    return canonical_sha256(
        {
            "stage": stage.name,
            "version": stage.version,
            "params": dict(params),
            "inputs": sorted((name, ref.sha256) for name, ref in (inputs or {}).items()),
            "code": CODE_VERSIONS,
        }
    )


def _cache_key_fn(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    stage: Stage = parameters["stage"]
    return f"{stage.name}-{stage_cache_key(stage, parameters['params'], parameters.get('inputs'))}"


# ---------------------------------------------------------------------------------------------- live objects


class StageRuntime:
    """The live objects every stage of a flow run shares (excluded from cache keys)."""

    def __init__(
        self,
        engine: Engine,
        *,
        progress: FlowProgress | None = None,
        admission: GpuAdmission | None = None,
    ) -> None:
        self.engine = engine
        self.progress = progress
        self.admission = admission or GpuAdmission(engine.pool, enabled=engine.settings.limits.global_limits)
        # GPU stages remember, per cache key, a prompt that finished but whose downloads failed (to resume on
        # retry) and the worker that last failed the stage (to avoid on retry).
        self.resumable: dict[str, Any] = {}
        self.failed_on: dict[str, str] = {}

    @property
    def store(self) -> ArtifactStore:
        return self.engine.store

    @property
    def limits(self) -> LimitSettings:
        return self.engine.settings.limits

    def timeout_for(self, stage: Stage) -> float:
        return self.limits.timeout_for(stage.timeout)

    def __repr__(self) -> str:  # shown in Prefect's logs of task parameters
        return f"StageRuntime({len(self.engine.pool.status())} workers, {self.store!r})"


class Call(Protocol):
    """How one kind of stage runs its engine call."""

    def __call__(
        self, runtime: StageRuntime, stage: Stage, params: Mapping[str, Any], inputs: Mapping[str, Path],
        out_dir: Path, *, job_id: str, cache_key: str,
    ) -> Awaitable[StageOutput]: ...


async def _cpu_call(
    runtime: StageRuntime, stage: Stage, params: Mapping[str, Any], inputs: Mapping[str, Path], out_dir: Path,
    *, job_id: str, cache_key: str,
) -> StageOutput:
    assert stage.fn is not None
    await asyncio.to_thread(out_dir.mkdir, parents=True, exist_ok=True)
    result = await runtime.engine.cpu.call(
        stage.fn, dict(inputs), dict(params), out_dir,
        timeout=runtime.timeout_for(stage), process=stage.kind == "process",
    )
    if not isinstance(result, StageOutput):
        raise TypeError(f"stage {stage.name}: {stage.fn} returned {type(result).__name__}, not StageOutput")
    return result


CALLS: dict[StageKind, Call] = {"gpu": gpu_call, "thread": _cpu_call, "process": _cpu_call}


# ---------------------------------------------------------------------------------------------- the task


def _local_input(store: ArtifactStore, ref: ArtifactRef, folder: Path) -> Path:
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
    folder.mkdir(parents=True, exist_ok=True)
    return store.get_file(ref.key, folder / ref.name)


def _store_products(store: ArtifactStore, products: list[Product], place: str) -> list[StoredOutput]:
    """Store each product under its content hash in ``place``; a digest computed as the bytes arrived is
    passed on, so no file is read again just to be hashed."""
    stored = []
    for product in products:
        sha = product.sha256
        if sha is None:
            sha, _ = sha256_file(product.path)
        key = content_key(place, sha, product.path.suffix)
        ref = store.put_file(product.path, key, kind=product.kind, sha256=sha)
        stored.append(StoredOutput(**ref.model_dump(), node_id=product.node_id))
    return stored


@task(
    name="stage",
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_transient,
    # Content key without locking here; StageRunner swaps in the same key with SERIALIZABLE + a lock.
    cache_policy=CachePolicy.from_cache_key_fn(_cache_key_fn),
    persist_result=True,
    task_run_name="{job_id}",
)
async def run_stage(
    runtime: StageRuntime,
    stage: Stage,
    params: dict[str, Any],
    inputs: dict[str, ArtifactRef],
    place: str,
    job_id: str,
) -> StageRecord:
    """Run ``stage`` with ``params`` on ``inputs`` (stored artifacts by name), store its products under ``place``
    and return its record."""
    key = stage_cache_key(stage, params, inputs)
    work = await asyncio.to_thread(make_job_dir)
    try:
        local = {
            name: await asyncio.to_thread(_local_input, runtime.store, ref, work / "in") for name, ref in inputs.items()
        }
        output = await CALLS[stage.kind](runtime, stage, params, local, work / "out", job_id=job_id, cache_key=key)
        outputs = await asyncio.to_thread(_store_products, runtime.store, output.products, place)
    finally:
        await asyncio.to_thread(shutil.rmtree, work, True)
    task_run = current_task_run()
    return StageRecord(
        stage=stage.name,
        version=stage.version,
        kind=stage.kind,
        job_id=job_id,
        cache_key=key,
        params=dict(params),
        inputs={name: ParentRef.of(ref) for name, ref in inputs.items()},
        outputs=outputs,
        record=output.record,
        job=output.job,
        flow_run_id=current_flow_run_id(),
        task_run_id=task_run[0] if task_run else None,
    )


# ---------------------------------------------------------------------------------------------- flow side


class StageRunner:
    """Drives stages from a flow: the task configured for this store, cache hits told from executions."""

    def __init__(self, runtime: StageRuntime, result_storage: Any) -> None:
        self.runtime = runtime
        self.result_storage = result_storage
        locks = lock_manager_for(runtime.engine.settings.store)
        self.locks = locks
        self.cache_policy = CachePolicy.from_cache_key_fn(_cache_key_fn).configure(
            isolation_level="SERIALIZABLE", lock_manager=locks
        )
        self._variants: dict[tuple[str, float, bool], Task[..., Any]] = {}
        self.records: list[StageRecord] = []

    @classmethod
    async def create(cls, engine: Engine, *, progress: FlowProgress | None = None) -> StageRunner:
        runtime = StageRuntime(engine, progress=progress)
        runner = cls(runtime, await result_storage_for(engine.settings.store))
        if isinstance(runner.locks, RedisStageLockManager):
            await asyncio.to_thread(runner.locks.check)  # a clear error now, not a stage hanging on it later
        return runner

    def task_for(self, stage: Stage, *, refresh: bool = False) -> Task[..., Any]:
        timeout = self.runtime.timeout_for(stage) + TIMEOUT_GRACE_S
        variant = self._variants.get((stage.name, timeout, refresh))
        if variant is None:
            variant = run_stage.with_options(
                name=stage.name,
                timeout_seconds=timeout,
                result_storage=self.result_storage,
                cache_policy=self.cache_policy,
                refresh_cache=refresh,
            )
            self._variants[(stage.name, timeout, refresh)] = variant
        return variant

    async def run(
        self,
        stage: Stage,
        params: Mapping[str, Any],
        *,
        place: str,
        job_id: str,
        inputs: Mapping[str, ArtifactRef] | None = None,
    ) -> StageRecord:
        """Run one stage (or take it from the cache) and account for it; raises the task's error on failure."""
        started = time.monotonic()
        refresh = False
        progress = self.runtime.progress
        try:
            while True:
                state: State[StageRecord] = await self.task_for(stage, refresh=refresh)(
                    self.runtime, stage, dict(params), dict(inputs or {}), place, job_id, return_state=True
                )
                record = await state.aresult()
                cached = state.name == "Cached"
                if not cached or refresh or await self._outputs_exist(record):
                    break
                refresh = True  # a cached result whose artifacts are gone from the store: run it again
        except BaseException as exc:
            if progress:
                # Cancellation (CancelledError, Ctrl-C, SIGTERM) stops a stage; only an error fails it.
                progress.job_failed(job_id, counted=isinstance(exc, Exception))
            raise
        record = record.model_copy(update={"cached": cached, "job_id": job_id, "wall_s": time.monotonic() - started})
        self.records.append(record)
        if progress:
            progress.job_done(job_id)
        stage_completed(record, flow_run_id=current_flow_run_id())
        return record

    async def _outputs_exist(self, record: StageRecord) -> bool:
        checks = await asyncio.gather(*(asyncio.to_thread(self.runtime.store.exists, r.key) for r in record.outputs))
        return all(checks)

    def count(self, *, cached: bool, kind: StageKind | None = None) -> int:
        return sum(1 for r in self.records if r.cached == cached and (kind is None or r.kind == kind))

    @property
    def executed(self) -> int:
        return self.count(cached=False)

    @property
    def cached(self) -> int:
        return self.count(cached=True)
