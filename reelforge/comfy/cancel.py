"""Cancel one flow run's prompts on ComfyUI workers, leaving everybody else's alone.

Every prompt we submit carries its owner in ``extra_data["reelforge"]`` (``JobOwner``: job id, flow run id,
task run id), so a worker's own ``GET /queue`` says whose each prompt is. ``cancel_owned`` needs nothing but
that: no memory of what was submitted, which is what a Prefect ``on_cancellation`` hook running in another
process has.

Per worker, in rounds:

1. read ``/queue``;
2. ``POST /queue {"delete": [...]}`` for the pending prompts of the flow run (one request, by prompt id);
3. ``ComfyClient.remove`` for the running one if it is ours: it re-reads /queue and sends a targeted
   ``POST /interrupt {"prompt_id": ...}`` only while that prompt runs (a worker with ComfyUI's targeted
   interrupt ignores it when another prompt runs, so nobody else's work is hit); a prompt that finished in
   the meantime is reported as ``finished``, not as interrupted;
4. read ``/queue`` again: a prompt may have moved from pending to running between 1 and 2, or an
   interrupted prompt may still be finishing its current node. Repeat until none of ours is left or the
   rounds / time run out.

A worker that cannot be reached is reported (``unreachable``), never raised: cancelling must go on with the
other workers. An interrupted prompt ends with ``execution_interrupted`` in the worker's history, and the
client's ``wait`` raises ``PromptInterrupted`` for it, so its partial outputs are never recorded as done.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection, Sequence

from pydantic import BaseModel, Field

from reelforge.comfy.client import ComfyClient
from reelforge.comfy.errors import ComfyError
from reelforge.comfy.types import QueueItem, QueueState

__all__ = ["CancelReport", "WorkerCancel", "cancel_owned", "owned_prompts"]

log = logging.getLogger(__name__)


class WorkerCancel(BaseModel):
    """What cancelling did on one worker."""

    worker: str
    url: str
    deleted: list[str] = Field(default_factory=list)  # pending prompts removed from the queue
    interrupted: list[str] = Field(default_factory=list)  # running prompts sent a targeted interrupt
    finished: list[str] = Field(default_factory=list)  # ours that completed before they could be stopped
    remaining: list[str] = Field(default_factory=list)  # ours still in the queue when we gave up
    unreachable: bool = False
    error: str | None = None
    rounds: int = 0

    @property
    def clean(self) -> bool:
        """True when the worker answered and holds none of the flow run's prompts any more."""
        return not self.unreachable and not self.remaining


class CancelReport(BaseModel):
    """What ``cancel_owned`` did, per worker."""

    flow_run_id: str
    workers: list[WorkerCancel] = Field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def deleted(self) -> list[str]:
        return [p for w in self.workers for p in w.deleted]

    @property
    def interrupted(self) -> list[str]:
        return [p for w in self.workers for p in w.interrupted]

    @property
    def remaining(self) -> list[str]:
        return [p for w in self.workers for p in w.remaining]

    @property
    def unreachable(self) -> list[str]:
        return [w.worker for w in self.workers if w.unreachable]

    @property
    def clean(self) -> bool:
        return all(w.clean for w in self.workers)

    def summary(self) -> str:
        return (
            f"flow run {self.flow_run_id}: {len(self.deleted)} pending deleted, "
            f"{len(self.interrupted)} running interrupted, {len(self.remaining)} still queued, "
            f"{len(self.unreachable)} worker(s) unreachable {self.unreachable or ''} in {self.elapsed_s:.2f} s"
        ).rstrip()


class _WorkerGone(Exception):
    """``ComfyClient.remove`` could not ask the worker (it reports that in its result instead of raising)."""


def _runs(flow_run_id: str | Collection[str]) -> frozenset[str]:
    return frozenset([flow_run_id] if isinstance(flow_run_id, str) else flow_run_id)


def _is_ours(item: QueueItem, flow_run_ids: frozenset[str]) -> bool:
    owner = item.owner
    return owner is not None and owner.flow_run_id in flow_run_ids


