"""Keys of the pHash index in the artifact store: pure functions, no I/O.

Every write is one new segment object ``index/phash/segments/<writer>-<seq>.json`` (``seq`` zero-padded to 8
digits), so listing ``SEGMENTS_PREFIX`` finds them all and no two writers ever name the same object.
"""

from __future__ import annotations

import re

from reelforge.storage import UnsafeKey, check_key

__all__ = ["PHASH_INDEX_PREFIX", "SEGMENTS_PREFIX", "parse_segment_key", "segment_key"]

PHASH_INDEX_PREFIX = "index/phash/"
SEGMENTS_PREFIX = f"{PHASH_INDEX_PREFIX}segments/"
_WRITER = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
_SEGMENT = re.compile(re.escape(SEGMENTS_PREFIX) + r"([a-z0-9][a-z0-9-]{0,63})-(\d{8,})\.json")


def segment_key(writer_id: str, seq: int) -> str:
    """``index/phash/segments/<writer_id>-<seq:08d>.json``; ``writer_id``: lower-case letters, digits, dashes."""
    if not _WRITER.fullmatch(writer_id):
        raise UnsafeKey(f"writer id must be 1-64 lower-case letters, digits or '-': {writer_id[:80]!r}")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise ValueError(f"segment sequence number must be a non-negative integer, got {seq!r}")
    return check_key(f"{SEGMENTS_PREFIX}{writer_id}-{seq:08d}.json")


def parse_segment_key(key: str) -> tuple[str, int] | None:
    """``(writer_id, seq)`` of a segment key; None for any other key (which the index ignores)."""
    match = _SEGMENT.fullmatch(key)
    return (match.group(1), int(match.group(2))) if match else None
