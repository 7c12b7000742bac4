"""What the pHash index holds (``PhashEntry``), what a lookup answers (``Match``) and the segment format. Pure.

A segment is canonical JSON::

    {"format": "reelforge.phash-index.segment/1", "writer": "<writer id>", "seq": 3,
     "created_at": "2026-12-01T10:00:00Z",
     "entries": [{"phash": "c3a1...", "artifact_key": "characters/...png", "artifact_sha256": "<64 hex>",
                  "flow_run_id": "...", "job_id": "...", "created_at": "..."}, ...]}

``phash`` is written as 16 hex digits (JSON numbers above 2**53 do not survive every reader) and held in memory
as an ``int``. Entries are slotted dataclasses, not ``BaseModel``s: a million of them cost ~140 MB, not ~1 GB.
"""

from __future__ import annotations

import re
from dataclasses import field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import AwareDatetime, ConfigDict, TypeAdapter, ValidationError, field_serializer, field_validator
from pydantic.dataclasses import dataclass

from reelforge.dedup.errors import SegmentInvalid
from reelforge.storage import StageRecord

__all__ = ["SEGMENT_FORMAT", "Match", "PhashEntry", "Segment", "decode_segment", "encode_segment", "phash_int"]

SegmentFormat = Literal["reelforge.phash-index.segment/1"]
SEGMENT_FORMAT: SegmentFormat = "reelforge.phash-index.segment/1"
_HEX64 = re.compile(r"[0-9a-fA-F]{16}")


def phash_int(phash: int | str) -> int:
    """A 64-bit hash as an ``int``, from an ``int`` or 16 hex digits; ``ValueError`` for anything else."""
    if isinstance(phash, str):
        if not _HEX64.fullmatch(phash):
            raise ValueError(f"a pHash is 16 hex digits, got {phash[:40]!r}")
        return int(phash, 16)
    if isinstance(phash, bool) or not isinstance(phash, int) or not 0 <= phash < 1 << 64:
        raise ValueError(f"a pHash is an unsigned 64-bit integer, got {phash!r}")
    return phash


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True, config=ConfigDict(extra="forbid"))
class PhashEntry:
    """One stored image's hash: what it is (key, sha256), who made it (flow run, stage job) and when."""

    phash: int
    artifact_key: str
    artifact_sha256: str
    flow_run_id: str | None = None
    job_id: str | None = None
    created_at: AwareDatetime = field(default_factory=_now)

    @field_validator("phash", mode="before")
    @classmethod
    def _phash(cls, value: Any) -> int:
        return phash_int(value)

    @field_validator("artifact_sha256")
    @classmethod
    def _sha256(cls, value: str) -> str:
        if not re.fullmatch(r"[0-9a-f]{64}", value):
            raise ValueError("artifact_sha256 must be 64 lower-case hex digits")
        return value

    @field_serializer("phash", when_used="json")
    def _phash_hex(self, value: int) -> str:
        return f"{value:016x}"

    @property
    def phash_hex(self) -> str:
        return f"{self.phash:016x}"

    @classmethod
    def from_stage(cls, record: StageRecord, *, input_name: str = "image") -> PhashEntry:
        """The entry of a ``phash`` stage's record: its ``record["phash"]`` and its input image (key, sha256)."""
        if "phash" not in record.record or input_name not in record.inputs:
            raise ValueError(f"stage record {record.job_id!r} has no 'phash' record or no {input_name!r} input")
        image = record.inputs[input_name]
        return cls(
            phash=record.record["phash"],
            artifact_key=image.key,
            artifact_sha256=image.sha256,
            flow_run_id=record.flow_run_id,
            job_id=record.job_id,
            created_at=record.created_at,
        )


@dataclass(frozen=True, slots=True)
class Match:
    """A stored entry within the radius of a query, and its Hamming distance to it."""

    entry: PhashEntry
    distance: int


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class Segment:
    """One immutable batch of entries, written by one writer as its ``seq``-th segment."""

    format: SegmentFormat
    writer: str
    seq: int
    created_at: AwareDatetime
    entries: list[PhashEntry]


_SEGMENT = TypeAdapter(Segment)


def encode_segment(segment: Segment) -> bytes:
    """The segment's JSON bytes (compact; fields in declaration order)."""
    return _SEGMENT.dump_json(segment) + b"\n"


def decode_segment(data: bytes, key: str) -> Segment:
    """Parse a segment; ``SegmentInvalid`` (naming ``key``) for anything that is not one of this format."""
    try:
        return _SEGMENT.validate_json(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "the object"
        raise SegmentInvalid(key, f"{where}: {first.get('msg', 'invalid')} ({exc.error_count()} problems)") from exc
