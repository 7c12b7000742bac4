"""Near-duplicate images across the whole store: a persisted index of every pHash and exact radius lookup.

``PhashIndex.load(store)`` reads every segment under ``index/phash/segments/``; ``index.add(entries)`` writes one
new segment (never overwriting anyone's); ``index.refresh()`` picks up other writers' segments;
``index.near(phash, radius=10)`` returns every stored entry within the radius, exactly (multi-index hashing,
hamming.py). The lookup is pure (``HammingIndex``, ``ChunkIndex``, ``scan_near``); persistence is index.py.
"""

from reelforge.dedup.entries import (
    SEGMENT_FORMAT,
    Match,
    PhashEntry,
    Segment,
    decode_segment,
    encode_segment,
    phash_int,
)
from reelforge.dedup.errors import DedupError, SegmentInvalid
from reelforge.dedup.hamming import ChunkIndex, HammingIndex, plan, popcount64, scan_near
from reelforge.dedup.index import DEFAULT_RADIUS, PhashIndex
from reelforge.dedup.keys import PHASH_INDEX_PREFIX, SEGMENTS_PREFIX, parse_segment_key, segment_key

__all__ = [
    "DEFAULT_RADIUS",
    "PHASH_INDEX_PREFIX",
    "SEGMENTS_PREFIX",
    "SEGMENT_FORMAT",
    "ChunkIndex",
    "DedupError",
    "HammingIndex",
    "Match",
    "PhashEntry",
    "PhashIndex",
    "Segment",
    "SegmentInvalid",
    "decode_segment",
    "encode_segment",
    "parse_segment_key",
    "phash_int",
    "plan",
    "popcount64",
    "scan_near",
    "segment_key",
]
