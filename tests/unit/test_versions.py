"""Version reservation on a LocalStore: distinct numbers across processes, states, abandonment."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from reelforge.liveness import Holder
from reelforge.storage import LocalStore
from reelforge.storage.errors import StoreConflict, UnsafeKey
from reelforge.storage.keys import version_prefix

PREFIX = "characters/mina-park/"


def _dead_holder() -> Holder:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return Holder.current(label="crashed run").model_copy(update={"pid": child.pid, "pid_started": None})


def _reserve_many(root: str, count: int, barrier: Any, results: Any) -> None:
    store = LocalStore(root)
    holder = Holder.current(label=f"worker {os.getpid()}")
    barrier.wait()  # all processes start reserving at the same moment
    for _ in range(count):
        results.put(store.reserve_version(PREFIX, holder))


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def test_put_new_is_create_if_absent(store: LocalStore) -> None:
    store.put_new(b"claim", "locks/a.json")
    with pytest.raises(StoreConflict, match="already exists") as caught:
        store.put_new(b"claim", "locks/a.json")  # even the same content
    assert (caught.value.key, caught.value.operation) == ("locks/a.json", "put")
    assert store.put_bytes(b"claim", "locks/a.json").size == 5  # a plain put stays idempotent
    assert store.read_bytes("locks/a.json") == b"claim"


def test_put_new_without_hard_links(store: LocalStore, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    def no_links(*_: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")  # what FAT / some FUSE mounts answer

    monkeypatch.setattr(os, "link", no_links)
    assert store.reserve_version(PREFIX, Holder.current()) == 1
    assert store.reserve_version(PREFIX, Holder.current()) == 2
    with pytest.raises(StoreConflict):
        store.put_new(b"again", f"{PREFIX}v1/reservation.json")
    assert [v.state for v in store.versions(PREFIX)] == ["reserved", "reserved"]
    assert not [p for p in store.root.rglob(".*.tmp")]


def test_processes_reserving_at_once_get_distinct_numbers(store: LocalStore) -> None:
    store.put_bytes(b"old", f"{PREFIX}v1/base/a.png")  # a version made by older code: never reused
    ctx = multiprocessing.get_context("spawn")  # fork would copy the threads a Prefect harness runs
    processes, per_process = 6, 4
    barrier = ctx.Barrier(processes)
    results = ctx.Queue()
    workers = [
        ctx.Process(target=_reserve_many, args=(str(store.root), per_process, barrier, results))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    numbers = sorted(results.get(timeout=5) for _ in range(processes * per_process))
    assert numbers == list(range(2, 2 + processes * per_process))
    assert store.next_version(PREFIX) == 2 + processes * per_process  # reservations count
    infos = store.versions(PREFIX)
    assert [v.number for v in infos] == [1, *numbers]
    assert {v.state for v in infos} == {"abandoned"}  # v1: older code; the others: their processes exited
    assert {v.holder.pid for v in infos[1:] if v.holder} == {w.pid for w in workers}


def test_states_and_marking(store: LocalStore) -> None:
    me = Holder.current(flow_run_id="run-live", label="Mina Park")
    store.put_bytes(b"img", f"{PREFIX}v1/base/a.png")  # older code: no reservation, no manifest
    assert store.reserve_version(PREFIX, me) == 2
    store.put_json({"subject": "mina-park"}, f"{PREFIX}v2/manifest.json")
    assert store.reserve_version(PREFIX, me) == 3
    assert store.reserve_version(PREFIX, _dead_holder()) == 4
    remote = Holder(host="gpu-box-7", pid=4242, since=datetime.now(UTC) - timedelta(hours=3))
    assert store.reserve_version(PREFIX, remote) == 5
    store.put_bytes(b"torn", f"{PREFIX}v6/reservation.json")  # unreadable: nobody provably holds it
    infos = store.versions(PREFIX)
    assert [(v.number, v.state) for v in infos] == [
        (1, "abandoned"),
        (2, "complete"),
        (3, "reserved"),
        (4, "abandoned"),
        (5, "reserved"),  # another host, no deadline given: kept
        (6, "abandoned"),
    ]
    assert infos[2].holder == me and infos[2].prefix == f"{PREFIX}v3/"
    assert infos[3].holder is not None and infos[3].holder.label == "crashed run"
    assert store.versions(PREFIX, max_age_s=3600)[4].state == "abandoned"

    before = set(store.list(PREFIX))
    assert store.mark_abandoned(PREFIX) == [1, 4, 6]
    assert store.mark_abandoned(PREFIX) == []  # already marked
    after = set(store.list(PREFIX))
    assert after - before == {f"{PREFIX}v{n}/abandoned.json" for n in (1, 4, 6)}  # nothing deleted
    marker = json.loads(store.read_bytes(f"{PREFIX}v4/abandoned.json"))
    assert marker["version"] == 4 and marker["holder"]["label"] == "crashed run"
    assert marker["marked_by"]["pid"] == os.getpid()
    assert store.versions(PREFIX)[2].state == "reserved"  # the live one is untouched
    assert store.reserve_version(PREFIX, me) == 7  # numbers are never reused
    assert store.versions("characters/nobody/") == []


def test_version_prefix_builder() -> None:
    assert version_prefix("characters/mina/", 3) == "characters/mina/v3/"
    assert version_prefix("characters/mina", 3) == "characters/mina/v3/"
    assert version_prefix("", 1) == "v1/"
    with pytest.raises(UnsafeKey):
        version_prefix("../x/", 1)
    with pytest.raises(ValueError):
        version_prefix("a/", -1)


def test_a_version_is_complete_by_its_own_marker(store: LocalStore) -> None:
    """LoRA versions end with record.json, not manifest.json: they are complete, and never marked abandoned."""
    dead = Holder.current().model_copy(update={"pid": 2**22 + 7, "pid_started": None})
    assert store.reserve_version("loras/mina/", dead) == 1
    store.put_json({"lora": 1}, "loras/mina/v1/record.json")
    assert [v.state for v in store.versions("loras/mina/", complete="record.json")] == ["complete"]
    assert store.mark_abandoned("loras/mina/", complete="record.json") == []
    assert [v.state for v in store.versions("loras/mina/")] == ["abandoned"]  # by the manifest rule
