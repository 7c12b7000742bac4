"""Cache locks for SERIALIZABLE stages: two runs of the same stage compute it once, and a crash never hangs a run.

Prefect's ``FileSystemLockManager`` marks a lock by the existence of a file, with no expiry unless the caller
gives one (the task engine never does): after a SIGKILL the files stay and every later run waits on them
forever, silently. ``StageLockManager`` holds an ``flock`` on the lock file instead, so:

* the kernel releases the lock when its holder dies (SIGKILL, OOM, power loss of a local process): the next
  run takes it over at once, no expiry to tune;
* the file also holds who took it (job, flow run, task run, pid, host, since), and a run that has to wait
  logs that once, then every ``report_every_s`` seconds, so a wait is never silent;
* lock files are removed on release (unlinked while still locked; a waiter that got the lock on an unlinked
  file notices the inode changed and tries again), so the lock folder does not grow.

It works across processes on one machine and across machines on a file system with working ``flock`` (local
disks; NFSv4 emulates it with POSIX locks).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect.context import FlowRunContext
from prefect.logging.loggers import get_run_logger

from tasks.context import current_flow_run_id, current_task_run

__all__ = ["StageLockManager"]

log = logging.getLogger(__name__)


@dataclass
class _Held:
    fd: int
    holder: str


def _logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    try:
        return get_run_logger()
    except Exception:  # outside a run context
        return log


def _who(holder: str) -> dict[str, Any]:
    task = current_task_run()
    flow = FlowRunContext.get()
    return {
        "holder": holder,
        "job": task[1] if task else None,
        "task_run_id": task[0] if task else None,
        "flow_run_id": current_flow_run_id(),
        "flow_run_name": flow.flow_run.name if flow and flow.flow_run else None,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def describe(info: dict[str, Any] | None) -> str:
    """``job X of flow run Y (pid P on host H) since T`` from a lock file's contents."""
    if not info:
        return "an unknown holder (the lock file is being written)"
    run = info.get("flow_run_name") or info.get("flow_run_id") or "no flow run"
    return (
        f"job {info.get('job') or '?'} of flow run {run} (pid {info.get('pid')} on host {info.get('host')}) "
        f"since {info.get('since')}"
    )


class StageLockManager:
    """A Prefect ``LockManager`` (protocol) over ``flock``-ed files in ``folder``."""

    def __init__(self, folder: Path, *, poll_s: float = 0.2, report_every_s: float = 30.0) -> None:
        self.folder = Path(folder).expanduser().resolve()
        self.poll_s = poll_s
        self.report_every_s = report_every_s
        self._held: dict[str, _Held] = {}

    def __repr__(self) -> str:
        return f"StageLockManager({str(self.folder)!r})"

    def path_for(self, key: str) -> Path:
        return self.folder / f"{key}.lock"

    # ---------------------------------------------------------------- core

    def _try(self, key: str, holder: str) -> bool:
        """One non-blocking attempt; True when ``holder`` now holds the lock."""
        held = self._held.get(key)
        if held is not None:
            return held.holder == holder
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.path_for(key)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                return False
            raise
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # the previous holder unlinked the file we locked: start over on the new one
            os.close(fd)
            return self._try(key, holder)
        data = json.dumps(_who(holder)).encode("utf-8")
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        self._held[key] = _Held(fd, holder)
        return True

    def _info(self, key: str) -> dict[str, Any] | None:
        try:
            data = json.loads(self.path_for(key).read_bytes() or b"null")
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _patience(self, key: str, timeout: float | None) -> Iterator[float]:
        """Pauses between attempts until ``timeout``; says who holds the lock at once, then every so often."""
        begin = time.monotonic()
        next_report = begin
        while True:
            now = time.monotonic()
            if timeout is not None and now - begin >= timeout:
                return
            if now >= next_report:
                held_by = describe(self._info(key))
                _logger().warning("waiting %.0f s for the cache lock of %s, held by %s", now - begin, key[:24], held_by)
                next_report = now + self.report_every_s
            yield self.poll_s

    # ---------------------------------------------------------------- LockManager protocol

    def acquire_lock(
        self, key: str, holder: str, acquire_timeout: float | None = None, hold_timeout: float | None = None
    ) -> bool:
        if self._try(key, holder):
            return True
        for pause in self._patience(key, acquire_timeout):
            time.sleep(pause)
            if self._try(key, holder):
                return True
        return False

    async def aacquire_lock(
        self, key: str, holder: str, acquire_timeout: float | None = None, hold_timeout: float | None = None
    ) -> bool:
        if self._try(key, holder):
            return True
        for pause in self._patience(key, acquire_timeout):
            await asyncio.sleep(pause)
            if self._try(key, holder):
                return True
        return False

    def release_lock(self, key: str, holder: str) -> None:
        held = self._held.get(key)
        if held is None or held.holder != holder:
            raise ValueError(f"No lock held by {holder} for transaction with key {key}")
        del self._held[key]
        # Unlink while still locked, so nobody can lock this inode and believe it current (see _try).
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path_for(key))
        with contextlib.suppress(OSError):
            fcntl.flock(held.fd, fcntl.LOCK_UN)
        os.close(held.fd)

    def is_locked(self, key: str) -> bool:
        if key in self._held:
            return True
        path = self.path_for(key)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        finally:
            os.close(fd)  # closing drops the shared lock we may have taken
        return False

    def is_lock_holder(self, key: str, holder: str) -> bool:
        held = self._held.get(key)
        return held is not None and held.holder == holder

    def wait_for_lock(self, key: str, timeout: float | None = None) -> bool:
        if not self.is_locked(key):
            return True
        for pause in self._patience(key, timeout):
            time.sleep(pause)
            if not self.is_locked(key):
                return True
        return False

    async def await_for_lock(self, key: str, timeout: float | None = None) -> bool:
        if not self.is_locked(key):
            return True
        for pause in self._patience(key, timeout):
            await asyncio.sleep(pause)
            if not self.is_locked(key):
                return True
        return False
