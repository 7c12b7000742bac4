"""Two runs that make the same image at the same time: at least one of them sees the other's (index, then look)."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace

from flows.character import _Run
from reelforge.dedup import PhashIndex
from reelforge.storage import LocalStore, ParentRef, StageRecord


def hashed(run: str, sha: str, phash: str) -> StageRecord:
    return StageRecord(
        stage="phash", version="2", kind="process", job_id=f"{run}-var00-phash", cache_key="k" * 64,
        inputs={"image": ParentRef(sha256=sha, key=f"characters/{run}/v1/variations/{sha[:16]}.png")},
        record={"phash": phash}, flow_run_id=run,
    )


def test_simultaneous_runs_catch_each_other(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    runs = {
        "alpha": (SimpleNamespace(index=PhashIndex.load(store, writer_id="alpha")), "a" * 64, "d6522de90ce327ca"),
        "beta": (SimpleNamespace(index=PhashIndex.load(store, writer_id="beta")), "b" * 64, "d6522de90ce327cb"),
    }
    both_indexed = threading.Barrier(2)
    seen: dict[str, list[str]] = {}

    def one(name: str) -> None:
        run, sha, phash = runs[name]
        record = hashed(name, sha, phash)
        # The worst interleaving for "look, then index": both look before either indexes. Index-then-look
        # cannot miss: each run's entry is stored before it looks.
        original_add = run.index.add

        def add_then_wait(entries):  # type: ignore[no-untyped-def]
            key = original_add(entries)
            both_indexed.wait(timeout=10)
            return key

        run.index.add = add_then_wait
        twins = _Run._twins(run, record, sha, 10)  # type: ignore[arg-type]
        seen[name] = [m.entry.artifact_sha256 for m in twins]

    threads = [threading.Thread(target=one, args=(n,)) for n in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert seen == {"alpha": ["b" * 64], "beta": ["a" * 64]}
