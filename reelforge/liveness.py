"""Who holds something, and whether that holder still lives (stdlib + pydantic; reads /proc, never signals).

* ``Holder``: host, pid, the pid's start time (``/proc/<pid>/stat`` field 22, clock ticks since boot) and the
  boot id, so a pid reused by another process, or the same pid after a reboot, does not pass for the holder.
* ``holder.alive()``: True / False on the same host; None (unknown) for another host.
* ``holder.gone(max_age_s)``: same host: not alive; other host: held for longer than ``max_age_s`` (never, when
  None: a remote holder is given up only on a deadline the caller chooses).
* ``make_job_dir()`` / ``sweep_stale_dirs()``: per-process scratch folders ``<prefix><pid>-<random>`` and the
  removal of those whose process died (a SIGKILL skips every ``finally``).

Limits: "same host" is the host name, so two containers sharing a host name but not a pid namespace would
judge each other's pids wrongly; give containers distinct host names (Kubernetes and Docker do by default).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import tempfile
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

JOB_DIR_PREFIX = "reelforge-job-"


@cache
def current_host() -> str:
    return socket.gethostname()


def boot_id() -> str | None:
    """The kernel's id of this boot (Linux), None where unavailable."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """``(state, start time in clock ticks)`` from ``/proc/<pid>/stat``; None if unreadable."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 2 (the command name) is in parentheses and may itself contain spaces and ')'.
    fields = text[text.rfind(")") + 2 :].split()
    try:
        return fields[0], int(fields[19])  # field 3 (state) and field 22 (starttime)
    except (IndexError, ValueError):
        return None


def process_start(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot (Linux), None where unavailable."""
    stat = _proc_stat(pid)
    return stat[1] if stat is not None else None


def pid_alive(pid: int, started: int | None = None) -> bool:
    """Whether ``pid`` runs on this host (and, with ``started``, is still the process that started then)."""
    if pid <= 0:
        return False
    stat = _proc_stat(pid)
    if stat is not None:
        state, start = stat
        if state in ("Z", "X"):  # exited, not yet reaped: it holds nothing any more
            return False
        return started is None or start == started
    # No /proc (macOS, BSD) or a hidden entry (hidepid): signal 0 only checks that the pid exists.
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Holder(BaseModel):
    """A process holding something (a version reservation, a scratch folder); written into the store as JSON."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    host: str
    pid: int = Field(ge=1)
    pid_started: int | None = None  # clock ticks since boot: tells a reused pid apart
    boot_id: str | None = None  # tells the same pid after a reboot apart
    flow_run_id: str | None = None
    label: str | None = None
    since: datetime

    @classmethod
    def current(cls, **fields: Any) -> Holder:
        """This process now; ``fields`` (``flow_run_id``, ``label``, ...) are added or override."""
        pid = os.getpid()
        values: dict[str, Any] = {
            "host": current_host(),
            "pid": pid,
            "pid_started": process_start(pid),
            "boot_id": boot_id(),
            "since": datetime.now(UTC),
        }
        values.update(fields)
        return cls(**values)

    def alive(self) -> bool | None:
        """True / False on this host; None for another host (its pids cannot be checked from here)."""
        if self.host != current_host():
            return None
        if self.boot_id is not None and boot_id() not in (None, self.boot_id):
            return False  # the host rebooted since
        return pid_alive(self.pid, self.pid_started)

    def gone(self, max_age_s: float | None = None) -> bool:
        """Same host: not alive. Other host: held longer than ``max_age_s`` (False when None)."""
        alive = self.alive()
        if alive is not None:
            return not alive
        if max_age_s is None:
            return False
        since = self.since if self.since.tzinfo is not None else self.since.replace(tzinfo=UTC)
        return (datetime.now(UTC) - since).total_seconds() > max_age_s


def make_job_dir(prefix: str = JOB_DIR_PREFIX) -> Path:
    """A new scratch folder ``<tmp>/<prefix><pid>-<random>`` for this process (see ``sweep_stale_dirs``)."""
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=tempfile.gettempdir()))


def sweep_stale_dirs(parent: Path | str, prefix: str = JOB_DIR_PREFIX) -> list[Path]:
    """Remove the folders ``<prefix><pid>-<anything>`` in ``parent`` whose process no longer runs here.

    Symlinks and files are never followed or removed; a folder that cannot be removed (another user's) is
    left and not listed. Returns the removed folders.
    """
    pattern = re.compile(re.escape(prefix) + r"(\d{1,10})-.+")
    removed: list[Path] = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match is None or not entry.is_dir(follow_symlinks=False):
            continue
        pid = int(match.group(1))
        if pid == os.getpid() or pid_alive(pid):
            continue
        path = Path(entry.path)
        with contextlib.suppress(OSError):
            shutil.rmtree(path)
        if not os.path.lexists(path):
            removed.append(path)
    return removed
