"""Stage cache locks (tasks/locks.py): held by the kernel, so a killed holder frees them; a wait is never silent."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasks.locks import StageLockManager, describe

HOLD = """
import sys, time
from pathlib import Path
from tasks.locks import StageLockManager
locks = StageLockManager(Path(sys.argv[1]))
assert locks.acquire_lock(sys.argv[2], "other-process")
print("locked", flush=True)
time.sleep(600)
"""


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the lock ``k`` in ``tmp_path/locks``."""
    args = [sys.executable, "-c", HOLD, str(tmp_path / "locks"), "k"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_acquire_release_and_reentry(tmp_path: Path) -> None:
    locks = StageLockManager(tmp_path / "locks")
    assert not locks.is_locked("k")
    assert locks.acquire_lock("k", "me") and locks.is_locked("k") and locks.is_lock_holder("k", "me")
    assert locks.acquire_lock("k", "me", acquire_timeout=0)  # the holder itself is never blocked
    assert not locks.acquire_lock("k", "someone-else", acquire_timeout=0)
    with pytest.raises(ValueError, match="No lock held by someone-else"):
        locks.release_lock("k", "someone-else")
    locks.release_lock("k", "me")
    assert not locks.is_locked("k") and not (tmp_path / "locks" / "k.lock").exists()
    assert locks.acquire_lock("k", "someone-else", acquire_timeout=0)


def test_a_waiter_says_who_holds_the_lock_and_since_when(
    tmp_path: Path, holder: subprocess.Popen[str], caplog: pytest.LogCaptureFixture
) -> None:
    locks = StageLockManager(tmp_path / "locks", poll_s=0.05, report_every_s=0.2)
    assert locks.is_locked("k")
    with caplog.at_level(logging.WARNING, logger="tasks.locks"):
        begin = time.monotonic()
        assert not locks.acquire_lock("k", "me", acquire_timeout=0.7)
    assert 0.6 < time.monotonic() - begin < 5
    waits = [r.getMessage() for r in caplog.records if "waiting" in r.getMessage()]
    assert len(waits) >= 2, "the first report comes at once, then every report_every_s"
    assert f"pid {holder.pid} on host {socket.gethostname()}" in waits[0] and "since 20" in waits[0]


def test_a_killed_holder_frees_the_lock_at_once(tmp_path: Path, holder: subprocess.Popen[str]) -> None:
    locks = StageLockManager(tmp_path / "locks", poll_s=0.05)
    assert not locks.acquire_lock("k", "me", acquire_timeout=0.2)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert (tmp_path / "locks" / "k.lock").exists()  # the file stays; the kernel dropped the lock
    begin = time.monotonic()
    assert locks.acquire_lock("k", "me", acquire_timeout=5)
    assert time.monotonic() - begin < 1


def test_describe_names_job_run_process_and_time() -> None:
    info = {"job": "mina-v1-var03", "flow_run_name": "brave-fox", "pid": 42, "host": "gpu-orch-1", "since": "T"}
    assert describe(info) == "job mina-v1-var03 of flow run brave-fox (pid 42 on host gpu-orch-1) since T"
    assert "unknown holder" in describe(None)
