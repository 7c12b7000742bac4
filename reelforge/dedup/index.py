"""``PhashIndex``: every pHash ever stored, persisted in the artifact store as append-only segments.

Writers never overwrite each other: each ``add`` writes one new immutable segment object with ``put_new``
(create-if-absent) under a key made of the writer's id and its own sequence number (keys.py). Readers list
``index/phash/segments/`` and read only the segments they have not seen yet (``refresh``). Nothing is rewritten
or deleted, so two flow runs adding at the same time both keep every entry, and whoever lists after both writes
sees both. Only the store interface is used (``list``, ``read_bytes``, ``put_new``): local folders and S3 alike.

In memory: the entries in load order and a ``HammingIndex`` over their hashes (hamming.py), kept aligned under
one lock; store I/O happens outside it. An entry equal in every field to one already held (a retried ``add``) is
kept once.

Objects under the prefix that are not named like segments are ignored (room for later formats). A segment that
does not parse is skipped with a warning and listed in ``invalid``: it can never be repaired (nothing is
rewritten), and one bad object must not stop every later flow's dedup. Store errors propagate as the store raised
them (``StoreUnavailable`` is transient: the caller's retry reloads).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from reelforge.dedup.entries import (
    SEGMENT_FORMAT,
    Match,
    PhashEntry,
    Segment,
    decode_segment,
    encode_segment,
    phash_int,
)
from reelforge.dedup.errors import SegmentInvalid
from reelforge.dedup.hamming import HammingIndex
from reelforge.dedup.keys import SEGMENTS_PREFIX, parse_segment_key, segment_key
from reelforge.storage import ArtifactMissing, ArtifactStore, StoreConflict

__all__ = ["DEFAULT_RADIUS", "PhashIndex"]

log = logging.getLogger(__name__)

DEFAULT_RADIUS = 10  # separates re-encodes, resizes and small crops from unrelated images (media-facts.md)
_MAX_CLAIMS = 100


class PhashIndex:
    """The store-wide pHash index (see the module docstring). Thread-safe."""

    def __init__(self, store: ArtifactStore, *, writer_id: str | None = None, read_threads: int = 8) -> None:
        """An empty index over ``store``; ``load`` (or ``refresh``) reads what is stored.

        ``writer_id`` names this writer's segments (default: random); two live writers must not share one.
        """
        self.store = store
        self.writer_id = writer_id if writer_id is not None else uuid.uuid4().hex[:16]
        segment_key(self.writer_id, 0)  # refuse a bad id now, not at the first add
        self._read_threads = max(1, read_threads)
        self._lock = threading.RLock()
        self._hashes = HammingIndex()
        self._entries: list[PhashEntry] = []
        self._known: set[PhashEntry] = set()
        self._segments: set[str] = set()
        self._invalid: dict[str, str] = {}
        self._next_seq = 1

    @classmethod
    def load(cls, store: ArtifactStore, *, writer_id: str | None = None, read_threads: int = 8) -> PhashIndex:
        """The index with every segment stored so far."""
        index = cls(store, writer_id=writer_id, read_threads=read_threads)
        index.refresh()
        return index

    # -- reading ------------------------------------------------------------------------------------------

    def refresh(self) -> int:
        """Read the segments written since the last look (by anyone); returns how many new entries they held."""
        listed = sorted(self.store.list(SEGMENTS_PREFIX))
        with self._lock:
            todo = []
            for key in listed:
                parsed = parse_segment_key(key)
                if parsed is None or key in self._segments or key in self._invalid:
                    continue
                todo.append(key)
                if parsed[0] == self.writer_id:  # our id used before (a fixed id, a restart): number after it
                    self._next_seq = max(self._next_seq, parsed[1] + 1)
        if len(todo) > 1 and self._read_threads > 1:
            with ThreadPoolExecutor(min(self._read_threads, len(todo)), thread_name_prefix="phash-index") as pool:
                results = list(pool.map(self._read, todo))
        else:
            results = [self._read(key) for key in todo]
        added = 0
        for key, result in zip(todo, results, strict=True):
            if isinstance(result, SegmentInvalid):
                log.warning("%s; skipped (%s)", result, self.store)
                with self._lock:
                    self._invalid[key] = result.reason
            else:
                added += self._merge(key, result.entries)
        return added

    def _read(self, key: str) -> Segment | SegmentInvalid:
        try:
            return decode_segment(self.store.read_bytes(key), key)
        except SegmentInvalid as exc:
            return exc
        except ArtifactMissing:  # listed, then gone: only a deletion behind the store's back does this
            return SegmentInvalid(key, "listed but no longer in the store")

    def _merge(self, key: str, entries: Iterable[PhashEntry]) -> int:
        with self._lock:
            if key in self._segments:  # a refresh in another thread read our own new segment first
                return 0
            self._segments.add(key)
            new = [e for e in dict.fromkeys(entries) if e not in self._known]
            self._known.update(new)
            self._entries.extend(new)
            self._hashes.add([e.phash for e in new])
            return len(new)

    # -- writing ------------------------------------------------------------------------------------------

    def add(self, entries: Iterable[PhashEntry]) -> str:
        """Store ``entries`` as one new segment and hold them; returns the segment's key.

        ``ValueError`` for an empty batch (a segment of nothing would only litter the store).
        """
        batch = list(entries)
        if not batch:
            raise ValueError("add() needs at least one entry")
        for entry in batch:
            if not isinstance(entry, PhashEntry):
                raise TypeError(f"add() takes PhashEntry objects, got {type(entry).__name__}")
        for _ in range(_MAX_CLAIMS):
            with self._lock:
                seq, self._next_seq = self._next_seq, self._next_seq + 1
            key = segment_key(self.writer_id, seq)
            segment = Segment(
                format=SEGMENT_FORMAT, writer=self.writer_id, seq=seq, created_at=datetime.now(UTC), entries=batch
            )
            try:
                self.store.put_new(encode_segment(segment), key, kind="json")
            except StoreConflict:
                continue  # this number is taken (our id was used by another process): claim the next one
            self._merge(key, batch)
            return key
        raise StoreConflict(
            f"writer id {self.writer_id!r}: {_MAX_CLAIMS} segment numbers in a row already taken; use another id",
            key=segment_key(self.writer_id, seq),
            operation="put",
        )

    # -- lookup -------------------------------------------------------------------------------------------

    def near(self, phash: int | str, radius: int = DEFAULT_RADIUS) -> list[Match]:
        """Every held entry within ``radius`` bits of ``phash`` (an int or 16 hex digits), exact.

        Sorted by distance, then age (oldest first), then key.
        """
        query = phash_int(phash)
        with self._lock:
            positions, distances = self._hashes.near(query, radius)
            matches = [
                Match(self._entries[p], d) for p, d in zip(positions.tolist(), distances.tolist(), strict=True)
            ]
        matches.sort(key=lambda m: (m.distance, m.entry.created_at, m.entry.artifact_key))
        return matches

    # -- state --------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def entries(self) -> tuple[PhashEntry, ...]:
        """Every held entry, in load order."""
        with self._lock:
            return tuple(self._entries)

    @property
    def segments(self) -> frozenset[str]:
        """Keys of the segments read or written so far."""
        with self._lock:
            return frozenset(self._segments)

    @property
    def invalid(self) -> dict[str, str]:
        """Segments skipped as unreadable: key -> reason."""
        with self._lock:
            return dict(self._invalid)

    @property
    def nbytes(self) -> int:
        """Memory of the hash tables (entries themselves not counted)."""
        with self._lock:
            return self._hashes.nbytes
