"""The character flow under Prefect's harness: storage, content caching, artifacts, events, S3."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from PIL import Image
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import Artifact
from prefect.exceptions import ParameterTypeError
from pydantic import ValidationError

from flows.character import CharacterResult, character_flow
from reelforge.comfy import NoHealthyWorkers
from reelforge.liveness import Holder
from reelforge.preview.server import PreviewWorker, PreviewWorkerThread
from reelforge.settings import StoreSettings
from reelforge.storage import LocalStore, StoreError, open_store
from reelforge.storage.lineage import read_manifest
from reelforge.templates import TemplateError


@pytest.fixture(scope="module")
def workers() -> Iterator[list[PreviewWorkerThread]]:
    """Two preview workers that outlive flow runs, so a test can count the prompts they were sent."""
    threads = [PreviewWorkerThread(PreviewWorker(latency="fixed:0.05", name=f"w{i}")) for i in range(2)]
    for thread in threads:
        thread.start()
    yield threads
    for thread in threads:
        thread.stop()


@pytest.fixture
def fleet(workers: list[PreviewWorkerThread], monkeypatch: pytest.MonkeyPatch) -> list[PreviewWorkerThread]:
    monkeypatch.setenv("REELFORGE_COMFY_URLS", ",".join(w.url for w in workers))
    return workers


@pytest.fixture
def store_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "store"
    monkeypatch.setenv("REELFORGE_STORE", str(root))
    # No regeneration of near-duplicates here (they are kept and noted), so stage counts do not depend on how
    # alike the preview's pictures are; the regeneration path has tests of its own.
    monkeypatch.setenv("REELFORGE_DEDUP_RETRIES", "0")
    return root


LIGHT: dict[str, Any] = {"lora": False, "intro": False}  # images and voice only: the fast runs


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prompts_sent(workers: list[PreviewWorkerThread]) -> int:
    return sum(w.stats.prompts_executed for w in workers)


def flow_run_id(result: CharacterResult) -> UUID:
    assert result.run_manifest_key is not None
    return UUID(result.run_manifest_key.split("/")[1])


def gpu(result: CharacterResult) -> list[dict[str, Any]]:
    return [row for row in result.jobs if row["kind"] == "gpu"]


def status(result: CharacterResult, kind: str = "gpu") -> list[str]:
    return [str(row["status"]) for row in sorted(result.jobs, key=lambda r: str(r["job"])) if row["kind"] == kind]


async def test_second_run_is_cached_and_a_change_reruns_only_changed_jobs(
    fleet: list[PreviewWorkerThread], store_dir: Path
) -> None:
    first = await character_flow(name="Cache Person", variations=2, width=320, height=256, **LIGHT)
    # 4 GPU stages (base, 2 variations, voice) and 4 CPU stages (3 perceptual hashes, the voice's check).
    assert (first.executed, first.cached, first.version) == (8, 0, 1)
    store = LocalStore(store_dir)
    refs = [first.base, *first.variations]
    assert len({r.sha256 for r in refs}) == 3
    for ref in refs:
        assert store.exists(ref.key)
        assert ref.key.startswith("characters/cache-person/v1/")
        assert ref.key.rsplit("/", 1)[-1] == f"{ref.sha256[:16]}.png"
        with Image.open(store.path_for(ref.key)) as image:
            assert image.size == (320, 256)
        assert len(first.phashes[ref.key]) == 16
    assert [r.key.split("/")[3] for r in refs] == ["base", "variations", "variations"]
    manifest = read_manifest(store, first.manifest_key)
    assert manifest.kind == "character" and manifest.name == "Cache Person" and manifest.version == 1
    assert len(manifest.stages) == 8 and len(manifest.artifacts) == 4  # 3 images and the voice
    base_record = next(s for s in manifest.stages if s.job_id.endswith("-base"))
    assert base_record.stage == "character_base_realistic" and base_record.job and base_record.job.worker
    variation = next(s for s in manifest.stages if s.job_id.endswith("-var00"))
    assert variation.inputs["image"].sha256 == first.base.sha256  # lineage: variation <- base
    assert store.exists(first.run_manifest_key or "")
    # Task results are small references, persisted beside the store.
    results = list((store_dir / ".prefect-results").iterdir())
    assert results and max(p.stat().st_size for p in results) < 64 * 1024

    sent = prompts_sent(fleet)
    second = await character_flow(name="Cache Person", variations=2, width=320, height=256, **LIGHT)
    assert (second.executed, second.cached, second.version) == (0, 8, 2)
    assert prompts_sent(fleet) == sent, "a cached run must not send any prompt to the workers"
    assert [r.sha256 for r in [second.base, *second.variations]] == [r.sha256 for r in refs]
    assert {row["status"] for row in second.jobs} == {"cached"}
    assert all(s.cached for s in read_manifest(store, second.manifest_key).stages)
    assert second.phashes == first.phashes

    # One more variation: only that job (and its hash) runs.
    third = await character_flow(name="Cache Person", variations=3, width=320, height=256, **LIGHT)
    assert (third.executed, third.cached) == (2, 8)
    assert prompts_sent(fleet) == sent + 1
    assert status(third) == ["cached", "cached", "cached", "executed", "cached"]  # base, var00-02, voice

    # A cached result whose artifact was deleted from the store is computed again.
    store.path_for(first.variations[0].key).unlink()
    fourth = await character_flow(name="Cache Person", variations=1, width=320, height=256, **LIGHT)
    assert status(fourth) == ["cached", "executed", "cached"]
    assert store.exists(fourth.variations[0].key)


async def test_two_runs_of_one_character_at_once_become_v1_and_v2(
    fleet: list[PreviewWorkerThread], store_dir: Path
) -> None:
    results = await asyncio.gather(
        *(character_flow(name="Twin Run", variations=1, width=256, height=256, **LIGHT) for _ in range(2))
    )
    assert sorted(r.version for r in results) == [1, 2]
    store = LocalStore(store_dir)
    for result in results:
        assert read_manifest(store, result.manifest_key).version == result.version
    # The GPU work was done once: the second run waited on the cache lock and reused it.
    assert sorted(r.executed for r in results)[0] == 0
    assert [v.state for v in store.versions("characters/twin-run/")] == ["complete", "complete"]


async def test_names_that_are_not_latin_keep_their_name_and_get_distinct_slugs(
    fleet: list[PreviewWorkerThread], store_dir: Path
) -> None:
    korean = await character_flow(name="김민아", variations=1, width=256, height=256, **LIGHT)
    emoji = await character_flow(name="🎤🎶", variations=1, width=256, height=256, **LIGHT)
    assert korean.slug != emoji.slug and "character" not in (korean.slug, emoji.slug)
    assert (korean.version, emoji.version) == (1, 1)
    store = LocalStore(store_dir)
    assert read_manifest(store, korean.manifest_key).name == "김민아"
    assert read_manifest(store, emoji.manifest_key).name == "🎤🎶"
    with pytest.raises(ValidationError, match="name"):
        await character_flow(name="   ", variations=1)


async def test_bad_parameters_fail_with_field_errors_before_any_gpu_time(
    fleet: list[PreviewWorkerThread], store_dir: Path
) -> None:
    sent = prompts_sent(fleet)
    with pytest.raises(ParameterTypeError, match="variations"):
        await character_flow(name="Bounds", variations=-3)
    with pytest.raises(ParameterTypeError, match="variations"):
        await character_flow(name="Bounds", variations=0)
    with pytest.raises(ValueError, match="variations: 9 is above REELFORGE_MAX_VARIATIONS=8"):
        with pytest.MonkeyPatch.context() as env:
            env.setenv("REELFORGE_MAX_VARIATIONS", "8")
            await character_flow(name="Bounds", variations=9)
    with pytest.raises(ValueError, match=r"voice_ref: '/nonexistent/clip\.wav' is not a readable file"):
        await character_flow(name="Bounds", variations=1, voice_ref="/nonexistent/clip.wav")
    assert prompts_sent(fleet) == sent
    # A parameter only the template knows is wrong (SDXL wants >= 512): the run fails before any GPU time and
    # gives its reserved version up at once, with the reason.
    with pytest.raises(TemplateError, match="width"):
        await character_flow(name="Bounds", character_type="mascot", variations=1, width=256, height=256, **LIGHT)
    assert prompts_sent(fleet) == sent
    store = LocalStore(store_dir)
    (info,) = store.versions("characters/bounds/")
    assert info.state == "abandoned" and "TemplateError" in store.read_bytes(info.prefix + "abandoned.json").decode()


async def test_unreachable_workers_fail_at_once_naming_each(
    store_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    closed = [f"http://127.0.0.1:{free_port()}" for _ in range(2)]
    monkeypatch.setenv("REELFORGE_COMFY_URLS", ",".join(closed))
    monkeypatch.setenv("REELFORGE_WORKER_GRACE_S", "1.5")
    begin = time.monotonic()
    with pytest.raises(NoHealthyWorkers) as failed:
        await character_flow(name="Nobody Home", variations=1)
    assert time.monotonic() - begin < 60, "no 300 s wait, no retries of it"
    message = str(failed.value)
    for url in closed:
        assert url.removeprefix("http://") in message
    assert "REELFORGE_WORKER_GRACE_S" in message and "ConnectError" in message
    warned = [r.getMessage() for r in caplog.records if "not healthy at start" in r.getMessage()]
    assert len(warned) == 2


async def test_debris_of_a_killed_run_is_swept_and_its_version_marked(
    fleet: list[PreviewWorkerThread], store_dir: Path
) -> None:
    """What a SIGKILL leaves (a job folder in /tmp, a version folder with a reservation and no manifest) is
    swept at the next start, and the version number of the dead run is never handed out again."""
    dead_pid = await asyncio.to_thread(lambda: subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                                                              capture_output=True, text=True, check=True).stdout)
    debris = Path(tempfile.gettempdir()) / f"reelforge-job-{int(dead_pid)}-test"
    (debris / "out").mkdir(parents=True)
    (debris / "out" / "partial.png").write_bytes(b"half an image")
    store = LocalStore(store_dir)
    killed = Holder.current(flow_run_id="killed-run").model_copy(update={"pid": int(dead_pid), "pid_started": None})
    assert store.reserve_version("characters/debris-person/", killed) == 1
    store.put_bytes(b"made before the kill", "characters/debris-person/v1/base/aaaa.png")

    result = await character_flow(name="Debris Person", variations=1, width=256, height=256, **LIGHT)
    assert result.version == 2
    assert not debris.exists(), "a dead process's job folder is swept at start"
    states = {v.number: v.state for v in store.versions("characters/debris-person/")}
    assert states == {1: "abandoned", 2: "complete"}
    assert store.exists("characters/debris-person/v1/abandoned.json")
    assert store.exists("characters/debris-person/v1/base/aaaa.png"), "nothing is deleted"


async def test_an_unwritable_store_is_found_before_the_run_starts(
    fleet: list[PreviewWorkerThread], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the store should be")
    monkeypatch.setenv("REELFORGE_STORE", str(blocker / "store"))
    sent = prompts_sent(fleet)
    with pytest.raises(StoreError) as failed:
        await character_flow(name="Nowhere", variations=1, **LIGHT)
    assert str(blocker) in str(failed.value) and prompts_sent(fleet) == sent


async def test_run_has_progress_table_gallery_and_events(
    fleet: list[PreviewWorkerThread], store_dir: Path, emitted: list[dict[str, Any]]
) -> None:
    result = await character_flow(name="Art Person", variations=1, width=256, height=256, **LIGHT)
    run_id = flow_run_id(result)
    async with get_client() as client:
        # Raw filter call: prefect 3.8.8's read_artifacts sends null for omitted filters, which its server
        # refuses (422), and an empty task-run filter drops flow-level artifacts.
        response = await client._client.post(
            "/artifacts/filter",
            json={"artifacts": {"flow_run_id": {"any_": [str(run_id)]}}, "limit": 50, "sort": "CREATED_DESC"},
        )
        artifacts = [Artifact.model_validate(a) for a in response.json()]
    by_type = {a.type: a for a in artifacts}
    assert set(by_type) >= {"progress", "table", "markdown"}
    assert float(by_type["progress"].data) == 100.0  # type: ignore[arg-type]
    table = by_type["table"].data
    rows = json.loads(table) if isinstance(table, str) else table
    assert [r["status"] for r in rows] == ["executed"] * 6
    assert {r["stage"] for r in rows} == {
        "character_base_realistic", "character_variation_realistic", "phash", "voice_design", "audio_check"
    }
    assert by_type["table"].key == "character-art-person-jobs"
    markdown = str(by_type["markdown"].data)
    assert result.base.key in markdown and result.variations[0].key in markdown

    jobs = [e for e in emitted if e["event"] == "reelforge.job.completed"]
    assert sorted(e["resource"]["prefect.resource.id"] for e in jobs) == [
        "reelforge.job.art-person-v1-base",
        "reelforge.job.art-person-v1-var00",
        "reelforge.job.art-person-v1-voice",
    ]
    ready = [e for e in emitted if e["event"] == "reelforge.character.ready"]
    assert len(ready) == 1
    assert ready[0]["resource"]["prefect.resource.id"] == "reelforge.character.art-person"
    assert ready[0]["payload"]["manifest_key"] == result.manifest_key
    assert ready[0]["payload"]["jobs_executed"] == 6
    hashed = sorted(e["resource"]["prefect.resource.id"] for e in emitted if e["event"] == "reelforge.phash.completed")
    assert hashed == ["reelforge.job.art-person-v1-base-phash", "reelforge.job.art-person-v1-var00-phash"]


async def test_stylized_family_uses_sdxl_templates(fleet: list[PreviewWorkerThread], store_dir: Path) -> None:
    result = await character_flow(name="Bolt", character_type="mascot", variations=1, width=512, height=512, **LIGHT)
    assert result.family == "stylized"
    assert [row["stage"] for row in gpu(result)][:2] == ["character_base_stylized", "character_variation_stylized"]


async def test_s3_store_second_run_is_cached(
    fleet: list[PreviewWorkerThread], s3_settings: StoreSettings, s3_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REELFORGE_STORE", s3_settings.store)
    monkeypatch.setenv("REELFORGE_S3_ENDPOINT_URL", s3_settings.s3_endpoint_url or "")
    monkeypatch.setenv("REELFORGE_S3_REGION", s3_settings.s3_region or "")
    assert s3_settings.s3_access_key_id and s3_settings.s3_secret_access_key
    monkeypatch.setenv("REELFORGE_S3_ACCESS_KEY_ID", s3_settings.s3_access_key_id.get_secret_value())
    monkeypatch.setenv("REELFORGE_S3_SECRET_ACCESS_KEY", s3_settings.s3_secret_access_key.get_secret_value())
    first = await character_flow(name="Cloud Person", variations=1, width=256, height=256, **LIGHT)
    assert (first.executed, first.cached) == (6, 0)
    assert first.base.uri.startswith("s3://")
    bucket = s3_settings.store.removeprefix("s3://").split("/")[0]
    keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert any(".prefect-results/" in k for k in keys), keys
    sent = prompts_sent(fleet)
    second = await character_flow(name="Cloud Person", variations=1, width=256, height=256, **LIGHT)
    assert (second.executed, second.cached) == (0, 6)
    assert prompts_sent(fleet) == sent
    store = open_store(s3_settings)
    assert store.exists(second.base.key) and store.exists(second.manifest_key)
