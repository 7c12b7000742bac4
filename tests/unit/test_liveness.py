"""Holders and their liveness, with real processes: a child that exited, a zombie, a live sleeper."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reelforge.liveness import Holder, current_host, make_job_dir, pid_alive, process_start, sweep_stale_dirs


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield child
    finally:
        child.kill()
        child.wait()


def test_current_holder_is_alive() -> None:
    holder = Holder.current(flow_run_id="run-1", label="Mina Park")
    assert (holder.host, holder.pid, holder.flow_run_id, holder.label) == (
        current_host(),
        os.getpid(),
        "run-1",
        "Mina Park",
    )
    if sys.platform == "linux":
        assert holder.pid_started == process_start(os.getpid()) is not None
        assert holder.boot_id
    assert holder.alive() is True and holder.gone() is False and holder.gone(0) is False
    assert Holder.model_validate_json(holder.model_dump_json()) == holder


def test_exited_process_is_gone() -> None:
    holder = Holder.current().model_copy(update={"pid": _dead_pid(), "pid_started": None})
    assert holder.alive() is False and holder.gone() is True


def test_live_child_and_reused_pid(sleeper: subprocess.Popen[bytes]) -> None:
    holder = Holder.current().model_copy(update={"pid": sleeper.pid, "pid_started": process_start(sleeper.pid)})
    assert holder.alive() is True
    if sys.platform == "linux":  # same pid, other start time: the pid was reused by another process
        reused = holder.model_copy(update={"pid_started": (holder.pid_started or 0) + 1})
        assert reused.alive() is False and reused.gone() is True
        rebooted = holder.model_copy(update={"boot_id": "another-boot"})
        assert rebooted.alive() is False


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_zombie_is_not_alive() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    try:
        assert pid_alive(child.pid) is False  # exited, not yet reaped
    finally:
        child.wait()


def test_other_host_is_unknown_until_too_old() -> None:
    fresh = Holder(host="elsewhere.example", pid=1, since=datetime.now(UTC))
    old = fresh.model_copy(update={"since": datetime.now(UTC) - timedelta(hours=2)})
    assert fresh.alive() is None and old.alive() is None
    assert fresh.gone() is False and old.gone() is False  # no deadline: never given up
    assert fresh.gone(3600) is False and old.gone(3600) is True


def test_sweep_removes_only_dead_pids_folders(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    dead = _dead_pid()
    prefix = "reelforge-job-"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("k")
    stale = tmp_path / f"{prefix}{dead}-abc"
    (stale / "deep").mkdir(parents=True)
    (stale / "deep" / "frame.png").write_bytes(b"x")
    mine = tmp_path / f"{prefix}{os.getpid()}-x"
    alive = tmp_path / f"{prefix}{sleeper.pid}-y"
    other = tmp_path / "reelforge-jobless"
    for folder in (mine, alive, other):
        folder.mkdir()
    (tmp_path / f"{prefix}{dead}-file").write_text("a file, not a folder")
    (tmp_path / f"{prefix}{dead}-link").symlink_to(outside, target_is_directory=True)
    assert sweep_stale_dirs(tmp_path, prefix) == [stale]
    assert not stale.exists()
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(
        [mine.name, alive.name, other.name, f"{prefix}{dead}-file", f"{prefix}{dead}-link", "outside"]
    )
    assert (outside / "keep.txt").read_text() == "k"
    assert sweep_stale_dirs(tmp_path / "missing", prefix) == []


def test_make_job_dir_is_swept_once_its_process_died(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    mine = make_job_dir()
    assert mine.parent == tmp_path and mine.name.startswith(f"reelforge-job-{os.getpid()}-")
    script = "from reelforge.liveness import make_job_dir; print(make_job_dir())"
    theirs = Path(
        subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "TMPDIR": str(tmp_path)},
        ).stdout.strip()
    )
    assert theirs.is_dir() and theirs.parent == tmp_path
    assert sweep_stale_dirs(tmp_path) == [theirs]  # its process exited: swept; ours stays
    assert mine.is_dir()
