"""The GPU job task: retry only transient errors, fail bad input at once, content cache keys, admission."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.states import Failed

import tasks.gpu
from reelforge.comfy.errors import PromptValidationError, WorkerServerError, WorkerUnavailable
from reelforge.comfy.fleet import open_fleet
from reelforge.preview.server import PreviewWorker, PreviewWorkerThread
from reelforge.settings import LimitSettings, StoreSettings, WorkerSettings
from reelforge.storage import open_store
from reelforge.storage.base import ArtifactRef
from reelforge.storage.errors import StoreConflict, StoreUnavailable
from reelforge.templates.errors import TemplateError
from tasks.admission import GpuAdmission, limit_name
from tasks.gpu import GpuJobResult, GpuJobs, JobRuntime, job_cache_key
from tasks.retry import is_transient, retry_transient

BASE = "character_base_realistic"
PARAMS = {"prompt": "a test portrait", "seed": 1, "width": 256, "height": 256}


def test_retry_condition_retries_transient_errors_only() -> None:
    def retried(exc: BaseException) -> bool:
        return retry_transient(None, None, Failed(data=exc))

    assert retried(WorkerUnavailable("connection refused", worker="http://w"))
    assert retried(WorkerServerError("boom", status=500))
    assert retried(StoreUnavailable("S3 503"))
    assert not retried(PromptValidationError("bad graph", node_errors=[]))
    assert not retried(StoreConflict("other content"))
    assert not retried(ValueError("bad input"))
    assert not retried(ExceptionGroup("mixed", [WorkerUnavailable("x"), ValueError("y")]))
    assert is_transient(ExceptionGroup("all transient", [WorkerUnavailable("x"), StoreUnavailable("y")]))


def _ref(sha: str) -> ArtifactRef:
    return ArtifactRef(
        key=f"a/{sha[:16]}.png", uri="file:///x", sha256=sha, size=1, media_type="image/png", kind="image"
    )


def test_cache_key_is_content_only() -> None:
    a, b = "a" * 64, "b" * 64
    key = job_cache_key("v1", {"seed": 1, "prompt": "p"}, {"image": _ref(a)})
    assert key == job_cache_key("v1", {"prompt": "p", "seed": 1}, {"image": _ref(a)})  # order-independent
    # The same content under another key / uri is the same input.
    moved = _ref(a).model_copy(update={"key": "elsewhere/x.png", "uri": "s3://b/x.png"})
    assert key == job_cache_key("v1", {"seed": 1, "prompt": "p"}, {"image": moved})
    assert key != job_cache_key("v2", {"seed": 1, "prompt": "p"}, {"image": _ref(a)})
    assert key != job_cache_key("v1", {"seed": 2, "prompt": "p"}, {"image": _ref(a)})
    assert key != job_cache_key("v1", {"seed": 1, "prompt": "p"}, {"image": _ref(b)})


@pytest.fixture(scope="module")
def worker() -> Iterator[PreviewWorkerThread]:
    thread = PreviewWorkerThread(PreviewWorker(latency="instant", name="solo"))
    thread.start()
    yield thread
    thread.stop()


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real task with no waiting between retries (the policy is exponential backoff: 2, 4, 8 s)."""
    monkeypatch.setattr(tasks.gpu, "gpu_job", tasks.gpu.gpu_job.with_options(retry_delay_seconds=0))


async def _run_one(
    worker_url: str, store_dir: Path, params: dict[str, Any], *, global_limits: bool = False
) -> GpuJobResult:
    settings = StoreSettings(store=str(store_dir))

    @flow(name="gpu-job-test")
    async def one_job() -> GpuJobResult:
        async with open_fleet(WorkerSettings(comfy_urls=worker_url)) as pool:  # type: ignore[arg-type]
            runtime = JobRuntime(pool, open_store(settings), LimitSettings(global_limits=global_limits))
            jobs = await GpuJobs.create(runtime, settings)
            return await jobs.run(BASE, params, prefix="tests/base", job_id="t-base")

    return await one_job()


async def test_transient_error_is_retried(
    worker: PreviewWorkerThread, tmp_path: Path, fast_retries: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0
    real = tasks.gpu.run_template

    async def flaky(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise WorkerUnavailable("connection reset", worker=worker.url)
        return await real(*args, **kwargs)

    monkeypatch.setattr(tasks.gpu, "run_template", flaky)
    result = await _run_one(worker.url, tmp_path, {**PARAMS, "seed": 11})
    assert calls == 2 and result.executed and len(result.outputs) == 1


async def test_validation_error_fails_at_once_with_its_message(
    worker: PreviewWorkerThread, tmp_path: Path, fast_retries: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0
    real = tasks.gpu.run_template

    async def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return await real(*args, **kwargs)

    monkeypatch.setattr(tasks.gpu, "run_template", counting)
    with pytest.raises(TemplateError, match="width"):
        await _run_one(worker.url, tmp_path, {**PARAMS, "width": -5})
    assert calls == 1, "a validation error must not be retried"


async def test_concurrent_runs_of_the_same_job_compute_it_once(worker: PreviewWorkerThread, tmp_path: Path) -> None:
    sent = worker.stats.prompts_executed
    results = await asyncio.gather(*(_run_one(worker.url, tmp_path, {**PARAMS, "seed": 13}) for _ in range(2)))
    assert sorted(r.executed for r in results) == [False, True]
    assert worker.stats.prompts_executed == sent + 1
    assert results[0].outputs[0].sha256 == results[1].outputs[0].sha256


async def test_global_limit_is_created_and_taken(worker: PreviewWorkerThread, tmp_path: Path) -> None:
    result = await _run_one(worker.url, tmp_path, {**PARAMS, "seed": 12}, global_limits=True)
    assert result.executed
    async with get_client() as client:
        limit = await client.read_global_concurrency_limit_by_name(limit_name("image"))
    assert limit.limit == 2  # one unlabelled worker x (1 + queue_depth 1)
    assert limit.active_slots == 0  # released after the job


async def test_admission_is_a_no_op_when_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    import tasks.admission as admission_module

    def no_server(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("disabled admission must not talk to the Prefect server")

    monkeypatch.setattr(admission_module, "concurrency", no_server)
    monkeypatch.setattr(admission_module, "get_client", no_server)
    admission = GpuAdmission(pool=None, enabled=False)  # type: ignore[arg-type]
    entered = False
    async with admission.slot("image"):
        entered = True
    assert entered and admission._ensured == {}
