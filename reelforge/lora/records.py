"""Versioned LoRA records per character in the store (keys: ``reelforge.lora.keys``).

``store_lora(store, file, fields)`` validates the file (unless a report comes with it), claims the next
``loras/<slug>/v<N>/`` (``store.reserve_version``: two writers never share a number), stores the file under its
content hash, then writes ``record.json`` create-if-absent. A failure after the claim gives the version up
(``store.abandon`` with the reason); nothing is overwritten and numbers are never reused. Storing the same file
for the same dataset and training config again returns the existing record (a retried stage makes no v2).

Test scores and the verdict come later, from another stage: ``record_verdict`` writes ``verdict.json`` once
beside the record, and every read returns the record with them filled in.

Plain Python over the store interface (sync: async callers use ``asyncio.to_thread``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from reelforge.liveness import Holder
from reelforge.lora.errors import LoraError, LoraInvalid, LoraNotFound, LoraRecordError
from reelforge.lora.keys import (
    RECORD,
    lora_file_key,
    lora_prefix,
    lora_record_key,
    lora_verdict_key,
    parse_lora_key,
)
from reelforge.lora.report import LoraFamily, LoraReport
from reelforge.lora.validate import DEFAULT_MAX_BYTES, validate_lora
from reelforge.storage import ArtifactMissing, ArtifactStore, StoreConflict, StoreError

__all__ = [
    "LoraFields",
    "LoraRecord",
    "LoraVerdict",
    "TrainingConfig",
    "Verdict",
    "latest_lora",
    "list_loras",
    "read_lora",
    "record_verdict",
    "store_lora",
]

Verdict = Literal["accepted", "rejected"]
_SHA256 = r"^[0-9a-f]{64}$"
_SLUG = r"^[A-Za-z0-9_-]+$"


class TrainingConfig(BaseModel):
    """How a LoRA was (or is to be) trained; the external trainer's config files are built from it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    steps: int = Field(ge=1)
    rank: int = Field(ge=1, le=1024)
    learning_rate: float = Field(gt=0, le=1)
    base_model: str = Field(min_length=1)  # a checkpoint file name, a path, or a Hugging Face repo id
    resolution: int = Field(default=1024, ge=64, le=8192)
    trainer: str = Field(default="comfyui", min_length=1)  # comfyui | ai-toolkit | kohya | another name
    alpha: float | None = Field(default=None, gt=0)  # None: the trainer's default (= rank for external ones)
    batch_size: int = Field(default=1, ge=1)
    seed: int = Field(default=0, ge=0)
    optimizer: str | None = None  # None: the trainer's default
    trigger_word: str | None = None


class LoraFields(BaseModel):
    """What the caller knows about a LoRA before it is stored (the rest comes from the file and the store)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    character: str = Field(min_length=1)  # the real name, as in the character manifest
    slug: str = Field(pattern=_SLUG)  # the character's folder slug
    character_type: str = Field(min_length=1)
    character_version: int | None = Field(default=None, ge=1)  # the character version it was trained for
    base_model: str = Field(min_length=1)
    family: LoraFamily | None = None  # expected base model family; None: not checked, taken from the file
    training: TrainingConfig
    dataset_sha256: str = Field(pattern=_SHA256)


class LoraRecord(BaseModel):
    """One stored LoRA version: ``loras/<slug>/v<N>/record.json`` (``test_scores``/``verdict`` come later)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    character: str
    slug: str = Field(pattern=_SLUG)
    character_type: str
    character_version: int | None = None
    version: int = Field(ge=1)
    file_key: str
    size: int = Field(ge=0)
    sha256: str = Field(pattern=_SHA256)
    base_model: str
    family: LoraFamily
    training: TrainingConfig
    dataset_sha256: str = Field(pattern=_SHA256)
    validation: LoraReport
    test_scores: dict[str, float] | None = None
    verdict: Verdict | None = None
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @property
    def record_key(self) -> str:
        return lora_record_key(self.slug, self.version)


