"""Content hashes and canonical JSON: the one implementation every package uses (pure, no I/O but file reads).

* ``sha256_file(path) -> (hex, size)``: 1 MiB reads into one reused buffer.
* ``sha256_stream(stream) -> (hex, size)``.
* ``canonical_json(obj) -> str``: sorted keys, no whitespace, UTF-8 kept; the same value always gives the same
  text, so hashes of it (cache keys, template versions) are stable across processes and machines.
* ``canonical_sha256(obj) -> hex``: sha256 of ``canonical_json(obj)``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import IO, Any

CHUNK_SIZE = 1024 * 1024  # streamed copies and hashes read 1 MiB at a time

__all__ = ["CHUNK_SIZE", "canonical_json", "canonical_sha256", "sha256_bytes", "sha256_file", "sha256_stream"]


def sha256_file(path: Path | str) -> tuple[str, int]:
    """``(sha256 hex, size)`` of a file, read in 1 MiB chunks into one reused buffer."""
    digest = hashlib.sha256()
    size = 0
    buffer = bytearray(CHUNK_SIZE)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while n := handle.readinto(buffer):
            digest.update(view[:n])
            size += n
    return digest.hexdigest(), size


def sha256_stream(stream: IO[bytes]) -> tuple[str, int]:
    """``(sha256 hex, size)`` of what a binary stream yields until EOF."""
    digest = hashlib.sha256()
    size = 0
    while chunk := stream.read(CHUNK_SIZE):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical_json(data: Any) -> str:
    """Sorted keys, compact separators, non-ASCII kept; values JSON cannot express are written with ``str``."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def canonical_sha256(data: Any) -> str:
    return hashlib.sha256(canonical_json(data).encode("utf-8")).hexdigest()
