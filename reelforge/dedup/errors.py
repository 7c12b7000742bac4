"""Errors of the pHash index. Store failures stay the store's own (``reelforge.storage`` errors: ``StoreUnavailable``
is transient); the index adds only what is about its own objects.

```
DedupError              any pHash-index failure
└── SegmentInvalid      an object under index/phash/segments/ that is not a readable segment; .key .reason
```
"""

from __future__ import annotations

__all__ = ["DedupError", "SegmentInvalid"]


class DedupError(Exception):
    """Any failure of the pHash index itself."""


class SegmentInvalid(DedupError):
    """A segment object that cannot be read as one (not JSON, wrong shape, unknown format version)."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"pHash index segment {key!r} is not valid: {reason}")
        self.key = key
        self.reason = reason

    def __reduce__(self) -> tuple[type[SegmentInvalid], tuple[str, str]]:
        return type(self), (self.key, self.reason)
