"""The stage mechanism under Prefect's harness: content keys, storage, caching, retries, timeouts, locks, kinds."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import stage_fns
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.states import Failed
from pydantic import SecretStr

import tasks.events
import tasks.gpu
import tasks.stage
from reelforge.comfy import JobDeadlineExceeded, PromptValidationError, WorkerServerError, WorkerUnavailable
from reelforge.cpu import CpuTimeout
from reelforge.engine import open_engine
from reelforge.hashing import sha256_bytes
from reelforge.preview.server import PreviewWorker, PreviewWorkerThread
from reelforge.settings import LimitSettings, LLMSettings, Settings, StoreSettings, WorkerSettings
from reelforge.storage import ArtifactRef, LocalStore, StoreConflict, StoreUnavailable
from reelforge.storage.keys import content_key
from reelforge.storage.lineage import StageRecord
from reelforge.templates import TemplateError
from tasks.admission import GpuAdmission, limit_name
from tasks.results import lock_folder_for
from tasks.retry import is_transient, retry_transient
from tasks.stage import Stage, StageRunner, stage_cache_key
from tasks.stages import PHASH

BASE = "character_base_realistic"
PARAMS = {"prompt": "a test portrait", "seed": 1, "width": 256, "height": 256}
UPPER = Stage.cpu("upper", version="1", fn=stage_fns.upper_text)
FLAKY = Stage.cpu("flaky", version="1", fn=stage_fns.flaky)
BROKEN = Stage.cpu("broken", version="1", fn=stage_fns.broken, process=True)
SLEEPY = Stage.cpu("sleepy", version="1", fn=stage_fns.sleepy, process=True)
WHERE = Stage.cpu("where", version="1", fn=stage_fns.pid_of_worker, process=True)


def _ref(sha: str) -> ArtifactRef:
    return ArtifactRef(
        key=f"a/{sha[:16]}.png", uri="file:///x", sha256=sha, size=1, media_type="image/png", kind="image"
    )


def test_cache_key_is_content_only() -> None:
    a, b = "a" * 64, "b" * 64
    key = stage_cache_key(UPPER, {"seed": 1, "prompt": "p"}, {"image": _ref(a)})
    assert key == stage_cache_key(UPPER, {"prompt": "p", "seed": 1}, {"image": _ref(a)})  # order-independent
    # The same content under another key / uri is the same input.
    moved = _ref(a).model_copy(update={"key": "elsewhere/x.png", "uri": "s3://b/x.png"})
    assert key == stage_cache_key(UPPER, {"seed": 1, "prompt": "p"}, {"image": moved})
    bumped = UPPER.model_copy(update={"version": "2"})
    assert key != stage_cache_key(bumped, {"seed": 1, "prompt": "p"}, {"image": _ref(a)})
    renamed = UPPER.model_copy(update={"name": "other"})
    assert key != stage_cache_key(renamed, {"seed": 1, "prompt": "p"}, {"image": _ref(a)})
    assert key != stage_cache_key(UPPER, {"seed": 2, "prompt": "p"}, {"image": _ref(a)})
    assert key != stage_cache_key(UPPER, {"seed": 1, "prompt": "p"}, {"image": _ref(b)})


def test_retry_condition_retries_transient_errors_only() -> None:
    def retried(exc: BaseException) -> bool:
        return retry_transient(None, None, Failed(data=exc))

    assert retried(WorkerUnavailable("connection refused", worker="http://w"))
    assert retried(WorkerServerError("boom", status=500))
    assert retried(StoreUnavailable("S3 503"))
    assert not retried(PromptValidationError("bad graph", node_errors=[]))
    assert not retried(StoreConflict("other content"))
    assert not retried(ValueError("bad input"))
    assert not retried(CpuTimeout("slow", function="x:y"))
    assert not retried(ExceptionGroup("mixed", [WorkerUnavailable("x"), ValueError("y")]))
    assert is_transient(ExceptionGroup("all transient", [WorkerUnavailable("x"), StoreUnavailable("y")]))


# ---------------------------------------------------------------------------------------------- harness


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real task with no waiting between retries (the policy is exponential backoff: 2, 4, 8 s)."""
    monkeypatch.setattr(tasks.stage, "run_stage", tasks.stage.run_stage.with_options(retry_delay_seconds=0))


