"""Lineage: what produced each artifact (template, parameters, seed, worker, GPU time, cost, parents).

``ArtifactRecord`` is an ``ArtifactRef`` (same fields, flat in JSON) plus its provenance; a ``Manifest`` lists the
records of one run, character version or production and is stored as JSON under a new key each time
(``runs/<flow_run_id>/manifest.json``, ``characters/<slug>/v<version>/manifest.json``): manifests are never
rewritten, like every other artifact.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from reelforge.storage.base import ArtifactRef, ArtifactStore
from reelforge.storage.errors import StoreError
from reelforge.storage.keys import character_prefix, check_key, run_key

ManifestKind = Literal["run", "character", "production"]


class ParentRef(BaseModel):
    """An input artifact of a record (by content and key)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    key: str

    @classmethod
    def of(cls, ref: ArtifactRef) -> ParentRef:
        return cls(sha256=ref.sha256, key=ref.key)


class ArtifactRecord(ArtifactRef):
    """An artifact plus how it was made."""

    template: str | None = None
    template_version: str | None = None  # the template's content hash
    params: dict[str, Any] = Field(default_factory=dict)  # bound parameters
    seed: int | None = None
    worker: str | None = None
    worker_labels: list[str] = Field(default_factory=list)
    model_files: list[str] = Field(default_factory=list)
    gpu_seconds: float | None = Field(default=None, ge=0)  # from the worker's own timestamps
    cost: float | None = Field(default=None, ge=0)  # gpu_seconds x price per GPU hour of the worker's label
    parents: list[ParentRef] = Field(default_factory=list)
    job_id: str | None = None
    prompt_id: str | None = None
    flow_run_id: str | None = None
    task_run_id: str | None = None
    cached: bool = False
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @classmethod
    def from_ref(cls, ref: ArtifactRef, **lineage: Any) -> ArtifactRecord:
        """A record from a stored ref plus lineage fields (``template=..., seed=..., parents=[...]``)."""
        parents = [p if isinstance(p, ParentRef) else ParentRef.of(p) for p in lineage.pop("parents", [])]
        return cls(**ref.model_dump(), parents=parents, **lineage)

    def as_ref(self) -> ArtifactRef:
        return ArtifactRef(**self.model_dump(include=set(ArtifactRef.model_fields)))


class Manifest(BaseModel):
    """The records of one run / character version / production."""

    model_config = ConfigDict(extra="forbid")

    subject: str  # a flow run id, a character slug, a production slug
    kind: ManifestKind
    artifacts: list[ArtifactRecord] = Field(default_factory=list)
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @property
    def total_gpu_seconds(self) -> float:
        return sum(a.gpu_seconds or 0.0 for a in self.artifacts)

    @property
    def total_cost(self) -> float:
        return sum(a.cost or 0.0 for a in self.artifacts)


def cost_for(gpu_seconds: float | None, price_per_hour: float) -> float:
    """Cost of ``gpu_seconds`` at ``price_per_hour`` per GPU hour (0 when the time is unknown)."""
    if price_per_hour < 0:
        raise ValueError(f"price per hour must be >= 0, got {price_per_hour}")
    if gpu_seconds is None:
        return 0.0
    if gpu_seconds < 0:
        raise ValueError(f"gpu seconds must be >= 0, got {gpu_seconds}")
    return round(gpu_seconds / 3600.0 * price_per_hour, 6)


def run_manifest_key(flow_run_id: str) -> str:
    return run_key(flow_run_id, "manifest.json")


def character_manifest_key(slug: str, version: int) -> str:
    return f"{character_prefix(slug, version)}manifest.json"


def write_manifest(store: ArtifactStore, manifest: Manifest, key: str) -> ArtifactRef:
    """Store the manifest as JSON under ``key`` (write-once: the same manifest again is a no-op)."""
    check_key(key)
    return store.put_json(manifest.model_dump(mode="json"), key)


def read_manifest(store: ArtifactStore, key: str) -> Manifest:
    data = store.read_bytes(key)
    try:
        return Manifest.model_validate_json(data)
    except ValueError as exc:
        raise StoreError(f"{key!r} is not a valid manifest: {exc}") from exc
