"""Exact Hamming-radius search over 64-bit hashes: multi-index hashing, vectorised with numpy. Pure: no I/O.

``ChunkIndex`` is the multi-index hashing of Norouzi, Punjani and Fleet ("Fast Search in Hamming Space with
Multi-Index Hashing", CVPR 2012): the 64 bits are cut into ``m = 4`` chunks of 16 bits, and one table per chunk
maps each chunk value to the hashes that have it. If two hashes differ in at most ``r`` bits, at least one of
their chunks differs in at most ``r // m`` bits (were every chunk ``> r // m`` apart, the total would be at least
``m * (r // m + 1) > r``). So a query probes, in each table, every chunk value within ``r // m`` bits of its own
chunk (137 values per table for r = 10), and every hash so found is checked with the exact popcount of the XOR:
no false negatives, no false positives, for any radius.

A table is a counting sort: the hash positions ordered by chunk value and the offset of each value's run
(``offsets[v] .. offsets[v + 1]``), so a probe is two array reads. The four tables live in one array, and a query
does all its probes, gathers and checks in a dozen numpy calls whatever the radius.

``plan(n, radius)`` decides between the tables and a plain scan (``scan_near``: popcount of ``hashes ^ q`` over
everything): with few hashes, or a radius so large that the probes outnumber them, the scan is cheaper.

``HammingIndex`` grows: new hashes go to a tail that is scanned, and the tables are rebuilt over everything when
the tail outgrows ``REBUILD_TAIL + n / 16`` (four 16-bit radix sorts and a gather: ~0.3 s per million hashes).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from math import comb
from typing import Literal

import numpy as np

__all__ = [
    "CHUNKS",
    "ChunkIndex",
    "HammingIndex",
    "as_uint64",
    "plan",
    "popcount64",
    "popcount64_table",
    "scan_near",
]

CHUNKS = 4
CHUNK_BITS = 64 // CHUNKS
_VALUES = 1 << CHUNK_BITS
_SHIFTS = np.array([CHUNK_BITS * t for t in range(CHUNKS)], dtype=np.uint64)
_MASK = np.uint64(_VALUES - 1)
_TABLE_BASE = np.arange(CHUNKS, dtype=np.int64)[:, None] * _VALUES
REBUILD_TAIL = 4096
# Cost model of plan(), in "one scanned hash" units, fitted on bench/dedup.py: a query through the tables pays a
# fixed numpy overhead, a little per probe and per candidate gathered (a random read); the scan pays per hash.
_FIXED_COST = 20_000
_PROBE_COST = 8
_CANDIDATE_COST = 4

Indices = np.ndarray  # int64 positions of hashes
Distances = np.ndarray  # uint8 Hamming distances, aligned with Indices


_BYTE_COUNTS = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def popcount64_table(values: np.ndarray) -> np.ndarray:
    """Set bits of each uint64 (uint8 result), by a byte table: the fallback for numpy < 2."""
    as_bytes = np.ascontiguousarray(values, dtype=np.uint64).view(np.uint8).reshape(*np.shape(values), 8)
    counts: np.ndarray = _BYTE_COUNTS[as_bytes].sum(axis=-1, dtype=np.uint8)
    return counts


def popcount64(values: np.ndarray) -> np.ndarray:
    """Set bits of each uint64 (uint8 result)."""
    counts: np.ndarray = np.bitwise_count(values)
    return counts


if not hasattr(np, "bitwise_count"):  # pragma: no cover - numpy 1.26 (pyproject allows it)
    popcount64 = popcount64_table


def as_uint64(hashes: Iterable[int] | np.ndarray) -> np.ndarray:
    """A contiguous uint64 array of hashes; ``ValueError`` for values outside 0 .. 2**64 - 1."""
    if isinstance(hashes, np.ndarray):
        if hashes.dtype == np.uint64:
            return np.ascontiguousarray(hashes)
        if hashes.size and (int(hashes.min()) < 0 or int(hashes.max()) >= 1 << 64):
            raise ValueError("hashes must be unsigned 64-bit values")
        return np.ascontiguousarray(hashes, dtype=np.uint64)
    values = list(hashes)
    for value in values:
        if not 0 <= value < 1 << 64:
            raise ValueError(f"hash {value!r} is not an unsigned 64-bit value")
    return np.array(values, dtype=np.uint64)


def _query(query: int) -> np.uint64:
    if not 0 <= query < 1 << 64:
        raise ValueError(f"query {query!r} is not an unsigned 64-bit value")
    return np.uint64(query)


def _radius(radius: int) -> int:
    if isinstance(radius, bool) or not isinstance(radius, int) or radius < 0:
        raise ValueError(f"radius must be a non-negative integer, got {radius!r}")
    return radius


def scan_near(hashes: np.ndarray, query: int, radius: int) -> tuple[Indices, Distances]:
    """Brute force: positions (ascending) and distances of every hash within ``radius`` bits of ``query``."""
    distances = popcount64(hashes ^ _query(query))
    positions = np.flatnonzero(distances <= _radius(radius))
    return positions, distances[positions]


@cache
def _flips(chunk_radius: int) -> np.ndarray:
    """Every 16-bit XOR mask with at most ``chunk_radius`` bits set (the probes around one chunk value)."""
    values = np.arange(_VALUES, dtype=np.uint64)
    return values[popcount64(values) <= chunk_radius].astype(np.int64)


@cache
def _probes_per_table(radius: int) -> int:
    return sum(comb(CHUNK_BITS, k) for k in range(min(radius // CHUNKS, CHUNK_BITS) + 1))


def plan(n: int, radius: int) -> Literal["tables", "scan"]:
    """Which search is cheaper for ``n`` indexed hashes at ``radius`` (estimated; both are exact)."""
    probes = CHUNKS * _probes_per_table(_radius(radius))
    candidates = probes * n / _VALUES
    tables = _FIXED_COST + _PROBE_COST * probes + _CANDIDATE_COST * candidates
    return "tables" if tables < n else "scan"


class ChunkIndex:
    """An immutable multi-index over a uint64 array (see the module docstring); positions index that array.

    It keeps what it needs in its own tables, so the array may be changed or grown afterwards.
    """

    def __init__(self, hashes: np.ndarray) -> None:
        hashes = as_uint64(hashes)
        n = self._n = len(hashes)
        if n >= 1 << 32:
            raise ValueError("at most 2**32 - 1 hashes per index")
        orders = []
        offsets = [np.zeros(1, dtype=np.int64)]
        for t in range(CHUNKS):
            chunk = ((hashes >> _SHIFTS[t]) & _MASK).astype(np.uint16)
            orders.append(np.argsort(chunk, kind="stable").astype(np.uint32))  # radix sort for 16-bit keys
            offsets.append(np.cumsum(np.bincount(chunk, minlength=_VALUES), dtype=np.int64) + t * n)
        # Table t holds, in chunk-value order, the positions (_order) and the hashes themselves (_sorted): a query
        # checks its candidates run by run in _sorted (nearly sequential reads) instead of gathering them from
        # all over ``hashes`` (a cache miss each: 3/4 of the query time at a million hashes). So the tables need
        # no copy of ``hashes`` in position order: the caller's array may change or grow after this.
        self._order = np.concatenate(orders)
        self._sorted = hashes[self._order]
        # offsets[t * 65536 + v] .. offsets[t * 65536 + v + 1]: the run of chunk value v of table t.
        self._offsets = np.concatenate(offsets)

    def __len__(self) -> int:
        return self._n

    @property
    def nbytes(self) -> int:
        """Memory held by the four tables: positions and hashes in table order (12 bytes per hash each), offsets."""
        return int(self._order.nbytes + self._sorted.nbytes + self._offsets.nbytes)

    def near(self, query: int, radius: int) -> tuple[Indices, Distances]:
        """Positions (ascending) and distances of every hash within ``radius`` bits of ``query``."""
        q = _query(query)
        flips = _flips(min(_radius(radius) // CHUNKS, CHUNK_BITS))
        own = ((q >> _SHIFTS) & _MASK).astype(np.int64)
        probes = ((own[:, None] ^ flips[None, :]) + _TABLE_BASE).ravel()
        starts = self._offsets[probes]
        lengths = self._offsets[probes + 1] - starts
        hit = lengths > 0
        starts, lengths = starts[hit], lengths[hit]
        if not len(lengths):
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.uint8)
        runs = _expand(starts, lengths)
        distances = popcount64(self._sorted[runs] ^ q)
        keep = np.flatnonzero(distances <= radius)
        # A hash close on several chunks is found in several tables: keep it once.
        positions, first = np.unique(self._order[runs[keep]], return_index=True)
        return positions.astype(np.int64), distances[keep[first]]


def _expand(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The concatenated ranges ``[start, start + length)``, built as one cumulative sum of steps."""
    ends = np.cumsum(lengths)
    steps = np.ones(int(ends[-1]), dtype=np.int64)
    steps[0] = starts[0]
    # At each range's first element, jump from the previous range's last element to this range's start.
    steps[ends[:-1]] = starts[1:] - (starts[:-1] + lengths[:-1]) + 1
    return np.cumsum(steps)


