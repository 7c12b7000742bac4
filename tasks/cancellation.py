"""Cancelling a flow run's GPU work: cleanup in the flow body, plus hooks as a backstop.

Prefect facts this is built on (measured, see docs/cancellation.md):

* A flow run from a deployment (``flow.serve()`` or a process worker) gets SIGTERM when cancelled; it arrives
  in the flow's own process within about a second, as ``TerminationSignal`` or, in an async flow whose
  event loop is torn down by it, as ``asyncio.CancelledError``. Only there is the flow's memory (its pool,
  what it submitted) still alive, so ``cancel_scope`` does the cleanup there.
* ``on_cancellation`` / ``on_crashed`` hooks of a deployed run run in the serving or worker process, seconds
  later, without the flow's memory. ``on_cancellation`` / ``on_crashed`` below therefore find the run's prompts
  through the workers' own queues (every prompt carries its flow run id in ``extra_data``).
* A flow called directly from Python cannot be cancelled through the API at all; Ctrl-C, a task cancel or a
  timeout in the caller's process raise inside the flow body and ``cancel_scope`` cleans up the same way.

Use (two lines in a flow)::

    @flow(on_cancellation=[on_cancellation], on_crashed=[on_crashed])
    async def my_flow() -> None:
        async with open_engine() as engine, cancel_scope(engine.pool):
            ...
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from prefect.logging.loggers import flow_run_logger, get_run_logger

from reelforge.comfy import CancelReport, WorkerPool, cancel_owned
from reelforge.fleet import worker_clients
from reelforge.settings import WorkerSettings
from tasks.context import current_flow_run_id

__all__ = [
    "CancelScope",
    "cancel_flow_run_prompts",
    "cancel_scope",
    "child_flow_run_ids",
    "on_batch_cancellation",
    "on_batch_crashed",
    "on_cancellation",
    "on_crashed",
]

log = logging.getLogger(__name__)

# The whole cleanup: a SIGTERM'd process must exit promptly even when a worker hangs (each request has its own
# timeout too, and each worker its settle time).
CLEANUP_TIMEOUT_S = 15.0


@dataclass
class CancelScope:
    """What ``cancel_scope`` saw and did; ``exception`` is None when the body exited normally."""

    flow_run_id: str | None
    exception: BaseException | None = None
    caught_at: float | None = None  # time.time() when the exception reached the scope
    finished_at: float | None = None  # time.time() when the cleanup was done
    report: CancelReport | None = None


def _logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    try:
        return get_run_logger()
    except Exception:  # outside a run context (a plain call of the engine)
        return log


async def _cleanup(pool: WorkerPool, scope: CancelScope, why: str, shared: bool) -> None:
    logger = _logger()
    if shared and scope.flow_run_id is not None:
        pool.stop_dispatch(why, flow_run_id=scope.flow_run_id)  # the pool goes on serving the other runs
    else:
        pool.stop_dispatch(why)
    # A submit already under way when dispatch stopped may still land on a worker: let it, then remove it.
    await pool.submissions_settled(timeout=5.0)
    if scope.flow_run_id is None:
        logger.warning("cancel_scope: no flow run id; dispatch stopped but prompts on workers are left alone")
        return
    if pool.ephemeral and not shared:
        # Embedded preview workers stop with this process; after a SIGTERM their servers are already being torn
        # down with the event loop, so asking them would only wait for request timeouts.
        logger.warning("cancel_scope (%s): dispatch stopped; the embedded preview workers stop with this run", why)
        return
    scope.report = await cancel_owned(pool.clients, scope.flow_run_id)
    logger.warning("cancel_scope (%s): %s", why, scope.report.summary())


@contextlib.asynccontextmanager
async def cancel_scope(
    pool: WorkerPool, *, flow_run_id: str | None = None, shared: bool = False
) -> AsyncIterator[CancelScope]:
    """Around a flow body: on ANY exit by exception, stop the pool and cancel this flow run's prompts.

    Catches everything (``TerminationSignal`` from a cancel via the API, ``asyncio.CancelledError`` from a
    timeout, Ctrl-C or a cancelled caller, ``KeyboardInterrupt``, plain errors), then: no more submissions
    (``pool.stop_dispatch``), pending prompts of the run deleted and its running ones interrupted on every
    worker of the pool (``cancel_owned``), and the exception re-raised unchanged. The cleanup runs to its end
    even if the task is cancelled again meanwhile (bounded by ``CLEANUP_TIMEOUT_S``).

    ``shared``: the pool serves other flow runs too (a batch's characters): only this run's jobs are stopped,
    and its prompts are removed even from embedded preview workers, which live on for the others.
    """
    scope = CancelScope(flow_run_id=flow_run_id or current_flow_run_id())
    try:
        yield scope
    except BaseException as exc:
        scope.exception = exc
        scope.caught_at = time.time()
        why = f"{type(exc).__name__}: {exc}".rstrip(": ")
        cleanup = asyncio.ensure_future(asyncio.wait_for(_cleanup(pool, scope, why, shared), CLEANUP_TIMEOUT_S))
        while not cleanup.done():
            try:
                await asyncio.shield(cleanup)
            except asyncio.CancelledError:
                continue  # cancelled again while cleaning up: finish the cleanup, then re-raise ``exc``
            except BaseException as err:  # the cleanup itself failed: report it, keep the original error
                _logger().error("cancel_scope: cleanup failed: %s: %s", type(err).__name__, err)
        scope.finished_at = time.time()
        raise


async def cancel_flow_run_prompts(
    flow_run_id: str | Sequence[str], *, settings: WorkerSettings | None = None, logger: Any = None
) -> CancelReport | None:
    """Cancel a flow run's prompts (or several runs' at once) on the configured workers
    (``REELFORGE_COMFY_URLS``); None when there are only embedded preview workers (they lived and died inside
    the flow's process)."""
    settings = settings or WorkerSettings()
    logger = logger or log
    if settings.embedded:
        logger.info(
            "flow run %s used embedded preview workers (REELFORGE_COMFY_URLS unset): nothing to cancel here",
            flow_run_id,
        )
        return None
    # A hook has seconds, not minutes: each request waits at most 10 s even with a longer configured timeout.
    quick = settings.model_copy(update={"request_timeout_s": min(10.0, settings.request_timeout_s)})
    async with httpx.AsyncClient(timeout=quick.request_timeout_s) as http:
        clients = worker_clients(quick, http)
        try:
            report = await cancel_owned(clients, flow_run_id)
        finally:
            for client in clients:
                with contextlib.suppress(Exception):
                    await client.aclose()
    logger.info("cancel hook: %s", report.summary())
    return report


async def _hook(flow_run: Any, flow: Any, state: Any) -> None:
    logger = flow_run_logger(flow_run=flow_run, flow=flow)
    logger.info("flow run %s entered %s: removing its prompts from the workers", flow_run.id, state.name)
    try:
        await cancel_flow_run_prompts(str(flow_run.id), logger=logger)
    except Exception as err:  # a hook must not fail the runner; the report names unreachable workers anyway
        logger.error("cancel hook failed: %s: %s", type(err).__name__, err)


async def on_cancellation(flow: Any, flow_run: Any, state: Any) -> None:
    """``on_cancellation`` hook: runs in the serving / worker process, finds the run's prompts by their owner."""
    await _hook(flow_run, flow, state)


async def on_crashed(flow: Any, flow_run: Any, state: Any) -> None:
    """``on_crashed`` hook: the flow process died (SIGKILL, OOM); its prompts may still be queued."""
    await _hook(flow_run, flow, state)


async def child_flow_run_ids(flow_run_id: str) -> list[str]:
    """The subflow runs of ``flow_run_id`` (a batch's characters), from the Prefect API, 200 per page."""
    from prefect.client.orchestration import get_client

    ids: list[str] = []
    async with get_client() as client:
        while True:
            # A raw filter call: prefect 3.8.8's read_flow_runs sends null for an omitted limit and sort, which
            # its own server refuses (422); the server allows at most 200 per page.
            response = await client._client.post(
                "/flow_runs/filter",
                json={"flow_runs": {"parent_flow_run_id": {"any_": [flow_run_id]}}, "limit": 200,
                      "offset": len(ids), "sort": "EXPECTED_START_TIME_ASC"},
            )
            response.raise_for_status()
            page = [str(run["id"]) for run in response.json()]
            ids += page
            if len(page) < 200:
                return ids


async def _batch_hook(flow_run: Any, flow: Any, state: Any) -> None:
    logger = flow_run_logger(flow_run=flow_run, flow=flow)
    try:
        children = await child_flow_run_ids(str(flow_run.id))
    except Exception as err:  # the API may be busy; the children's own hooks and scopes still act
        logger.error("batch cancel hook: cannot list the character runs: %s: %s", type(err).__name__, err)
        children = []
    logger.info("batch run %s entered %s: removing the prompts of its %d character run(s) from the workers",
                flow_run.id, state.name, len(children))
    try:  # all runs at once: every pending prompt goes before a running one is interrupted
        await cancel_flow_run_prompts([str(flow_run.id), *children], logger=logger)
    except Exception as err:
        logger.error("batch cancel hook failed: %s: %s", type(err).__name__, err)


async def on_batch_cancellation(flow: Any, flow_run: Any, state: Any) -> None:
    """``on_cancellation`` of a batch: its own prompts and every character run's (its subflows)."""
    await _batch_hook(flow_run, flow, state)


async def on_batch_crashed(flow: Any, flow_run: Any, state: Any) -> None:
    """``on_crashed`` of a batch: as ``on_batch_cancellation``."""
    await _batch_hook(flow_run, flow, state)
