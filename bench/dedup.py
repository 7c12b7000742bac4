"""Benchmark: near-duplicate lookup (reelforge.dedup) against a full numpy scan, in the same run, same answers.

Run: ``.venv/bin/python bench/dedup.py [--sizes 10000,100000,1000000] [--queries 1000] [--radius 10] [--strict]``

For each size: that many stored 64-bit hashes, random, among which near-duplicates are planted: for half the
queries, 1-4 stored hashes at random distances 0..12 from the query (so some answers are non-empty and the
distances around the radius are exercised); the other half of the queries are random (answers almost always
empty, as for a new, original image). Three searches answer every query, each query timed on all sides in turn
(load drifting on a shared machine hits all alike), in a rotating order (whichever runs right after the
scan finds the caches flushed by its pass over the array):

* **scan**: ``np.bitwise_count(stored ^ q) <= r`` over the whole array (a popcount table where numpy < 2);
* **index**: ``HammingIndex.near`` as the pHash index uses it (its ``plan`` picks the tables or the scan);
* **tables**: ``ChunkIndex.near`` forced (multi-index hashing, 4 x 16-bit chunks), whatever ``plan`` says.

Every answer must be the same set of positions as the scan's (the run stops at the first difference). Reported:
queries/s of each, the ratio index / scan (target >= 5 at 1,000,000), the index's memory in bytes (hash buffer
plus tables) and its build time. Exit status 0, or 1 with ``--strict`` when the target is missed.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import numpy as np

from reelforge.dedup import ChunkIndex, HammingIndex, plan

TARGET_SIZE = 1_000_000
TARGET_RATIO = 5.0

if hasattr(np, "bitwise_count"):
    _popcount: Callable[[np.ndarray], np.ndarray] = np.bitwise_count
else:  # numpy < 2
    _TABLE = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)

    def _popcount(values: np.ndarray) -> np.ndarray:
        counts: np.ndarray = _TABLE[values.view(np.uint8).reshape(-1, 8)].sum(axis=1, dtype=np.uint8)
        return counts


def scan(stored: np.ndarray, query: int, radius: int) -> np.ndarray:
    """The baseline: every position whose hash is within ``radius`` bits of ``query``."""
    return np.flatnonzero(_popcount(stored ^ np.uint64(query)) <= radius)


def workload(n: int, queries: int, rng: np.random.Generator) -> tuple[np.ndarray, list[int]]:
    qs = rng.integers(0, 2**64, queries, dtype=np.uint64)
    plants: list[int] = []
    for q in qs[: queries // 2].tolist():
        for _ in range(int(rng.integers(1, 5))):
            value = q
            for bit in rng.choice(64, size=int(rng.integers(0, 13)), replace=False).tolist():
                value ^= 1 << bit
            plants.append(value)
    stored = rng.integers(0, 2**64, n, dtype=np.uint64)
    stored[rng.choice(n, size=len(plants), replace=False)] = np.array(plants, dtype=np.uint64)
    return stored, [int(q) for q in qs[rng.permutation(queries)]]


def measure(stored: np.ndarray, queries: list[int], r: int) -> tuple[list[float], int, float, int] | None:
    """Queries/s of scan, index and tables, index bytes, build seconds, queries with an answer; None if any differ."""
    started = time.perf_counter()
    index = HammingIndex(stored)
    build = time.perf_counter() - started
    tables = ChunkIndex(stored)
    sides: list[Callable[[int], np.ndarray]] = [
        lambda q: scan(stored, q, r),
        lambda q: index.near(q, r)[0],
        lambda q: tables.near(q, r)[0],
    ]
    for q in queries[:20]:  # warm-up
        for side in sides:
            side(q)
    spent = [0.0, 0.0, 0.0]
    answered = 0
    for k, q in enumerate(queries):
        answers: list[np.ndarray] = [np.zeros(0)] * len(sides)
        for step in range(len(sides)):
            i = (k + step) % len(sides)  # who goes first rotates: the one after the scan meets a flushed cache
            t0 = time.perf_counter()
            answers[i] = sides[i](q)
            spent[i] += time.perf_counter() - t0
        expected = answers[0].tolist()
        for name, got in zip(("index", "tables"), answers[1:], strict=True):
            if sorted(got.tolist()) != expected:
                print(f"DIFFERENT ANSWERS at n={len(stored)}, query {q:016x}: {name} {sorted(got.tolist())} "
                      f"vs {expected}")
                return None
        answered += bool(expected)
    return [len(queries) / s for s in spent], index.nbytes, build, answered


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--radius", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--strict", action="store_true")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    r = args.radius
    print(f"radius {r}, {args.queries} queries per size (half with planted near-duplicates), numpy {np.__version__}")
    print(f"{'stored':>9} {'plan':>6} {'scan q/s':>10} {'index q/s':>10} {'tables q/s':>11} {'ratio':>7} "
          f"{'index bytes':>12} {'build s':>8} {'answered':>9}")
    ok = True
    for n in (int(s) for s in args.sizes.split(",")):
        stored, queries = workload(n, args.queries, rng)
        result = measure(stored, queries, r)
        if result is None:
            return 2
        rates, nbytes, build, answered = result
        ratio = rates[1] / rates[0]
        print(f"{n:>9,} {plan(n, r):>6} {rates[0]:>10,.0f} {rates[1]:>10,.0f} {rates[2]:>11,.0f} {ratio:>7.2f} "
              f"{nbytes:>12,} {build:>8.3f} {answered:>9}")
        if n >= TARGET_SIZE:
            ok &= ratio >= TARGET_RATIO
    print(f"all answers identical to the scan; target index/scan >= {TARGET_RATIO:g} at {TARGET_SIZE:,}: "
          f"{'met' if ok else 'MISSED'}")
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