def owned_prompts(queue: QueueState, flow_run_id: str | Collection[str]) -> tuple[list[str], list[str]]:
    """(running, pending) prompt ids of ``flow_run_id`` (one run, or several) in a worker's queue."""
    runs = _runs(flow_run_id)
    running = [i.prompt_id for i in queue.running if _is_ours(i, runs)]
    pending = [i.prompt_id for i in queue.pending if _is_ours(i, runs)]
    return running, pending


async def _cancel_on(
    client: ComfyClient, flow_run_id: frozenset[str], *, max_rounds: int, settle_s: float, interval_s: float
) -> WorkerCancel:
    report = WorkerCancel(worker=client.name, url=client.url)
    deadline = time.monotonic() + settle_s
    deleted: set[str] = set()
    interrupted: set[str] = set()
    finished: set[str] = set()
    try:
        queue = await client.get_queue()
        while True:
            running, pending = owned_prompts(queue, flow_run_id)
            if not running and not pending:
                report.remaining = []
                break
            if report.rounds >= max_rounds or time.monotonic() >= deadline:
                report.remaining = running + pending
                break
            report.rounds += 1
            if pending:
                await client.delete_pending(pending)
                deleted.update(pending)
            for prompt_id in running:
                # remove() re-reads /queue and interrupts only if this prompt is the running one; the worker
                # checks the prompt id once more, so a prompt that just finished is not hit by mistake.
                removal = await client.remove(prompt_id)
                if removal.error is not None and removal.found == "unknown":
                    raise _WorkerGone(removal.error)  # remove() reports instead of raising
                if removal.action == "interrupted":
                    interrupted.add(prompt_id)
                elif removal.found == "finished":
                    finished.add(prompt_id)
            queue = await client.get_queue()
            running_now, pending_now = owned_prompts(queue, flow_run_id)
            if running_now or pending_now:
                # Either a prompt moved pending -> running under us, or the interrupted one is still finishing
                # its current node (a node without progress hooks cannot be stopped mid-way).
                await asyncio.sleep(interval_s)
                queue = await client.get_queue()
    except (ComfyError, OSError, _WorkerGone) as err:
        report.unreachable = True
        detail = str(err) if isinstance(err, _WorkerGone) else getattr(err, "message", None) or str(err)
        report.error = detail if isinstance(err, _WorkerGone) else f"{type(err).__name__}: {detail}"
        log.warning("cancel on %s for flow run %s: worker unreachable (%s)", client.name, flow_run_id, report.error)
    # A prompt we asked to delete that then showed up as running was interrupted, not deleted.
    report.deleted = sorted(deleted - interrupted - finished)
    report.interrupted = sorted(interrupted)
    report.finished = sorted(finished - interrupted)
    return report


async def cancel_owned(
    clients: Sequence[ComfyClient],
    flow_run_id: str | Collection[str],
    *,
    max_rounds: int = 10,
    settle_s: float = 15.0,
    interval_s: float = 0.2,
) -> CancelReport:
    """Delete the pending prompts of ``flow_run_id`` and interrupt its running ones, on every worker at once.

    Several runs at once (a batch and its characters): every one's pending prompts go before any running one is
    interrupted, so none of theirs starts in the gap.

    Prompts of other owners are never touched: deletion is by prompt id, interrupts are targeted by prompt
    id and only sent while that prompt runs. Each worker is re-read after acting and the work repeated (at
    most ``max_rounds`` times, within ``settle_s`` seconds) until none of the run's prompts is left there.
    Unreachable workers are reported in the result, not raised.
    """
    runs = _runs(flow_run_id)
    if not runs or not all(runs):
        raise ValueError("flow_run_id is empty: refusing to match prompts that carry no flow run id")
    begin = time.monotonic()
    results = await asyncio.gather(
        *(
            _cancel_on(c, runs, max_rounds=max_rounds, settle_s=settle_s, interval_s=interval_s)
            for c in clients
        )
    )
    report = CancelReport(
        flow_run_id=", ".join(sorted(runs)), workers=list(results), elapsed_s=time.monotonic() - begin
    )
    log.info("cancel: %s", report.summary())
    return report