def settings_for(worker_url: str, store: Path, *, workers: dict[str, Any] | None = None, **limits: Any) -> Settings:
    return Settings(
        workers=WorkerSettings(comfy_urls=worker_url, **(workers or {})),  # type: ignore[arg-type]
        store=StoreSettings(store=str(store)),
        limits=LimitSettings(**limits),
        llm=LLMSettings(),
    )


Body = Callable[[StageRunner], Awaitable[Any]]


async def in_flow(settings: Settings, body: Body) -> Any:
    """Run ``body(runner)`` inside a flow run, with an engine built from ``settings``."""

    @flow(name="stage-test")
    async def stage_test() -> Any:
        async with open_engine(settings) as engine:
            return await body(await StageRunner.create(engine))

    return await stage_test()


def text_input(store_dir: Path, text: str) -> ArtifactRef:
    store = LocalStore(store_dir)
    return store.put_bytes(text.encode(), content_key("inputs/", sha256_bytes(text.encode()), ".txt"))


# ---------------------------------------------------------------------------------------------- CPU stages


async def test_thread_stage_stores_its_output_and_is_cached_in_the_next_run(
    worker: PreviewWorkerThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    emitted: list[str] = []
    monkeypatch.setattr(tasks.events, "emit_event", lambda event, **kw: emitted.append(event))
    store_dir, counter = tmp_path / "store", tmp_path / "calls.txt"
    source = text_input(store_dir, "hello stages")
    settings = settings_for(worker.url, store_dir)

    async def body(runner: StageRunner) -> StageRecord:
        return await runner.run(
            UPPER, {"counter": str(counter)}, inputs={"text": source}, place="tests/upper/", job_id="up-1"
        )

    first: StageRecord = await in_flow(settings, body)
    assert first.executed and first.kind == "thread" and first.record == {"length": 12, "calls": 1}
    (out,) = first.outputs
    assert out.key == content_key("tests/upper/", out.sha256, ".txt") and out.kind == "text"
    assert (store_dir / out.key).read_text() == "HELLO STAGES"
    assert first.inputs["text"].sha256 == source.sha256 and first.flow_run_id
    second: StageRecord = await in_flow(settings, body)
    assert second.cached and second.record == first.record and second.outputs == first.outputs
    assert len(counter.read_text().splitlines()) == 1, "a cached stage must not run its engine call"
    assert emitted == ["reelforge.upper.completed", "reelforge.upper.completed"]

    # A cached result whose artifact was deleted from the store is computed again.
    (store_dir / out.key).unlink()
    third: StageRecord = await in_flow(settings, body)
    assert third.executed and (store_dir / out.key).read_text() == "HELLO STAGES"


async def test_process_stage_runs_in_a_child_process_and_phash_is_a_real_stage(
    worker: PreviewWorkerThread, tmp_path: Path
) -> None:
    from PIL import Image

    image = tmp_path / "img.png"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(image)
    store = LocalStore(tmp_path / "store")
    data = image.read_bytes()
    ref = store.put_bytes(data, content_key("inputs/", sha256_bytes(data), ".png"))

    async def body(runner: StageRunner) -> tuple[StageRecord, StageRecord]:
        where = await runner.run(WHERE, {}, place="tests/where/", job_id="where")
        hashed = await runner.run(PHASH, {}, inputs={"image": ref}, place="tests/hash/", job_id="hash")
        return where, hashed

    where, hashed = await in_flow(settings_for(worker.url, tmp_path / "store"), body)
    assert where.kind == "process" and where.record["pid"] != os.getpid()
    import imagehash

    assert hashed.record == {"phash": str(imagehash.phash(Image.open(image))), "width": 64, "height": 48}
    assert hashed.outputs == []


async def test_transient_errors_are_retried_and_permanent_ones_fail_at_once(
    worker: PreviewWorkerThread, tmp_path: Path, fast_retries: None
) -> None:
    flaky_calls, broken_calls = tmp_path / "flaky.txt", tmp_path / "broken.txt"
    settings = settings_for(worker.url, tmp_path / "store")

    async def flaky(runner: StageRunner) -> StageRecord:
        return await runner.run(FLAKY, {"counter": str(flaky_calls)}, place="tests/f/", job_id="flaky")

    record: StageRecord = await in_flow(settings, flaky)
    assert record.record == {"calls": 2} and len(flaky_calls.read_text().splitlines()) == 2

    async def broken(runner: StageRunner) -> StageRecord:
        return await runner.run(BROKEN, {"counter": str(broken_calls), "value": 7}, place="tests/b/", job_id="b")

    with pytest.raises(ValueError, match="bad input 7"):
        await in_flow(settings, broken)
    assert len(broken_calls.read_text().splitlines()) == 1, "a permanent error must not be retried"


async def test_cpu_timeout_kills_the_process(worker: PreviewWorkerThread, tmp_path: Path) -> None:
    counter = tmp_path / "calls.txt"
    settings = settings_for(worker.url, tmp_path / "store", timeout_cpu_s=1.0)

    async def body(runner: StageRunner) -> StageRecord:
        return await runner.run(SLEEPY, {"counter": str(counter), "seconds": 60}, place="tests/s/", job_id="sleepy")

    begin = time.monotonic()
    with pytest.raises(CpuTimeout, match="within 1 s"):
        await in_flow(settings, body)
    assert time.monotonic() - begin < 30
    pid = int(counter.read_text().split()[0])
    assert not await asyncio.to_thread(_still_alive_after, pid, 5.0), "the child must be killed at its timeout"


def _still_alive_after(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ")[-1].startswith("Z"))


async def test_concurrent_runs_of_the_same_stage_compute_it_once(worker: PreviewWorkerThread, tmp_path: Path) -> None:
    store_dir, counter = tmp_path / "store", tmp_path / "calls.txt"
    source = text_input(store_dir, "once")
    settings = settings_for(worker.url, store_dir)

    async def body(runner: StageRunner) -> list[StageRecord]:
        params = {"counter": str(counter)}
        return list(
            await asyncio.gather(
                *(runner.run(UPPER, params, inputs={"text": source}, place="t/", job_id=f"u{i}") for i in range(2))
            )
        )

    records: list[StageRecord] = await in_flow(settings, body)
    assert sorted(r.cached for r in records) == [False, True]
    assert len(counter.read_text().splitlines()) == 1


async def test_a_lock_left_by_a_killed_run_is_taken_over(worker: PreviewWorkerThread, tmp_path: Path) -> None:
    """SIGKILL of a run that held a stage's cache lock: the next run takes the lock over and finishes."""
    store_dir, counter = tmp_path / "store", tmp_path / "calls.txt"
    source = text_input(store_dir, "crash")
    params = {"counter": str(counter)}
    key = f"upper-{stage_cache_key(UPPER, params, {'text': source})}"
    folder = lock_folder_for(StoreSettings(store=str(store_dir)))
    await asyncio.to_thread(_lock_and_get_killed, folder, key)
    assert (folder / f"{key}.lock").exists(), "the killed holder left its lock file behind"

    async def body(runner: StageRunner) -> StageRecord:
        return await runner.run(UPPER, params, inputs={"text": source}, place="t/", job_id="after-crash")

    record: StageRecord = await asyncio.wait_for(in_flow(settings_for(worker.url, store_dir), body), 120)
    assert record.executed and not (folder / f"{key}.lock").exists()


def _lock_and_get_killed(folder: Path, key: str) -> None:
    """A child process takes the lock, then dies by SIGKILL holding it."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(folder), key], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()


HOLD_LOCK = """
import sys, time
from pathlib import Path
from tasks.locks import StageLockManager
locks = StageLockManager(Path(sys.argv[1]))
assert locks.acquire_lock(sys.argv[2], "killed-holder")
print("locked", flush=True)
time.sleep(600)
"""


# ---------------------------------------------------------------------------------------------- GPU stages


async def _gpu_once(worker_url: str, store_dir: Path, params: dict[str, Any], **limits: Any) -> StageRecord:
    async def body(runner: StageRunner) -> StageRecord:
        return await runner.run(Stage.gpu(BASE), params, place="tests/base/", job_id="t-base")

    record: StageRecord = await in_flow(settings_for(worker_url, store_dir, **limits), body)
    return record


async def test_gpu_stage_records_the_job_once_and_is_cached(worker: PreviewWorkerThread, tmp_path: Path) -> None:
    sent = worker.stats.prompts_executed
    first = await _gpu_once(worker.url, tmp_path, {**PARAMS, "seed": 21}, gpu_price_per_hour={"default": 3.6})
    assert first.kind == "gpu" and first.version == tasks.gpu.template_named(BASE).version
    assert first.job is not None and first.job.worker and first.job.prompt_id
    assert first.job.cost == pytest.approx(first.job.gpu_seconds / 1000, abs=1e-6)  # 3.6 per hour = 0.001/s
    (image,) = first.outputs
    assert image.kind == "image" and image.node_id and image.key == content_key("tests/base/", image.sha256, ".png")
    second = await _gpu_once(worker.url, tmp_path, {**PARAMS, "seed": 21})
    assert second.cached and second.outputs == first.outputs and worker.stats.prompts_executed == sent + 1


async def test_job_timeout_setting_bounds_a_gpu_job(tmp_path: Path, fast_retries: None) -> None:
    async with PreviewWorker(tmp_path / "slow", latency="fixed:5") as slow:
        begin = time.monotonic()
        with pytest.raises(JobDeadlineExceeded, match="did not finish within"):
            await _gpu_once(slow.url, tmp_path / "store", PARAMS, workers={"job_timeout_s": 0.5})
        assert time.monotonic() - begin < 20  # 4 attempts of 0.5 s, not 4 of 5 s
        assert await _drained(slow.url, within_s=10), "each timed-out prompt was taken off the worker"


async def _drained(url: str, *, within_s: float) -> bool:
    """Whether the worker's queue is (or becomes, within ``within_s``) empty; an interrupt lands at a node edge."""
    deadline = time.monotonic() + within_s
    async with httpx.AsyncClient() as http:
        while True:
            data = (await http.get(f"{url}/queue")).json()
            if not data["queue_running"] and not data["queue_pending"]:
                return True
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.1)


async def test_a_failed_download_is_retried_as_a_download_not_a_new_job(tmp_path: Path) -> None:
    """A slow /view after the prompt completed: the download is tried again; the prompt never runs twice."""
    async with PreviewWorker(tmp_path / "a", name="a") as a, PreviewWorker(tmp_path / "b", name="b") as b:
        a.faults.set_slow_view(1.0)
        loop = asyncio.get_running_loop()
        loop.call_later(1.5, a.faults.clear)  # /view answers again while the downloads retry
        record = await _gpu_once(
            f"{a.url},{b.url}", tmp_path / "store", {**PARAMS, "seed": 31},
            workers={"request_timeout_s": 0.5, "download_retries": 4},
        )
        assert record.job is not None and record.job.worker == a.url.removeprefix("http://")
        assert (a.stats.prompts_executed, b.stats.prompts_executed) == (1, 0)


async def test_a_worker_whose_downloads_keep_failing_is_avoided_by_the_retry(
    tmp_path: Path, fast_retries: None
) -> None:
    async with PreviewWorker(tmp_path / "a", name="a") as a, PreviewWorker(tmp_path / "b", name="b") as b:
        a.faults.set_slow_view(3.0)
        begin = time.monotonic()
        record = await _gpu_once(
            f"{a.url},{b.url}", tmp_path / "store", {**PARAMS, "seed": 32},
            workers={"request_timeout_s": 0.5, "download_retries": 1},
        )
        assert record.job is not None and record.job.worker == b.url.removeprefix("http://")
        # Once on a (its downloads failed, so it cooled down) and once on b: not four times on a.
        assert (a.stats.prompts_executed, b.stats.prompts_executed) == (1, 1)
        assert time.monotonic() - begin < 30


async def test_transient_gpu_error_is_retried(
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
    result = await _gpu_once(worker.url, tmp_path, {**PARAMS, "seed": 11})
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
        await _gpu_once(worker.url, tmp_path, {**PARAMS, "width": -5})
    assert calls == 1, "a validation error must not be retried"


async def test_global_limit_is_created_and_taken(worker: PreviewWorkerThread, tmp_path: Path) -> None:
    result = await _gpu_once(worker.url, tmp_path, {**PARAMS, "seed": 12}, global_limits=True)
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


async def test_s3_result_block_is_saved_once_per_store(
    s3_settings: StoreSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect_aws import S3Bucket

    import tasks.results

    saves: list[str] = []
    real_save = S3Bucket.asave

    async def counting_save(self: Any, name: str, *args: Any, **kwargs: Any) -> Any:
        saves.append(name)
        return await real_save(self, name, *args, **kwargs)

    monkeypatch.setattr(S3Bucket, "asave", counting_save)
    first = await tasks.results.result_storage_for(s3_settings)
    assert saves == [tasks.results.block_name(s3_settings)]
    tasks.results._saved.clear()  # a new process: nothing remembered but the block on the server
    again = await tasks.results.result_storage_for(s3_settings)
    assert saves == [tasks.results.block_name(s3_settings)], "an unchanged store must not save its block again"
    assert again.bucket_folder == first.bucket_folder
    # New credentials for the same store: the block is saved again, so results stay readable.
    rotated = s3_settings.model_copy(update={"s3_secret_access_key": SecretStr("rotated-secret")})
    await tasks.results.result_storage_for(rotated)
    assert len(saves) == 2


async def test_a_training_set_stage_feeds_the_lora_training_stage(tmp_path: Path) -> None:
    """dataset (CPU) -> lora_train (GPU, folder parameter) -> a stored .safetensors the worker never listed."""
    from PIL import Image
    from safetensors.numpy import load_file

    from tasks.stages import DATASET

    store = LocalStore(tmp_path / "store")
    refs = {}
    for i in range(3):
        path = tmp_path / f"v{i}.png"
        Image.new("RGB", (64, 64), (60 * i, 90, 30)).save(path)
        data = path.read_bytes()
        refs[f"image{i:02d}"] = store.put_bytes(data, content_key("inputs/", sha256_bytes(data), ".png"))
    captions = [f"rftest, pose {i}" for i in range(3)]

    async def body(runner: StageRunner) -> tuple[StageRecord, StageRecord]:
        dataset = await runner.run(
            DATASET, {"trigger": "rftest", "captions": captions}, inputs=refs, place="t/dataset/", job_id="ds"
        )
        lora = await runner.run(
            Stage.gpu("lora_train"), {"steps": 4, "rank": 4, "seed": 1},
            inputs={"folder": dataset.refs[0]}, place="t/lora/", job_id="train",
        )
        return dataset, lora

    async with PreviewWorker(tmp_path / "w", name="trainer") as worker:
        dataset, lora = await in_flow(settings_for(worker.url, tmp_path / "store"), body)
    assert dataset.record["images"] == 3 and dataset.outputs[0].key.endswith(".zip")
    (out,) = lora.outputs
    assert out.kind == "lora" and out.key.endswith(".safetensors") and out.node_id
    assert lora.inputs["folder"].sha256 == dataset.outputs[0].sha256
    tensors = load_file(str(store.path_for(out.key)))
    assert any(k.endswith("lora_down.weight") and v.shape[0] == 4 for k, v in tensors.items())
