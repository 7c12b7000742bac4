"""Batches on the engine side (no Prefect): reading the CSV from a path or S3, claiming names across the
system, the budget, and the summary record. The flow is flows/batch.py; the pure CSV and generation logic is
reelforge.characters.batch."""

from reelforge.batch.budget import Budget
from reelforge.batch.claims import NameClaims, resolve_names
from reelforge.batch.source import read_source
from reelforge.batch.summary import BatchSummary, BatchTotals, RowOutcome, RowStatus

__all__ = [
    "BatchSummary",
    "BatchTotals",
    "Budget",
    "NameClaims",
    "RowOutcome",
    "RowStatus",
    "read_source",
    "resolve_names",
]
