"""The exact radius search against brute force, the plan, segment keys and the segment format (pure: no store)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pytest

from reelforge.dedup import (
    SEGMENT_FORMAT,
    ChunkIndex,
    HammingIndex,
    PhashEntry,
    Segment,
    SegmentInvalid,
    decode_segment,
    encode_segment,
    parse_segment_key,
    phash_int,
    plan,
    popcount64,
    scan_near,
    segment_key,
)
from reelforge.dedup.hamming import REBUILD_TAIL, popcount64_table
from reelforge.storage import ParentRef, StageRecord, UnsafeKey

SHA = "ab" * 32


def flip_bits(rng: np.random.Generator, value: int, distance: int) -> int:
    """``value`` with exactly ``distance`` distinct random bits flipped."""
    for bit in rng.choice(64, size=distance, replace=False):
        value ^= 1 << int(bit)
    return value


def planted(seed: int, n: int, queries: int) -> tuple[np.ndarray, list[int]]:
    """``n`` random hashes, and queries each with stored neighbours at every distance 0..24."""
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 2**64, n, dtype=np.uint64)
    qs = [int(q) for q in rng.integers(0, 2**64, queries, dtype=np.uint64)]
    plants = [flip_bits(rng, q, d) for q in qs for d in range(25)]
    # Planted neighbours sit among the random ones, some twice (the same hash stored for two artifacts).
    mixed = np.concatenate([hashes, np.array(plants + plants[::7], dtype=np.uint64)])
    return mixed[rng.permutation(len(mixed))], qs


def brute(hashes: np.ndarray, query: int, radius: int) -> dict[int, int]:
    """Position -> distance by Python's own popcount: shares no code with the index."""
    return {i: d for i, h in enumerate(hashes.tolist()) if (d := (h ^ query).bit_count()) <= radius}


def as_dict(found: tuple[np.ndarray, np.ndarray]) -> dict[int, int]:
    positions, distances = found
    assert list(positions) == sorted(set(positions.tolist())), "positions ascending, each once"
    return dict(zip(positions.tolist(), distances.tolist(), strict=True))


@pytest.mark.parametrize("radius", [0, 1, 3, 4, 7, 8, 10, 11, 12, 15, 20])
def test_chunk_index_is_exact_at_every_radius(radius: int) -> None:
    hashes, queries = planted(seed=radius, n=20_000, queries=12)
    index = ChunkIndex(hashes)
    for q in queries:
        expected = brute(hashes, q, radius)
        assert as_dict(index.near(q, radius)) == expected
        assert as_dict(scan_near(hashes, q, radius)) == expected
        assert sum(1 for d in expected.values() if d == radius) >= 1  # the planted one at exactly r is found


def test_every_planted_distance_is_found_with_its_distance() -> None:
    hashes, queries = planted(seed=99, n=5_000, queries=20)
    index = ChunkIndex(hashes)
    for q in queries:
        found = as_dict(index.near(q, 12))
        distances = sorted(found.values())
        for d in range(13):
            assert d in distances, (q, d)
        assert found == brute(hashes, q, 12)


def test_large_radius_and_edge_values() -> None:
    hashes = np.array([0, 2**64 - 1, 1, 2**63, 0xFFFF, 0xFFFF << 48], dtype=np.uint64)
    index = ChunkIndex(hashes)
    assert as_dict(index.near(0, 64)) == brute(hashes, 0, 64) and len(brute(hashes, 0, 64)) == 6
    assert as_dict(index.near(2**64 - 1, 0)) == {1: 0}
    assert as_dict(index.near(0, 16)) == {0: 0, 2: 1, 3: 1, 4: 16, 5: 16}
    assert as_dict(ChunkIndex(np.zeros(0, dtype=np.uint64)).near(5, 10)) == {}
    with pytest.raises(ValueError):
        index.near(2**64, 3)
    with pytest.raises(ValueError):
        index.near(1, -1)


def test_growing_index_with_tail_and_rebuilds_stays_exact() -> None:
    hashes, queries = planted(seed=5, n=60_000, queries=6)
    grown = HammingIndex()
    sizes = [1, 10, REBUILD_TAIL + 1, 30_000, 0, len(hashes)]
    start = 0
    for size in sizes:
        end = min(len(hashes), start + size)
        positions = grown.add(hashes[start:end])
        assert positions == range(start, end)
        start = end
        for q in queries[:2]:
            for radius in (4, 10):
                assert as_dict(grown.near(q, radius)) == brute(hashes[:end], q, radius)
    assert len(grown) == len(hashes) and np.array_equal(grown.hashes, hashes)
    assert grown.nbytes > 12 * 4 * len(hashes)  # the tables were built
    for q in queries:
        assert as_dict(grown.near(q, 10)) == brute(hashes, q, 10)
    assert as_dict(HammingIndex([3, 7, 4]).near(3, 1)) == {0: 0, 1: 1}


