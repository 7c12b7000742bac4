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
disks; NFSv4 emulates it with POSIX locks). Orchestrators on several machines set ``REELFORGE_LOCKS=redis://...``
and get ``RedisStageLockManager`` (prefect-redis's lock manager with leases, below) from ``lock_manager_for``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect.context import FlowRunContext
from prefect.logging.loggers import get_run_logger
from prefect_redis.locking import RedisLockManager

from reelforge.settings import StoreSettings
from tasks.context import current_flow_run_id, current_task_run
from tasks.results import lock_folder_for

__all__ = ["LockServiceUnavailable", "RedisStageLockManager", "StageLockManager", "lock_manager_for"]

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


def _patience(
    key: str, timeout: float | None, poll_s: float, report_every_s: float, holder: Callable[[], dict[str, Any] | None]
) -> Iterator[float]:
    """Pauses between attempts until ``timeout``; says who holds the lock at once, then every so often."""
    begin = time.monotonic()
    next_report = begin
    while True:
        now = time.monotonic()
        if timeout is not None and now - begin >= timeout:
            return
        if now >= next_report:
            _logger().warning("waiting %.0f s for the cache lock of %s, held by %s", now - begin, key[:24],
                              describe(holder()))
            next_report = now + report_every_s
        yield poll_s


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
        return _patience(key, timeout, self.poll_s, self.report_every_s, lambda: self._info(key))

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


# ---------------------------------------------------------------------------------------------- Redis


_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  redis.call('pexpire', KEYS[2], ARGV[2])
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""


_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  redis.call('del', KEYS[2])
  return redis.call('del', KEYS[1])
end
return 0
"""


class RedisStageLockManager(RedisLockManager):  # type: ignore[misc]  # prefect-redis ships no types
    """prefect-redis's lock manager, for orchestrators on several machines, made safe against a killed holder.

    Prefect's task engine never passes a hold timeout, so a plain ``RedisLockManager`` lock has no expiry and a
    SIGKILLed orchestrator would block that stage everywhere for good. Here every lock is a lease of
    ``lease_s`` seconds, renewed by a daemon thread every third of it while this process holds it: a holder
    that dies stops renewing and the lease runs out. Beside each lock a ``…:info`` key says who holds it (job,
    flow run, pid, host), and a waiter logs that at once and then every ``report_every_s`` seconds.
    """

    def __init__(
        self,
        connection_url: str,
        *,
        lease_s: float = 60.0,
        prefix: str = "reelforge:",
        poll_s: float = 0.2,
        report_every_s: float = 30.0,
    ) -> None:
        self.lease_s = lease_s
        self.poll_s = poll_s
        self.prefix = prefix
        self.report_every_s = report_every_s
        self._held_tokens: dict[str, str] = {}  # lock name -> holder token, renewed by the thread
        self._guard = threading.Lock()
        self._renewer: threading.Thread | None = None
        super().__init__(connection_url=connection_url)

    def __repr__(self) -> str:  # never the URL: it may carry a password
        return f"RedisStageLockManager(prefix={self.prefix!r}, lease_s={self.lease_s:g})"

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "lease_s": self.lease_s, "prefix": self.prefix,
                "poll_s": self.poll_s, "report_every_s": self.report_every_s}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._held_tokens, self._guard, self._renewer = {}, threading.Lock(), None
        super().__setstate__(state)

    def _lock_name_for_key(self, key: str) -> str:  # type: ignore[override]
        return f"{self.prefix}lock:{key}"

    def _info_name(self, key: str) -> str:
        return f"{self.prefix}lock-info:{key}"

    def check(self) -> None:
        """Fail with a clear message when Redis does not answer (before any stage waits on it)."""
        try:
            self.client.ping()
        except Exception as exc:  # redis raises its own ConnectionError / AuthenticationError / TimeoutError
            raise LockServiceUnavailable(f"the Redis of REELFORGE_LOCKS did not answer: {type(exc).__name__}: "
                                         f"{_no_url(str(exc))}") from None

    # ---------------------------------------------------------------- leases

    def _held(self, key: str, holder: str) -> None:
        name = self._lock_name_for_key(key)
        self.client.set(self._info_name(key), json.dumps(_who(holder)), px=int(self.lease_s * 1000))
        with self._guard:
            self._held_tokens[name] = holder
            if self._renewer is None or not self._renewer.is_alive():
                self._renewer = threading.Thread(target=self._renew_forever, name="reelforge-lock-renewer",
                                                 daemon=True)
                self._renewer.start()

    def _renew_forever(self) -> None:
        renew = self.client.register_script(_RENEW)
        while True:
            time.sleep(self.lease_s / 3)
            with self._guard:
                held = dict(self._held_tokens)
            if not held:
                with self._guard:
                    if not self._held_tokens:
                        self._renewer = None
                        return
                continue
            for name, token in held.items():
                info = name.replace(f"{self.prefix}lock:", f"{self.prefix}lock-info:", 1)
                try:
                    if not renew(keys=[name, info], args=[token, int(self.lease_s * 1000)]):
                        log.warning("cache lock %s was lost (expired or taken over) while held", name[-24:])
                except Exception as exc:  # Redis away for a moment: the next round tries again
                    log.warning("could not renew cache lock %s: %s", name[-24:], type(exc).__name__)

    def _holder_of(self, key: str) -> dict[str, Any] | None:
        try:
            raw = self.client.get(self._info_name(key))
            data = json.loads(raw) if raw else None
        except Exception:
            return None
        return data if isinstance(data, dict) else None

    # ---------------------------------------------------------------- LockManager protocol

    def _try(self, key: str, holder: str, hold_timeout: float | None) -> bool:
        if super().acquire_lock(key, holder, acquire_timeout=0, hold_timeout=hold_timeout or self.lease_s):
            self._held(key, holder)
            return True
        return False

    # One non-blocking attempt per pause, on the sync client for both paths: redis-py's own blocking acquire
    # gives up at once when less than its sleep (0.1 s) is left, and says nothing while it waits.
    def acquire_lock(
        self, key: str, holder: str, acquire_timeout: float | None = None, hold_timeout: float | None = None
    ) -> bool:
        if self._try(key, holder, hold_timeout):
            return True
        for pause in _patience(key, acquire_timeout, self.poll_s, self.report_every_s, lambda: self._holder_of(key)):
            time.sleep(pause)
            if self._try(key, holder, hold_timeout):
                return True
        return False

    async def aacquire_lock(
        self, key: str, holder: str, acquire_timeout: float | None = None, hold_timeout: float | None = None
    ) -> bool:
        if await asyncio.to_thread(self._try, key, holder, hold_timeout):
            return True
        for pause in _patience(key, acquire_timeout, self.poll_s, self.report_every_s, lambda: self._holder_of(key)):
            await asyncio.sleep(pause)
            if await asyncio.to_thread(self._try, key, holder, hold_timeout):
                return True
        return False

    def release_lock(self, key: str, holder: str) -> None:
        # Not the base class's: Prefect releases synchronously even a lock its async path took, and
        # RedisLockManager then calls an AsyncLock's release() without awaiting it, so the key would stay.
        name = self._lock_name_for_key(key)
        with self._guard:
            self._held_tokens.pop(name, None)
        self._locks.pop(name, None)
        released = self.client.register_script(_RELEASE)(keys=[name, self._info_name(key)], args=[holder])
        if not released and self.client.exists(name):
            raise ValueError(f"No lock held by {holder} for transaction with key {key}")


class LockServiceUnavailable(RuntimeError):
    """The lock service named by REELFORGE_LOCKS did not answer."""


def _no_url(message: str) -> str:
    """redis-py's messages name host and port; drop anything that looks like a URL with credentials."""
    return re.sub(r"\w[\w+.-]*://\S+", "<REELFORGE_LOCKS>", message)


def lock_manager_for(settings: StoreSettings) -> StageLockManager | RedisStageLockManager:
    """The cache lock manager the settings ask for: Redis with ``REELFORGE_LOCKS``, flock-ed files otherwise."""
    if settings.locks is not None:
        return RedisStageLockManager(
            settings.locks.get_secret_value(), lease_s=settings.locks_lease_s, prefix=settings.locks_prefix
        )
    return StageLockManager(lock_folder_for(settings))
