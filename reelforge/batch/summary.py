"""A batch's summary: one outcome per row and the totals, stored as ``batches/<batch id>/summary.json``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

__all__ = ["BatchSummary", "BatchTotals", "RowOutcome", "RowStatus"]

RowStatus = Literal["pending", "running", "completed", "failed", "rejected", "skipped", "cancelled"]


class RowOutcome(BaseModel):
    """What became of one row: ``rejected`` (a bad row, never run), ``skipped`` (the budget), ``failed``."""

    row: int
    name: str
    slug: str | None = None
    status: RowStatus = "pending"
    error: str | None = None
    manifest_key: str | None = None
    version: int | None = None
    flow_run_id: str | None = None
    gpu_seconds: float = 0.0
    cost: float = 0.0
    executed: int = 0
    cached: int = 0
    role: str | None = None
    renamed_from: str | None = None  # the name asked for, when it was taken and a suffix made it unique
    score: float | None = None  # the identity score of its LoRA
    attempts: int = 0  # runs of its character started (more than 1: run again after an infrastructure failure)


class BatchTotals(BaseModel):
    rows: int = 0
    completed: int = 0
    failed: int = 0
    rejected: int = 0
    skipped: int = 0
    cancelled: int = 0
    gpu_seconds: float = 0.0
    cost: float = 0.0
    wall_s: float = 0.0


class BatchSummary(BaseModel):
    """The record of one batch run (kept current while it runs, final when it ends)."""

    batch_id: str
    source: str
    seed: int
    group: str | None = None
    flow_run_id: str | None = None
    state: Literal["running", "completed", "failed", "cancelled"] = "running"
    budget: dict[str, float | None] = Field(default_factory=dict)
    rows: list[RowOutcome] = Field(default_factory=list)
    totals: BatchTotals = Field(default_factory=BatchTotals)

    def tally(self, wall_s: float) -> None:
        t = BatchTotals(rows=len(self.rows), wall_s=round(wall_s, 3))
        for r in self.rows:
            if r.status in ("completed", "failed", "rejected", "skipped", "cancelled"):
                setattr(t, r.status, getattr(t, r.status) + 1)
            t.gpu_seconds += r.gpu_seconds
            t.cost += r.cost
        t.gpu_seconds, t.cost = round(t.gpu_seconds, 3), round(t.cost, 6)
        self.totals = t

    @property
    def succeeded(self) -> bool:
        return all(r.status == "completed" for r in self.rows)
