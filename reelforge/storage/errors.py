"""Storage errors. ``StoreUnavailable`` is the only transient one (retry later); the others are permanent.

Messages name the bucket / key or path involved and never contain credentials.
"""

from __future__ import annotations


class StoreError(Exception):
    """Any storage failure."""


class StoreConflict(StoreError):
    """The key already holds other content: nothing is ever overwritten."""


class UnsafeKey(StoreError, ValueError):
    """A key or slug that could escape the store's root or is not a valid key."""


class StoreUnavailable(StoreError):
    """Transient: the store did not answer (connection refused, timeout, S3 5xx, throttling)."""


class ArtifactMissing(StoreError):
    """No object under this key (or no permission to see it)."""
