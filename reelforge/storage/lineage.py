"""Lineage: what produced each artifact (stage, version, parameters, inputs, worker, GPU time, cost).

A ``StageRecord`` is one stage's work: its parameters and input artifacts (``ParentRef``), its stored outputs
(``StoredOutput``: an ``ArtifactRef`` plus the node that made it) and, for a GPU stage, the job's facts once
(``JobFacts``: prompt id, worker, GPU seconds, cost). A ``Manifest`` lists the stage records of one run,
character version or production, with the subject's real name, and is stored as JSON under a new key each time
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


StageKind = Literal["gpu", "thread", "process"]


class JobFacts(BaseModel):
    """Where a GPU job ran and what it cost: carried once per job, not copied onto each of its outputs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt_id: str
    worker: str
    worker_labels: list[str] = Field(default_factory=list)
    gpu_seconds: float = Field(default=0.0, ge=0)  # from the worker's own timestamps
    cost: float = Field(default=0.0, ge=0)  # gpu_seconds x price per GPU hour of the worker's label
    queued_s: float = Field(default=0.0, ge=0)  # client-side wait before execution started


class StoredOutput(ArtifactRef):
    """One stored output of a stage; ``node_id`` names the ComfyUI output node that made it (GPU stages)."""

    node_id: str | None = None


class StageRecord(BaseModel):
    """One stage's work: what it was asked (stage, version, parameters, inputs), what it stored, what it cost.

    This is what the stage task returns and what Prefect persists beside the store: small references, never
    bytes. ``cached`` and ``wall_s`` describe this flow run's use of it (set by the flow-side runner).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    stage: str  # the stage's name (a template name for GPU stages)
    version: str  # the stage's version (a template's content hash for GPU stages)
    kind: StageKind
    job_id: str  # the caller's name for this unit of work, e.g. mina-park-v1-var03
    cache_key: str
    params: dict[str, Any] = Field(default_factory=dict)
    inputs: dict[str, ParentRef] = Field(default_factory=dict)
    outputs: list[StoredOutput] = Field(default_factory=list)
    record: dict[str, Any] = Field(default_factory=dict)  # small typed facts, e.g. {"phash": "c3a1..."}
    job: JobFacts | None = None  # GPU stages only
    flow_run_id: str | None = None  # the run that executed it
    task_run_id: str | None = None
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    cached: bool = False
    wall_s: float = 0.0

    @property
    def refs(self) -> list[ArtifactRef]:
        return [ArtifactRef(**o.model_dump(exclude={"node_id"})) for o in self.outputs]

    @property
    def executed(self) -> bool:
        return not self.cached

    @property
    def gpu_seconds(self) -> float:
        return self.job.gpu_seconds if self.job else 0.0

    @property
    def cost(self) -> float:
        return self.job.cost if self.job else 0.0

    @property
    def seed(self) -> int | None:
        seed = self.params.get("seed")
        return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


class Manifest(BaseModel):
    """The stage records of one run / character version / production."""

    model_config = ConfigDict(extra="forbid")

    subject: str  # a flow run id, a character slug, a production slug
    kind: ManifestKind
    name: str | None = None  # the subject's real name as given (a slug is lossy: 김민아 -> gimmina-...)
    version: int | None = None
    stages: list[StageRecord] = Field(default_factory=list)
    details: dict[str, Any] = Field(default_factory=dict)  # the subject's own facts (spec, verdicts, ...)
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @property
    def artifacts(self) -> list[StoredOutput]:
        """Every stored output of every stage, in stage order."""
        return [o for stage in self.stages for o in stage.outputs]

    @property
    def total_gpu_seconds(self) -> float:
        """GPU seconds of the stages this run executed (cached ones were paid for by an earlier run)."""
        return sum(s.gpu_seconds for s in self.stages if not s.cached)

    @property
    def total_cost(self) -> float:
        return sum(s.cost for s in self.stages if not s.cached)


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
