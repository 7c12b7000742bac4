"""Versioned LoRA records in the store: keys, versions, dedup, verdicts, failures (local store and S3 on moto)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from safetensors.numpy import save_file

from reelforge.lora import (
    LoraError,
    LoraFields,
    LoraInvalid,
    LoraNotFound,
    LoraRecordError,
    TrainingConfig,
    latest_lora,
    list_loras,
    lora_file_key,
    lora_prefix,
    lora_record_key,
    parse_lora_key,
    read_lora,
    record_verdict,
    store_lora,
    validate_lora,
)
from reelforge.preview.nodes.training import make_lora
from reelforge.settings import StoreSettings
from reelforge.storage import LocalStore, StoreConflict, StoreFull, UnsafeKey, open_store

DATASET = "d" * 64


def lora_file(path: Path, *, seed: int = 1, rank: int = 8, family: str = "sdxl") -> Path:
    lora = make_lora(
        digest=f"{seed:02x}" * 32,
        family=family,
        algorithm="LoRA",
        rank=rank,
        steps=100,
        learning_rate=1e-4,
        lora_dtype="bf16",
        base_model="sd_xl_base_1.0.safetensors",
        metadata={},
    )
    save_file(dict(lora.tensors), str(path), metadata=lora.metadata)
    return path


def fields(name: str = "Mina Park", slug: str = "mina-park", *, rank: int = 8, **extra: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "character": name,
        "slug": slug,
        "character_type": "influencer",
        "base_model": "sd_xl_base_1.0.safetensors",
        "family": "sdxl",
        "training": {"steps": 100, "rank": rank, "learning_rate": 1e-4, "base_model": "sd_xl_base_1.0.safetensors"},
        "dataset_sha256": DATASET,
    }
    values.update(extra)
    return values


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def test_keys() -> None:
    sha = "0123456789abcdef" + "0" * 48
    assert lora_prefix() == "loras/"
    assert lora_prefix("mina-park") == "loras/mina-park/"
    assert lora_record_key("mina-park", 3) == "loras/mina-park/v3/record.json"
    assert lora_file_key("mina-park", 3, sha) == "loras/mina-park/v3/0123456789abcdef.safetensors"
    assert parse_lora_key("loras/mina-park/v3/record.json") == ("mina-park", 3, "record.json")
    assert parse_lora_key("loras/mina-park/v3/sub/record.json") is None
    assert parse_lora_key("characters/mina-park/v3/record.json") is None
    for bad in ("../x", "a/b", "", ".hidden", "mina park"):
        with pytest.raises(UnsafeKey):
            lora_prefix(bad)


def test_store_lora_writes_file_and_record(store: LocalStore, tmp_path: Path) -> None:
    path = lora_file(tmp_path / "trained.safetensors")
    record = store_lora(store, path, fields(character_version=2))
    assert (record.version, record.slug, record.character, record.character_version) == (1, "mina-park", "Mina Park", 2)
    assert record.file_key == lora_file_key("mina-park", 1, record.sha256)
    assert record.family == "sdxl" and record.validation.rank == 8 and record.validation.layout == "comfyui"
    assert record.size == path.stat().st_size
    assert record.training == TrainingConfig(
        steps=100, rank=8, learning_rate=1e-4, base_model="sd_xl_base_1.0.safetensors"
    )
    assert (record.test_scores, record.verdict) == (None, None)
    assert store.read_bytes(record.file_key) == path.read_bytes()
    assert store.ref(record.file_key).kind == "lora"
    stored = json.loads(store.read_bytes("loras/mina-park/v1/record.json"))
    assert stored["sha256"] == record.sha256 and stored["validation"]["family"] == "sdxl"
    assert read_lora(store, "mina-park") == record
    assert [v.number for v in store.versions(lora_prefix("mina-park"))] == [1]


def test_versions_latest_and_list(store: LocalStore, tmp_path: Path) -> None:
    one = store_lora(store, lora_file(tmp_path / "a.safetensors", seed=1), fields())
    two = store_lora(store, lora_file(tmp_path / "b.safetensors", seed=2), LoraFields.model_validate(fields()))
    other = store_lora(store, lora_file(tmp_path / "c.safetensors", seed=3), fields("Zoë", "zoe-c6a12698"))
    assert (one.version, two.version, other.version) == (1, 2, 1)
    latest = latest_lora(store, "mina-park")
    assert latest is not None and latest.sha256 == two.sha256
    assert read_lora(store, "mina-park", 1) == one
    assert [(r.slug, r.version) for r in list_loras(store)] == [("mina-park", 1), ("mina-park", 2), ("zoe-c6a12698", 1)]
    assert latest_lora(store, "nobody") is None


def test_the_same_lora_again_is_the_same_version(store: LocalStore, tmp_path: Path) -> None:
    path = lora_file(tmp_path / "a.safetensors")
    first = store_lora(store, path, fields())
    assert store_lora(store, path, fields()) == first  # a retried stage
    changed = store_lora(store, path, fields(dataset_sha256="e" * 64))  # same bytes, other data: a new version
    assert changed.version == 2
    assert [r.version for r in list_loras(store)] == [1, 2]


def test_invalid_lora_stores_nothing(store: LocalStore, tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_text("{}")
    with pytest.raises(LoraInvalid):
        store_lora(store, bad, fields())
    with pytest.raises(LoraInvalid) as caught:
        store_lora(store, lora_file(tmp_path / "r4.safetensors", rank=4), fields(rank=8))
    assert caught.value.codes == ["rank_mismatch"]
    with pytest.raises(LoraInvalid) as caught:
        store_lora(store, lora_file(tmp_path / "flux.safetensors", family="flux"), fields())
    assert caught.value.codes == ["family_mismatch"]
    assert store.list("loras/") == []


def test_a_report_given_is_not_validated_again(
    store: LocalStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = lora_file(tmp_path / "a.safetensors")
    report = validate_lora(path, expected_rank=8)

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("validated twice")

    monkeypatch.setattr("reelforge.lora.records.validate_lora", fail)
    assert store_lora(store, path, fields(), report=report).validation == report


def test_a_file_changed_after_validation_is_refused(store: LocalStore, tmp_path: Path) -> None:
    path = lora_file(tmp_path / "a.safetensors")
    report = validate_lora(path)
    lora_file(path, seed=9)  # replaced meanwhile
    with pytest.raises(LoraError, match="changed after validation") as caught:
        store_lora(store, path, fields(), report=report)
    assert caught.value.path == str(path)
    assert [v.state for v in store.versions(lora_prefix("mina-park"))] == ["abandoned"]


def test_missing_names(store: LocalStore, tmp_path: Path) -> None:
    with pytest.raises(LoraNotFound) as caught:
        read_lora(store, "mina-park")
    assert (caught.value.slug, caught.value.version) == ("mina-park", None)
    store_lora(store, lora_file(tmp_path / "a.safetensors"), fields())
    with pytest.raises(LoraNotFound, match="no LoRA v7 stored for 'mina-park'") as caught:
        read_lora(store, "mina-park", 7)
    assert caught.value.version == 7


def test_verdict_is_written_once_beside_the_record(store: LocalStore, tmp_path: Path) -> None:
    record = store_lora(store, lora_file(tmp_path / "a.safetensors"), fields())
    assert record.verdict is None
    judged = record_verdict(store, "mina-park", 1, verdict="accepted", test_scores={"identity": 0.91})
    assert (judged.verdict, judged.test_scores) == ("accepted", {"identity": 0.91})
    assert read_lora(store, "mina-park", 1) == judged
    assert list_loras(store) == [judged]
    assert json.loads(store.read_bytes(lora_record_key("mina-park", 1)))["verdict"] is None  # record untouched
    with pytest.raises(StoreConflict):
        record_verdict(store, "mina-park", 1, verdict="rejected")


def test_a_corrupt_record_names_its_key(store: LocalStore, tmp_path: Path) -> None:
    store.put_bytes(b"{not json", "loras/mina-park/v1/record.json")
    with pytest.raises(LoraRecordError) as caught:
        list_loras(store)
    assert caught.value.key == "loras/mina-park/v1/record.json"
    assert str(caught.value).startswith("loras/mina-park/v1/record.json: not a LoRA record")
    record = store_lora(store, lora_file(tmp_path / "a.safetensors"), fields("Zoe", "zoe"))
    store.put_bytes(store.read_bytes(record.record_key), "loras/zoe-b/v1/record.json")  # copied to another key
    with pytest.raises(LoraRecordError, match="the record says 'zoe' v1"):
        read_lora(store, "zoe-b", 1)


def test_a_failed_record_write_gives_the_version_up(
    store: LocalStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_put_new = store.put_new

    def full(data: bytes, key: str, **kwargs: Any) -> Any:
        if key.endswith("record.json"):
            raise StoreFull("no space left", key=key, operation="put")
        return real_put_new(data, key, **kwargs)

    monkeypatch.setattr(store, "put_new", full)
    with pytest.raises(StoreFull):
        store_lora(store, lora_file(tmp_path / "a.safetensors"), fields())
    monkeypatch.undo()
    marker = json.loads(store.read_bytes("loras/mina-park/v1/abandoned.json"))
    assert "StoreFull" in marker["reason"]
    assert list_loras(store) == []
    assert store_lora(store, tmp_path / "a.safetensors", fields()).version == 2  # numbers are never reused


def test_concurrent_writers_get_distinct_versions(store: LocalStore, tmp_path: Path) -> None:
    paths = [lora_file(tmp_path / f"{i}.safetensors", seed=i + 1) for i in range(4)]
    versions: list[int] = []
    errors: list[BaseException] = []

    def work(path: Path) -> None:
        try:
            versions.append(store_lora(store, path, fields()).version)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(p,)) for p in paths]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(versions) == [1, 2, 3, 4]


def test_on_s3(s3_settings: StoreSettings, tmp_path: Path) -> None:
    store = open_store(s3_settings)
    one = store_lora(store, lora_file(tmp_path / "a.safetensors", seed=1), fields())
    two = store_lora(store, lora_file(tmp_path / "b.safetensors", seed=2), fields())
    assert (one.version, two.version) == (1, 2)
    assert store.read_bytes(two.file_key) == (tmp_path / "b.safetensors").read_bytes()
    assert [r.version for r in list_loras(store)] == [1, 2]
    assert read_lora(store, "mina-park") == two
    judged = record_verdict(store, "mina-park", 2, verdict="rejected", test_scores={"identity": 0.4}, note="drift")
    assert latest_lora(store, "mina-park") == judged
