"""The identity scorers' exception tree (every one permanent: scoring the same files again fails the same way).

```
IdentityError                 base; ``scorer`` names the scorer when one is involved
├── UnknownScorer             no scorer of that name (``name``, ``known``)
├── ScorerUnavailable         the scorer's optional packages are not installed (``missing``, ``install``)
└── IdentityInputError        the files asked for cannot be scored at all (``paths``, ``reasons``):
    └── NoUsableReference     none of the reference images gives an embedding (each one's reason)
```

An image that is readable but has nothing to score (no face found, a flat region) is not an error: it is a
candidate marked unscorable, with its reason, in ``IdentityScores``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = ["IdentityError", "IdentityInputError", "NoUsableReference", "ScorerUnavailable", "UnknownScorer"]


class IdentityError(Exception):
    """Base of the identity scorers' errors."""

    def __init__(self, message: str, *, scorer: str | None = None) -> None:
        super().__init__(message)
        self.scorer = scorer


class UnknownScorer(IdentityError, LookupError):
    def __init__(self, name: str, known: Sequence[str]) -> None:
        super().__init__(f"unknown identity scorer {name!r}; known: {', '.join(known)}", scorer=name)
        self.name = name
        self.known = list(known)


class ScorerUnavailable(IdentityError):
    def __init__(self, scorer: str, missing: str, install: str) -> None:
        super().__init__(f"identity scorer {scorer!r} needs {missing}: {install}", scorer=scorer)
        self.missing = missing
        self.install = install


class IdentityInputError(IdentityError, ValueError):
    """Files that cannot be scored: missing, or none given; ``reasons`` pairs with ``paths``."""

    def __init__(
        self, message: str, *, scorer: str | None = None, paths: Sequence[Path] = (), reasons: Sequence[str] = ()
    ) -> None:
        super().__init__(message, scorer=scorer)
        self.paths = list(paths)
        self.reasons = list(reasons)


class NoUsableReference(IdentityInputError):
    pass
