"""The pHash index persisted through the store interface: a local folder and S3 (moto on loopback).

Covers the round trip, refresh, writers adding at the same time (threads, and processes on a local store) without
losing an entry, a writer id reused after a restart, and objects under the prefix that are not segments.
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from reelforge.dedup import SEGMENTS_PREFIX, PhashEntry, PhashIndex, parse_segment_key
from reelforge.settings import StoreSettings
from reelforge.storage import ArtifactStore, LocalStore, open_store

ROOT = Path(__file__).resolve().parents[2]


def entries(tag: str, count: int, seed: int) -> list[PhashEntry]:
    """The same entries for the same arguments (creation time included)."""
    rng = np.random.default_rng(seed)
    made = datetime(2026, 12, 1, tzinfo=UTC) + timedelta(seconds=seed)
    return [
        PhashEntry(
            phash=int(h),
            artifact_key=f"characters/{tag}/v1/variations/{i:03d}.png",
            artifact_sha256=hashlib.sha256(f"{tag}-{i}".encode()).hexdigest(),
            flow_run_id=f"run-{tag}",
            job_id=f"{tag}-var{i:02d}-phash",
            created_at=made,
        )
        for i, h in enumerate(rng.integers(0, 2**64, count, dtype=np.uint64))
    ]


@pytest.fixture
def atomic_moto(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto checks If-None-Match and then stores, unlocked; AWS S3 decides atomically. Make moto do the same."""
    from moto.s3.responses import S3Response

    lock = threading.Lock()
    real = S3Response.put_object

    def put_object(self: Any) -> Any:
        with lock:
            return real(self)

    monkeypatch.setattr(S3Response, "put_object", put_object)


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ArtifactStore]:
    if request.param == "local":
        yield LocalStore(tmp_path / "store")
    else:
        request.getfixturevalue("atomic_moto")
        settings: StoreSettings = request.getfixturevalue("s3_settings")
        yield open_store(settings)


def test_round_trip_and_lookup(store: ArtifactStore) -> None:
    writer = PhashIndex.load(store)
    assert len(writer) == 0
    first, second = entries("mina", 5, seed=1), entries("kim", 3, seed=2)
    keys = [writer.add(first), writer.add(second)]
    assert keys == sorted(keys) and all(parse_segment_key(k) == (writer.writer_id, n + 1) for n, k in enumerate(keys))
    assert store.list(SEGMENTS_PREFIX) == keys

    reader = PhashIndex.load(store)
    assert reader.segments == frozenset(keys) and len(reader) == 8
    assert set(reader.entries) == set(first + second)
    target = second[1]
    near = target.phash ^ 0b1011  # 3 bits away
    [match] = reader.near(near, radius=3)
    assert (match.entry, match.distance) == (target, 3)
    assert reader.near(f"{near:016x}", radius=2) == []
    assert writer.near(near, radius=3) == reader.near(near)[:1]


def test_refresh_picks_up_other_writers(store: ArtifactStore) -> None:
    a, b = PhashIndex.load(store), PhashIndex.load(store)
    a.add(entries("a", 4, seed=3))
    assert b.refresh() == 4 and len(b) == 4
    assert b.refresh() == 0
    b.add(entries("b", 2, seed=4))
    assert a.refresh() == 2
    assert set(a.entries) == set(b.entries) and a.segments == b.segments
    # The same entries added again (a retried add) are one more segment but no new entries.
    b.add(entries("b", 2, seed=4))
    assert a.refresh() == 0 and len(a) == 6 and len(a.segments) == 3


@pytest.mark.parametrize("shared_id", [False, True])
def test_writers_adding_at_the_same_time_lose_nothing(store: ArtifactStore, shared_id: bool) -> None:
    # shared_id: two live writers under one id race for the same segment numbers; put_new lets one win each time.
    writers = [PhashIndex.load(store, writer_id="same" if shared_id else None) for _ in range(4)]
    barrier = threading.Barrier(len(writers))
    batches = 6

    def work(n: int) -> list[str]:
        barrier.wait()
        made = []
        for b in range(batches):
            made.append(writers[n].add(entries(f"w{n}-b{b}", 3, seed=100 * n + b)))
            writers[n].refresh()
        return made

    with ThreadPoolExecutor(len(writers)) as pool:
        written = [k for keys in pool.map(work, range(len(writers))) for k in keys]
    assert len(set(written)) == len(writers) * batches
    expected = {e for n in range(len(writers)) for b in range(batches) for e in entries(f"w{n}-b{b}", 3, 100 * n + b)}
    fresh = PhashIndex.load(store)
    assert set(fresh.entries) == expected and len(fresh) == len(expected)
    for writer in writers:
        writer.refresh()
        assert set(writer.entries) == expected
        probe = next(iter(expected))
        assert any(m.entry == probe and m.distance == 0 for m in writer.near(probe.phash, radius=0))


def test_a_writer_id_used_again_numbers_after_its_old_segments(store: ArtifactStore) -> None:
    PhashIndex.load(store, writer_id="host-a").add(entries("one", 2, seed=5))
    restarted = PhashIndex.load(store, writer_id="host-a")
    key = restarted.add(entries("two", 2, seed=6))
    assert parse_segment_key(key) == ("host-a", 2)
    stale = PhashIndex(store, writer_id="host-a")  # never loaded: its first number is taken, it moves on
    assert parse_segment_key(stale.add(entries("three", 1, seed=7))) == ("host-a", 3)
    assert len(PhashIndex.load(store)) == 5


def test_foreign_and_broken_objects(store: ArtifactStore, caplog: pytest.LogCaptureFixture) -> None:
    good = PhashIndex.load(store)
    good.add(entries("ok", 3, seed=8))
    store.put_bytes(b"notes about the index\n", f"{SEGMENTS_PREFIX}README.md")
    broken = f"{SEGMENTS_PREFIX}broken-00000001.json"
    store.put_bytes(b'{"format": "something else"}', broken)
    with caplog.at_level(logging.WARNING, logger="reelforge.dedup.index"):
        index = PhashIndex.load(store)
    assert len(index) == 3 and list(index.invalid) == [broken]
    assert broken in caplog.text
    assert index.refresh() == 0  # the broken one is not read again
    with pytest.raises(ValueError):
        index.add([])


CHILD = textwrap.dedent(
    """
    import hashlib, sys
    from reelforge.dedup import PhashEntry, PhashIndex
    from reelforge.storage import LocalStore

    root, tag = sys.argv[1], sys.argv[2]
    index = PhashIndex.load(LocalStore(root))
    for b in range(8):
        batch = [
            PhashEntry(phash=(hash((tag, b, i)) & (2**64 - 1)), artifact_key=f"p/{tag}/{b}/{i}.png",
                       artifact_sha256=hashlib.sha256(f"{tag}{b}{i}".encode()).hexdigest(), job_id=tag)
            for i in range(4)
        ]
        index.add(batch)
        index.refresh()
    print(len(index))
    """
)


def test_processes_adding_to_one_local_store(tmp_path: Path) -> None:
    root = tmp_path / "store"
    LocalStore(root)
    children = [
        subprocess.Popen([sys.executable, "-c", CHILD, str(root), tag], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        for tag in ("p1", "p2", "p3")
    ]
    seen = [int(child.communicate(timeout=120)[0]) for child in children]
    assert all(child.returncode == 0 for child in children)
    assert all(32 <= n <= 96 for n in seen)  # its own 32, plus whatever the others had written by its last refresh
    index = PhashIndex.load(LocalStore(root))
    assert len(index) == 96 and len(index.segments) == 24
    assert {e.job_id for e in index.entries} == {"p1", "p2", "p3"}
