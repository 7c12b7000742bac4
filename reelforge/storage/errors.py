"""Storage errors. ``StoreUnavailable`` is the only transient one (retry later); the others are permanent.

```
StoreError                 any storage failure; .store .key .operation .bucket .path
├── StoreConflict          the key already holds other content (or any content, for put_new)
├── UnsafeKey              a key or slug that could escape the root (also a ValueError)
├── StoreUnavailable       transient: S3 5xx / throttling / connection, a network mount timing out
├── ArtifactMissing        no object under this key
└── StoreNotWritable       read-only file system, permission denied, the root or a parent is a file
    └── StoreFull          no space left (ENOSPC) or quota exceeded (EDQUOT)
```

Every error carries its context as attributes: ``store`` (the root folder, or ``s3://bucket/prefix``), ``key``
(store-relative, or None), ``operation`` (``put``, ``get``, ``read``, ``list``, ``exists``, ``ref``, ``reserve``,
...), ``bucket`` (S3 only) and ``path`` (the local file involved, when there is one); ``str()`` names them.
Messages never contain credentials. Library errors are translated at the store's boundary
(``raise ... from exc``): ``os_error`` for ``OSError``, ``reelforge.storage.s3.map_error`` for botocore.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator

# Operations that write: for them a permission error means "not writable", for reads just "refused".
WRITE_OPERATIONS = frozenset({"open", "put", "reserve", "mark_abandoned", "check_writable"})
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_REFUSED_ERRNOS = frozenset({errno.EACCES, errno.EPERM})
_IS_A_FILE_ERRNOS = frozenset({errno.ENOTDIR, errno.EEXIST})
# Network file systems (NFS, SMB) that stop answering: worth a retry.
_TRANSIENT_ERRNOS = frozenset(
    {errno.ETIMEDOUT, errno.EHOSTDOWN, errno.EHOSTUNREACH, errno.ENETDOWN, errno.ENETUNREACH, errno.ECONNRESET}
)


class StoreError(Exception):
    """Any storage failure; the context is in the attributes (all optional, so the error pickles)."""

    def __init__(
        self,
        message: str,
        *,
        store: str | None = None,
        key: str | None = None,
        operation: str | None = None,
        bucket: str | None = None,
        path: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.store = store
        self.key = key
        self.operation = operation
        self.bucket = bucket
        self.path = path

    def add_context(
        self,
        *,
        store: str | None = None,
        key: str | None = None,
        operation: str | None = None,
        bucket: str | None = None,
    ) -> StoreError:
        """Fill in the context an inner raise did not know; what is already set is kept."""
        self.store = self.store if self.store is not None else store
        self.key = self.key if self.key is not None else key
        self.operation = self.operation if self.operation is not None else operation
        self.bucket = self.bucket if self.bucket is not None else bucket
        return self

    def __str__(self) -> str:
        parts = []
        if self.operation:
            parts.append(f"operation {self.operation}")
        if self.store:
            parts.append(f"store {self.store}")
        if self.bucket and (not self.store or self.bucket not in self.store):
            parts.append(f"bucket {self.bucket}")
        if self.key is not None:
            parts.append(f"key {self.key!r}")
        if self.path and self.path not in self.message:
            parts.append(f"path {self.path}")
        return f"{self.message} ({', '.join(parts)})" if parts else self.message


class StoreConflict(StoreError):
    """The key already holds other content: nothing is ever overwritten."""


class UnsafeKey(StoreError, ValueError):
    """A key or slug that could escape the store's root or is not a valid key."""


class StoreUnavailable(StoreError):
    """Transient: the store did not answer (connection refused, timeout, S3 5xx, throttling)."""


class ArtifactMissing(StoreError):
    """No object under this key (or no permission to see it)."""


class StoreNotWritable(StoreError):
    """Writes are refused: read-only file system, permission denied, the root (or a folder) is a file."""


class StoreFull(StoreNotWritable):
    """No space left on the device, or the user's quota is used up."""


def os_error(exc: OSError, *, store: str, key: str | None, operation: str) -> StoreError:
    """The ``StoreError`` for an ``OSError`` raised while ``operation`` ran on ``key`` (see the module tree)."""
    code = exc.errno
    path = os.fsdecode(exc.filename) if exc.filename is not None else None
    reason = exc.strerror or type(exc).__name__
    writing = operation in WRITE_OPERATIONS
    where = f"{key!r}" if key is not None else "the store"
    context = {"store": store, "key": key, "operation": operation, "path": path}
    if code in _FULL_ERRNOS:
        return StoreFull(f"cannot {operation} {where}: {reason} (free space or raise the quota)", **context)
    if code == errno.EROFS:
        return StoreNotWritable(f"cannot {operation} {where}: the store is on a read-only file system", **context)
    if code in _TRANSIENT_ERRNOS:
        return StoreUnavailable(f"cannot {operation} {where}: {reason}; retry later", **context)
    if writing and code in _REFUSED_ERRNOS:
        return StoreNotWritable(f"cannot {operation} {where}: permission denied", **context)
    if writing and code in _IS_A_FILE_ERRNOS:
        return StoreNotWritable(
            f"cannot {operation} {where}: the store root or a folder on the way to the key is a file", **context
        )
    if not writing and code in (errno.ENOENT, errno.ENOTDIR):
        return ArtifactMissing(f"no artifact {where}: {reason}", **context)
    return StoreError(f"cannot {operation} {where}: {reason}", **context)


@contextlib.contextmanager
def boundary(operation: str, key: str | None, *, store: str, bucket: str | None = None) -> Iterator[None]:
    """Give every ``StoreError`` leaving the block its context, and translate ``OSError`` (local I/O)."""
    try:
        yield
    except StoreError as exc:
        exc.add_context(store=store, key=key, operation=operation, bucket=bucket)
        raise
    except OSError as exc:
        raise os_error(exc, store=store, key=key, operation=operation) from exc
