"""The scorer protocol and the one loop every embedding scorer shares (check files, embed, compare).

A scorer turns an image file into an embedding, or a reason it has none; ``score_embeddings`` checks that
every file exists (all missing ones reported at once), embeds references and candidates and hands them to
the pure ``build_scores``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, TypeVar, runtime_checkable

from reelforge.identity.errors import IdentityInputError
from reelforge.identity.scores import Embedded, IdentityScores, build_scores

__all__ = ["IdentityScorer", "score_embeddings"]

E = TypeVar("E")


@runtime_checkable
class IdentityScorer(Protocol):
    """Scores how much each candidate image shows the subject of the reference images (0..1)."""

    @property
    def name(self) -> str: ...

    @property
    def threshold(self) -> float: ...

    def score(self, references: Sequence[Path], candidates: Sequence[Path]) -> IdentityScores: ...


def score_embeddings(
    scorer: str,
    threshold: float,
    references: Sequence[Path],
    candidates: Sequence[Path],
    embed: Callable[[Path], Embedded[E]],
    similarity: Callable[[E, E], float],
) -> IdentityScores:
    """Embed every file and compare; ``IdentityInputError`` names every missing file at once."""
    refs, cands = [Path(p) for p in references], [Path(p) for p in candidates]
    missing = [p for p in (*refs, *cands) if not p.is_file()]
    if missing:
        raise IdentityInputError(
            f"identity scorer {scorer!r}: no such file: {', '.join(str(p) for p in missing)}",
            scorer=scorer,
            paths=missing,
            reasons=["no such file"] * len(missing),
        )
    return build_scores(scorer, threshold, [embed(p) for p in refs], [embed(p) for p in cands], similarity)
