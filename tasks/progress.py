"""A flow run's progress artifact, fed by ComfyUI progress messages.

Progress = (stages finished + the fractions of the stages in flight) / stages planned. ComfyUI sends a message
per sampler step, so updates to the Prefect API are throttled: at most one every ``interval_s`` seconds, and the
latest value always lands (a trailing update is scheduled when one is skipped).

Listeners in the same process (``add_listener``: the ``reelforge run`` display) get every change at once, as a
``ProgressSnapshot`` with the running stages' current node and step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from uuid import UUID

from prefect.artifacts import acreate_progress_artifact, aupdate_progress_artifact

from reelforge.comfy import Progress
from tasks.context import current_flow_run_id

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Step:
    """Where a running stage is: the node it runs and the node's step (a sampler's value of max)."""

    fraction: float
    node: str | None = None
    value: float = 0.0
    max: float = 0.0


@dataclass(frozen=True)
class ProgressSnapshot:
    """A flow run's progress at one instant, for displays."""

    description: str
    flow_run_id: str | None
    planned: int
    done: int
    failed: int
    running: dict[str, Step] = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        if self.planned <= 0:
            return 0.0
        return min(1.0, (self.done + sum(s.fraction for s in self.running.values())) / self.planned)


Listener = Callable[[ProgressSnapshot], None]
_listeners: list[Listener] = []


def add_listener(listener: Listener) -> Callable[[], None]:
    """Call ``listener`` on every progress change of every flow run in this process; returns the remover."""
    _listeners.append(listener)
    return lambda: _listeners.remove(listener) if listener in _listeners else None


class FlowProgress:
    """Per-flow-run tracker: ``await start()``, ``plan(n)``, ``callback(job_id)`` per job, ``await close()``.

    Lives in the flow's event loop; the callbacks are synchronous (the pool calls them from its WebSocket
    reader) and only schedule the API update.
    """

    def __init__(self, *, key: str | None = None, description: str = "GPU jobs", interval_s: float = 0.5) -> None:
        self.key = key
        self.description = description
        self.interval_s = interval_s
        self.artifact_id: UUID | None = None
        self.planned = 0
        self.done = 0
        self.updates = 0  # API updates sent (for tests and benchmarks)
        self.failed = 0
        self.flow_run_id = current_flow_run_id()
        self._running: dict[str, Step] = {}
        self._last_sent = 0.0
        self._last_value: float | None = None
        self._pending: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ bookkeeping

    @property
    def fraction(self) -> float:
        if self.planned <= 0:
            return 0.0
        return min(1.0, (self.done + sum(s.fraction for s in self._running.values())) / self.planned)

    def snapshot(self) -> ProgressSnapshot:
        return ProgressSnapshot(
            self.description, self.flow_run_id, self.planned, self.done, self.failed, dict(self._running)
        )

    def plan(self, jobs: int) -> None:
        """Add ``jobs`` to the number planned (flows plan stage by stage)."""
        self.planned += jobs
        self._changed()

    def callback(self, job_id: str) -> Callable[[Progress], None]:
        """The ``on_progress`` callback for one job."""

        def on_progress(progress: Progress) -> None:
            fraction = max(0.0, min(1.0, progress.fraction))
            self._running[job_id] = Step(fraction, progress.node, progress.value, progress.max)
            self._changed()

        return on_progress

    def job_step(self, job_id: str, step: Step) -> None:
        """Where a running job is, when it is not a ComfyUI prompt (a batch's character runs)."""
        self._running[job_id] = step
        self._changed()

    def job_done(self, job_id: str) -> None:
        self._running.pop(job_id, None)
        self.done += 1
        self._changed()

    def job_failed(self, job_id: str, *, counted: bool = True) -> None:
        """The stage ended without a result; ``counted=False`` for one that was stopped, not failed."""
        self._running.pop(job_id, None)
        self.failed += int(counted)
        self._changed()

    # ------------------------------------------------------------------ Prefect artifact

    async def start(self) -> UUID:
        self.artifact_id = await acreate_progress_artifact(
            progress=0.0, key=self.key, description=self.description
        )
        self._last_sent = time.monotonic()
        self._last_value = 0.0
        return self.artifact_id

    def _changed(self) -> None:
        if _listeners:
            snapshot = self.snapshot()
            for listener in list(_listeners):
                try:
                    listener(snapshot)
                except Exception:  # a display must never break the flow
                    log.exception("progress listener failed")
        if self.artifact_id is None or self._pending is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        delay = max(0.0, self._last_sent + self.interval_s - time.monotonic())
        self._pending = loop.create_task(self._send_after(delay), name="reelforge-progress")

    async def _send_after(self, delay: float) -> None:
        try:
            if delay > 0:
                await asyncio.sleep(delay)
        finally:
            self._pending = None
        await self._send()

    async def _send(self) -> None:
        if self.artifact_id is None:
            return
        value = round(100.0 * self.fraction, 1)
        if value == self._last_value:
            return
        self._last_sent = time.monotonic()
        self._last_value = value
        try:
            await aupdate_progress_artifact(self.artifact_id, progress=value)
            self.updates += 1
        except Exception as exc:  # progress is a display: never fail a flow for it
            log.warning("progress artifact update failed: %s", exc)

    async def close(self) -> None:
        """Cancel a pending trailing update and send the final value now."""
        if self._pending is not None:
            self._pending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pending
            self._pending = None
        await self._send()