def test_plan_prefers_the_scan_for_few_hashes_or_huge_radii() -> None:
    assert plan(1_000, 10) == "scan"
    assert plan(1_000_000, 10) == "tables"
    assert plan(1_000_000, 12) == "tables"
    assert plan(1_000_000, 40) == "scan"
    assert plan(10**9, 64) == "scan"


def test_popcount_table_matches_numpy() -> None:
    values = np.random.default_rng(1).integers(0, 2**64, 1000, dtype=np.uint64)
    values[:3] = [0, 2**64 - 1, 2**63]
    assert np.array_equal(popcount64(values), popcount64_table(values))
    assert popcount64_table(values)[:3].tolist() == [0, 64, 1]
    assert np.array_equal(popcount64_table(values.reshape(10, 100)), popcount64(values.reshape(10, 100)))


def test_segment_keys() -> None:
    key = segment_key("0a1b-writer", 42)
    assert key == "index/phash/segments/0a1b-writer-00000042.json"
    assert parse_segment_key(key) == ("0a1b-writer", 42)
    assert parse_segment_key(segment_key("w", 123_456_789)) == ("w", 123_456_789)
    for other in ["index/phash/segments/README.md", "index/phash/segments/x-1.json", "characters/a/v1/x.json"]:
        assert parse_segment_key(other) is None
    for bad in ["", "Upper", "a/b", "../x", "-lead", "a" * 65]:
        with pytest.raises(UnsafeKey):
            segment_key(bad, 1)
    with pytest.raises(ValueError):
        segment_key("w", -1)


def test_entries_and_segment_round_trip() -> None:
    when = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    entries = [
        PhashEntry(phash=2**64 - 1, artifact_key="characters/a/v1/base/x.png", artifact_sha256=SHA,
                   flow_run_id="run-1", job_id="a-v1-base-phash", created_at=when),
        PhashEntry(phash="00000000000000ff", artifact_key="k.png", artifact_sha256=SHA),
    ]
    assert entries[1].phash == 255 and entries[1].phash_hex == "00000000000000ff"
    segment = Segment(format=SEGMENT_FORMAT, writer="w", seq=1, created_at=when, entries=entries)
    data = encode_segment(segment)
    raw = json.loads(data)
    assert raw["entries"][0]["phash"] == "ffffffffffffffff"  # hex in JSON, int in memory
    back = decode_segment(data, "index/phash/segments/w-00000001.json")
    assert back.entries == entries and back.writer == "w" and back.seq == 1
    assert len({*entries, *back.entries}) == 2  # hashable, equal after the round trip
    assert phash_int("FFFFFFFFFFFFFFFF") == 2**64 - 1 and phash_int(7) == 7
    for bad_hash in ["abc", "g" * 16, -1, 2**64, True]:
        with pytest.raises(ValueError):
            phash_int(bad_hash)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        PhashEntry(phash=1, artifact_key="k", artifact_sha256="AB" * 32)
    with pytest.raises(ValueError):
        PhashEntry(phash=1, artifact_key="k", artifact_sha256=SHA, created_at=datetime(2026, 1, 1))  # naive


@pytest.mark.parametrize(
    "data",
    [b"not json", b"{}", b'{"format": "reelforge.phash-index.segment/9", "writer": "w", "seq": 1, '
     b'"created_at": "2026-12-01T00:00:00Z", "entries": []}', b'{"format": "reelforge.phash-index.segment/1", '
     b'"writer": "w", "seq": 1, "created_at": "2026-12-01T00:00:00Z", "entries": [{"phash": "zz"}]}'],
)
def test_invalid_segments_name_their_key(data: bytes) -> None:
    with pytest.raises(SegmentInvalid) as caught:
        decode_segment(data, "index/phash/segments/w-00000001.json")
    assert caught.value.key == "index/phash/segments/w-00000001.json" and caught.value.reason


def test_entry_from_a_phash_stage_record() -> None:
    record = StageRecord(
        stage="phash", version="1", kind="process", job_id="mina-v1-var00-phash", cache_key="c" * 64,
        inputs={"image": ParentRef(sha256=SHA, key="characters/mina/v1/variations/abc.png")},
        record={"phash": "c3a1c3a1c3a1c3a1", "width": 64, "height": 48}, flow_run_id="run-7",
    )
    entry = PhashEntry.from_stage(record)
    assert entry == PhashEntry(
        phash=0xC3A1C3A1C3A1C3A1, artifact_key="characters/mina/v1/variations/abc.png", artifact_sha256=SHA,
        flow_run_id="run-7", job_id="mina-v1-var00-phash", created_at=record.created_at,
    )
    with pytest.raises(ValueError):
        PhashEntry.from_stage(record, input_name="other")