class HammingIndex:
    """A growable exact radius search: a ``ChunkIndex`` over most hashes, a scanned tail over the newest."""

    def __init__(self, hashes: Iterable[int] | np.ndarray = ()) -> None:
        initial = as_uint64(hashes)
        self._buffer = np.zeros(max(1024, len(initial)), dtype=np.uint64)
        self._buffer[: len(initial)] = initial
        self._size = len(initial)
        self._tables: ChunkIndex | None = None
        if self._size:
            self._rebuild()

    def __len__(self) -> int:
        return self._size

    @property
    def hashes(self) -> np.ndarray:
        """The indexed hashes, by position (a read-only view)."""
        view = self._buffer[: self._size]
        view.flags.writeable = False
        return view

    @property
    def nbytes(self) -> int:
        """Memory held: the hash buffer (with its spare capacity) and the tables."""
        return int(self._buffer.nbytes + (self._tables.nbytes if self._tables is not None else 0))

    def add(self, hashes: Iterable[int] | np.ndarray) -> range:
        """Append hashes; returns their positions."""
        new = as_uint64(hashes)
        start, end = self._size, self._size + len(new)
        if end > len(self._buffer):
            grown = np.zeros(max(end, 2 * len(self._buffer)), dtype=np.uint64)
            grown[:start] = self._buffer[:start]
            self._buffer = grown
        self._buffer[start:end] = new
        self._size = end
        return range(start, end)

    def _rebuild(self) -> None:
        self._tables = ChunkIndex(self._buffer[: self._size])

    def near(self, query: int, radius: int = 10) -> tuple[Indices, Distances]:
        """Positions (ascending) and distances of every indexed hash within ``radius`` bits of ``query``."""
        built = len(self._tables) if self._tables is not None else 0
        if self._size - built > REBUILD_TAIL + built // 16:
            self._rebuild()
            built = self._size
        if self._tables is None or plan(built, radius) == "scan":
            return scan_near(self._buffer[: self._size], query, radius)
        positions, distances = self._tables.near(query, radius)
        if built == self._size:
            return positions, distances
        tail_positions, tail_distances = scan_near(self._buffer[built : self._size], query, radius)
        return (
            np.concatenate([positions, tail_positions + built]),
            np.concatenate([distances, tail_distances]),
        )
