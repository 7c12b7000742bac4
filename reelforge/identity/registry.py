"""Scorers by name: ``appearance`` (default, no weights) and ``face`` (the ``identity`` extra)."""

from __future__ import annotations

from collections.abc import Callable

from reelforge.identity.appearance import AppearanceScorer
from reelforge.identity.base import IdentityScorer
from reelforge.identity.errors import UnknownScorer
from reelforge.identity.face import FaceScorer

__all__ = ["DEFAULT_SCORER", "SCORERS", "scorer_by_name"]

DEFAULT_SCORER = "appearance"


def _appearance(threshold: float | None) -> IdentityScorer:
    return AppearanceScorer() if threshold is None else AppearanceScorer(threshold=threshold)


def _face(threshold: float | None) -> IdentityScorer:
    return FaceScorer() if threshold is None else FaceScorer(threshold=threshold)


SCORERS: dict[str, Callable[[float | None], IdentityScorer]] = {"appearance": _appearance, "face": _face}


def scorer_by_name(name: str = DEFAULT_SCORER, *, threshold: float | None = None) -> IdentityScorer:
    """A scorer with its documented threshold (or ``threshold``); ``UnknownScorer`` / ``ScorerUnavailable``."""
    make = SCORERS.get(name)
    if make is None:
        raise UnknownScorer(name, sorted(SCORERS))
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ValueError(f"identity threshold must be within 0..1, got {threshold}")
    return make(threshold)