class LoraVerdict(BaseModel):
    """``verdict.json``: what the test stage made of a LoRA version."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    verdict: Verdict | None = None
    test_scores: dict[str, float] = Field(default_factory=dict)
    note: str | None = None
    judged_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


def _json(model: BaseModel) -> bytes:
    return (model.model_dump_json(indent=2) + "\n").encode("utf-8")


def store_lora(
    store: ArtifactStore,
    file: Path | str,
    record_fields: LoraFields | Mapping[str, Any],
    *,
    report: LoraReport | None = None,
    holder: Holder | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> LoraRecord:
    """Validate ``file`` (unless ``report`` is its report), store it as the character's next LoRA version.

    Raises ``LoraInvalid`` before anything is written, storage errors from the store (the version is then
    given up), ``LoraError`` when the stored bytes are not the ones validated.
    """
    fields = record_fields if isinstance(record_fields, LoraFields) else LoraFields.model_validate(record_fields)
    path = Path(file)
    if report is None:
        report = validate_lora(path, expected_rank=fields.training.rank, family=fields.family, max_bytes=max_bytes)
    elif report.problems:
        raise LoraInvalid(path=str(path), problems=report.problems, report=report)

    for existing in _records(store, fields.slug):
        if (
            existing.sha256 == report.sha256
            and existing.dataset_sha256 == fields.dataset_sha256
            and existing.training == fields.training
        ):
            return existing  # the same LoRA stored before (a retried stage): no second version

    prefix = lora_prefix(fields.slug)
    version = store.reserve_version(prefix, holder or Holder.current(label=f"lora {fields.slug}"))
    try:
        # No sha256 handed to the store: it hashes what it stores (S3 would trust a given digest), so a file
        # replaced since validation is caught below on either store.
        ref = store.put_file(path, lora_file_key(fields.slug, version, report.sha256), kind="lora")
        if ref.sha256 != report.sha256:
            raise LoraError(
                f"{path}: changed after validation (stored sha256 {ref.sha256[:12]}, validated {report.sha256[:12]})",
                path=str(path),
            )
        record = LoraRecord(
            character=fields.character,
            slug=fields.slug,
            character_type=fields.character_type,
            character_version=fields.character_version,
            version=version,
            file_key=ref.key,
            size=ref.size,
            sha256=ref.sha256,
            base_model=fields.base_model,
            family=report.family,
            training=fields.training,
            dataset_sha256=fields.dataset_sha256,
            validation=report,
        )
        store.put_new(_json(record), record.record_key, kind="json")
    except BaseException as exc:
        with contextlib.suppress(StoreError):  # the store may be the very thing that failed
            store.abandon(prefix, version, reason=f"store_lora failed: {type(exc).__name__}: {exc}"[:500])
        raise
    return record


def _parse_record(data: bytes, key: str) -> LoraRecord:
    try:
        record = LoraRecord.model_validate_json(data)
    except ValidationError as exc:
        raise LoraRecordError(
            f"{key}: not a LoRA record ({exc.error_count()} errors: {exc.errors()[0]['msg']})", key=key
        ) from exc
    if record.record_key != key:
        raise LoraRecordError(f"{key}: the record says {record.slug!r} v{record.version}", key=key)
    return record


def _with_verdict(store: ArtifactStore, record: LoraRecord, keys: set[str] | None = None) -> LoraRecord:
    key = lora_verdict_key(record.slug, record.version)
    if keys is not None and key not in keys:
        return record
    try:
        verdict = LoraVerdict.model_validate_json(store.read_bytes(key))
    except ArtifactMissing:
        return record
    except ValidationError as exc:
        raise LoraRecordError(f"{key}: not a LoRA verdict ({exc.errors()[0]['msg']})", key=key) from exc
    return record.model_copy(update={"verdict": verdict.verdict, "test_scores": dict(verdict.test_scores)})


def _records(store: ArtifactStore, slug: str | None = None) -> list[LoraRecord]:
    keys = set(store.list(lora_prefix(slug)))
    found: list[tuple[str, int, str]] = []
    for key in keys:
        parsed = parse_lora_key(key)
        if parsed is not None and parsed[2] == RECORD and (slug is None or parsed[0] == slug):
            found.append((parsed[0], parsed[1], key))
    records = []
    for _slug, _version, key in sorted(found):
        records.append(_with_verdict(store, _parse_record(store.read_bytes(key), key), keys))
    return records


def list_loras(store: ArtifactStore) -> list[LoraRecord]:
    """Every stored LoRA version, by slug then version (verdicts filled in)."""
    return _records(store)


def latest_lora(store: ArtifactStore, slug: str) -> LoraRecord | None:
    """The highest stored version of ``slug``'s LoRA, None when it has none."""
    records = _records(store, slug)
    return records[-1] if records else None


def read_lora(store: ArtifactStore, slug: str, version: int | None = None) -> LoraRecord:
    """One version of ``slug``'s LoRA (the latest when ``version`` is None); ``LoraNotFound`` when absent."""
    if version is None:
        latest = latest_lora(store, slug)
        if latest is None:
            raise LoraNotFound(f"no LoRA stored for {slug!r}", slug=slug)
        return latest
    key = lora_record_key(slug, version)
    try:
        data = store.read_bytes(key)
    except ArtifactMissing as exc:
        raise LoraNotFound(f"no LoRA v{version} stored for {slug!r}", slug=slug, version=version) from exc
    return _with_verdict(store, _parse_record(data, key))


def record_verdict(
    store: ArtifactStore,
    slug: str,
    version: int,
    *,
    verdict: Verdict | None,
    test_scores: Mapping[str, float] | None = None,
    note: str | None = None,
) -> LoraRecord:
    """Write ``verdict.json`` for a stored version (once: ``StoreConflict`` if it has one); the updated record."""
    record = read_lora(store, slug, version)
    if record.verdict is not None or record.test_scores is not None:
        raise StoreConflict(
            f"LoRA {slug} v{version} already has a verdict", key=lora_verdict_key(slug, version), operation="put"
        )
    judged = LoraVerdict(verdict=verdict, test_scores=dict(test_scores or {}), note=note)
    store.put_new(_json(judged), lora_verdict_key(slug, version), kind="json")
    return record.model_copy(update={"verdict": judged.verdict, "test_scores": dict(judged.test_scores)})
