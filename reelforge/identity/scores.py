"""What a scoring run reports (pydantic records) and the pure rule that turns similarities into it.

Per candidate: its similarity to each usable reference, ``score`` = the mean (0..1), ``best`` = the highest;
it passes when it is scorable and ``score >= threshold``. An unscorable candidate (no face found, a flat
region, an undecodable file) has ``score`` None and a ``reason``, and fails. ``overall`` is the mean of the
candidates' scores with unscorable ones counted as 0; the run ``passed`` when every candidate passed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from reelforge.identity.errors import IdentityInputError, NoUsableReference

__all__ = ["CandidateScore", "Embedded", "IdentityScores", "ReferenceStatus", "build_scores"]

E = TypeVar("E")


class ReferenceStatus(BaseModel):
    model_config = ConfigDict(frozen=True)

    path: Path
    scorable: bool
    reason: str | None = None


class CandidateScore(BaseModel):
    model_config = ConfigDict(frozen=True)

    path: Path
    scorable: bool
    score: float | None = None  # mean similarity to the usable references, 0..1
    best: float | None = None  # highest similarity to one reference
    passed: bool = False
    reason: str | None = None  # why it is unscorable, or why it failed


class IdentityScores(BaseModel):
    """The outcome of one ``IdentityScorer.score`` call (small: goes into a stage's record as it is)."""

    model_config = ConfigDict(frozen=True)

    scorer: str
    threshold: float
    references: list[ReferenceStatus]
    candidates: list[CandidateScore]
    overall: float
    passed: bool
    failing: list[Path]

    @property
    def best(self) -> CandidateScore | None:
        """The highest-scoring candidate (to keep the best attempt when retries run out), None if none scored."""
        scored = [c for c in self.candidates if c.score is not None]
        return max(scored, key=lambda c: c.score or 0.0) if scored else None


@dataclass(frozen=True)
class Embedded(Generic[E]):
    """One image's embedding, or why it has none."""

    path: Path
    embedding: E | None
    reason: str | None = None


def build_scores(
    scorer: str,
    threshold: float,
    references: Sequence[Embedded[E]],
    candidates: Sequence[Embedded[E]],
    similarity: Callable[[E, E], float],
) -> IdentityScores:
    """Compare every candidate with every usable reference; raise when there is nothing to compare with."""
    if not candidates:
        raise IdentityInputError("no candidate images to score", scorer=scorer)
    usable = [r.embedding for r in references if r.embedding is not None]
    if not usable:
        bad = list(references)
        detail = "; ".join(f"{r.path.name}: {r.reason}" for r in bad) or "no reference images given"
        raise NoUsableReference(
            f"identity scorer {scorer!r} found no usable reference ({detail})",
            scorer=scorer,
            paths=[r.path for r in bad],
            reasons=[r.reason or "" for r in bad],
        )
    results: list[CandidateScore] = []
    for cand in candidates:
        if cand.embedding is None:
            results.append(CandidateScore(path=cand.path, scorable=False, reason=cand.reason))
            continue
        sims = [min(1.0, max(0.0, float(similarity(ref, cand.embedding)))) for ref in usable]
        mean = sum(sims) / len(sims)
        ok = mean >= threshold
        results.append(
            CandidateScore(
                path=cand.path,
                scorable=True,
                score=round(mean, 6),
                best=round(max(sims), 6),
                passed=ok,
                reason=None if ok else f"score {mean:.3f} below threshold {threshold:.3f}",
            )
        )
    return IdentityScores(
        scorer=scorer,
        threshold=threshold,
        references=[
            ReferenceStatus(path=r.path, scorable=r.embedding is not None, reason=r.reason) for r in references
        ],
        candidates=results,
        overall=round(sum(c.score or 0.0 for c in results) / len(results), 6),
        passed=all(c.passed for c in results),
        failing=[c.path for c in results if not c.passed],
    )
