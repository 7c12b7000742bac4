"""A pool of ComfyUI workers: capability routing, health with cooldown, a shallow queue, failover.

* **Routing** (``routing.py``): a job goes to a worker that has its node classes, model files and label,
  preferring the worker whose latest job loads the same checkpoint / diffusion model, then the least busy.
* **Shallow queue**: at most ``1 + queue_depth`` of our prompts (running + pending) sit on one worker.
  With ``queue_depth=1`` the next prompt is already queued when the running one finishes, so the GPU never
  idles between jobs, yet everything else stays here, re-routable to whichever worker frees up first.
  Waiting jobs are served first-come first-served: a job is skipped only when no worker it could use is
  free, so a later job never takes a slot an earlier one could have used.
* **Health**: ``start()`` checks every worker (``/system_stats``, ``/object_info``, ``/models/<folder>``)
  concurrently. A watcher per worker re-checks healthy workers every ``health_interval`` seconds. A worker
  whose check or job fails is marked unhealthy and cools down (``cooldown_base * 2**(n-1)``, capped at
  ``cooldown_max``); when the cooldown ends it is checked again and, if it answers, its capabilities are
  re-read and it takes jobs again.
* **Failover**: when a worker dies or restarts under a job (``WorkerUnavailable``, ``WorkerTimeout``,
  ``WorkerServerError``, ``PromptLost``), the pool first asks that worker, if reachable, about the prompt:
  still running -> keep waiting there; finished -> return that result (a job never runs twice when it did
  complete); pending -> delete it there. Otherwise the worker cools down and the job runs again on another
  eligible worker under a new prompt id, at most ``max_failovers`` times. Permanent errors propagate at once.
* **Shared admission** (``admission="shared"``): when several orchestrator processes (or machines) share the
  workers, each pool only knows its own prompts. Then the worker's own queue is the shared truth: before
  submitting, the pool reads ``GET /queue`` and submits only while everything there (any orchestrator's
  prompts, a person's from the ComfyUI page) plus its own granted slots stays within ``1 + queue_depth``;
  after submitting it reads the queue again and, if its prompt ranks beyond ``1 + queue_depth`` there (two
  pools submitted at once; the earlier POST keeps its place), it takes the prompt back while still pending
  and waits for the next slot. Each worker's ``status`` broadcast (sent to every socket on every queue change)
  keeps the count of other prompts current, so a pool re-tries a worker the moment it frees up. Two
  ``GET /queue`` per job, no shared service; see docs/scale-out.md.
* **Stopping** (``stop_dispatch``): when the flow run that owns the pool is cancelled, nothing more is
  submitted: waiting jobs, later ``run`` calls and failovers fail with ``DispatchStopped``. Prompts already
  on workers are removed by ``reelforge.comfy.cancel.cancel_owned``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any, Literal

import httpx
from pydantic import BaseModel

from reelforge.comfy.client import ComfyClient
from reelforge.comfy.errors import (
    ComfyError,
    JobDeadlineExceeded,
    NoEligibleWorker,
    NoWorkerAvailable,
    PermanentComfyError,
    PromptLost,
    RequestRejected,
    TransientComfyError,
    WorkerServerError,
    WorkerTimeout,
    WorkerUnavailable,
)
from reelforge.comfy.graph import ModelRef
from reelforge.comfy.routing import Requirement, WorkerSnapshot, any_eligible_healthy, choose_worker
from reelforge.comfy.types import Graph, JobOwner, JobResult, Progress

__all__ = ["JOB_PRIORITY", "AdmissionMode", "DispatchStopped", "NoHealthyWorkers", "WorkerPool", "WorkerStatus"]

AdmissionMode = Literal["local", "shared"]
"""``local``: count only this pool's prompts per worker; ``shared``: the worker's queue counts (see above)."""

log = logging.getLogger(__name__)

Prepare = Callable[[ComfyClient, Graph], Awaitable[Graph]]
"""Per-attempt hook: given the chosen worker's client and the graph, upload inputs and return the graph to run."""

# Errors meaning "the worker died, restarted or hung under this job": the job may run elsewhere.
FAILOVER_ERRORS: tuple[type[TransientComfyError], ...] = (
    WorkerUnavailable,
    WorkerTimeout,
    WorkerServerError,
    PromptLost,
)

_TICK = 0.5  # seconds between a waiting job's checks of its own deadline / unavailability


class DispatchStopped(PermanentComfyError):
    """The pool was told to submit nothing more (its flow run is being cancelled)."""


class _NoRoom(Exception):
    """Shared admission: the worker's queue was full (or our prompt was taken back as the overshoot)."""


class NoHealthyWorkers(NoEligibleWorker):
    """At start, no configured worker became healthy within the grace period; ``reasons`` names each one's
    failure. Permanent: a retry would wait the same way."""


class WorkerStatus(BaseModel):
    """One worker as the pool sees it, for display."""

    name: str
    url: str
    labels: list[str]
    healthy: bool
    cooling_s: float  # seconds of cooldown left (0 when not cooling)
    in_flight: int  # ours, running + pending
    others: int  # prompts on the worker from elsewhere, as last seen (shared admission; 0 otherwise)
    capacity: int
    node_classes: int | None  # number of classes known (None: never answered)
    last_models: list[str]
    completed: int
    failed_over: int  # jobs that left this worker because it failed under them
    consecutive_failures: int
    last_error: str | None


@dataclass(eq=False)
class _Worker:
    client: ComfyClient
    name: str
    url: str
    labels: frozenset[str]
    order: int
    healthy: bool = False
    cooling_until: float = 0.0
    failures: int = 0  # consecutive, drives the backoff
    node_classes: frozenset[str] | None = None
    models: dict[str, frozenset[str]] = field(default_factory=dict)
    last_models: frozenset[ModelRef] = frozenset()
    in_flight: int = 0
    prompts: set[str] = field(default_factory=set)  # ours submitted there and not yet finished
    others: int = 0  # shared admission: prompts there that are not ours, as last seen ...
    others_until: float = 0.0  # ... trusted until then (a missed broadcast never blocks the worker for good)
    completed: int = 0
    failed_over: int = 0
    last_error: str | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def others_at(self, now: float) -> int:
        return self.others if now < self.others_until else 0

    def snapshot(self, capacity: int, now: float = 0.0) -> WorkerSnapshot:
        return WorkerSnapshot(
            name=self.name,
            url=self.url,
            labels=self.labels,
            healthy=self.healthy,
            cooling_until=self.cooling_until,
            in_flight=self.in_flight + self.others_at(now),
            capacity=capacity,
            node_classes=self.node_classes,
            models=self.models,
            last_models=self.last_models,
            order=self.order,
        )


JOB_PRIORITY: contextvars.ContextVar[int] = contextvars.ContextVar("reelforge_job_priority", default=0)
"""The priority of the jobs run in this context (lower first): set around a batch's character runs."""


@dataclass(eq=False)
class _Ticket:
    requirement: Requirement
    future: asyncio.Future[_Worker]
    unavailable_since: float | None = None
    run: str | None = None  # the flow run the job belongs to (a per-run stop fails only its tickets)
    priority: int = 0  # lower first; equal priorities in arrival order


def _client_name(client: ComfyClient) -> str:
    name = getattr(client, "name", None)
    return str(name) if name else _client_url(client)


def _client_url(client: ComfyClient) -> str:
    return str(getattr(client, "url", "")).rstrip("/")


class WorkerPool:
    """Routes jobs over ComfyUI workers; use as ``async with WorkerPool(clients) as pool``."""

    def __init__(
        self,
        clients: Sequence[ComfyClient],
        *,
        labels: Mapping[str, set[str]] | None = None,
        queue_depth: int = 1,
        health_interval: float = 10.0,
        cooldown_base: float = 1.0,
        cooldown_max: float = 60.0,
        max_failovers: int = 2,
        unavailable_timeout: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        ephemeral: bool = False,
        admission: AdmissionMode = "local",
        others_ttl: float = 2.0,
    ) -> None:
        """``ephemeral``: the workers live and die with this process (embedded preview workers), so there is
        nothing to clean up on them after a cancel. ``admission``: see the module docstring; ``others_ttl``:
        how long a count of other prompts on a worker is trusted without a fresh broadcast."""
        if queue_depth < 0:
            raise ValueError("queue_depth must be >= 0")
        if admission not in ("local", "shared"):
            raise ValueError(f"admission must be 'local' or 'shared', not {admission!r}")
        self.admission: AdmissionMode = admission
        self.others_ttl = others_ttl
        self.ephemeral = ephemeral
        self.queue_depth = queue_depth
        self.health_interval = health_interval
        self.cooldown_base = cooldown_base
        self.cooldown_max = cooldown_max
        self.max_failovers = max_failovers
        self.unavailable_timeout = unavailable_timeout
        self._clock = clock
        labels = {k.rstrip("/"): v for k, v in (labels or {}).items()}
        self._workers: list[_Worker] = []
        seen: set[str] = set()
        for order, client in enumerate(clients):
            name, url = _client_name(client), _client_url(client)
            if name in seen:
                raise ValueError(f"two workers are named {name!r}")
            seen.add(name)
            worker_labels = set(labels.get(name, set())) | set(labels.get(url, set()))
            self._workers.append(
                _Worker(client=client, name=name, url=url, labels=frozenset(worker_labels), order=order)
            )
        self._tickets: list[_Ticket] = []
        self._watchers: list[asyncio.Task[None]] = []
        self._owned: list[ComfyClient] = []
        self._owned_http: httpx.AsyncClient | None = None
        self._started = False
        self._closed = False
        self._refresh_lock = asyncio.Lock()
        self._refresh_generation = 0
        self._stopped: str | None = None  # why dispatch was stopped (None: running normally)
        self._stopped_runs: dict[str, str] = {}  # flow run id -> why its jobs may not be submitted any more
        self._submitting = 0  # submit POSTs in flight
        self._no_submits = asyncio.Event()  # set while none is
        self._no_submits.set()
        self.failovers = 0  # jobs re-run elsewhere
        self.salvaged = 0  # failures resolved on the original worker (finished or still running there)
        self.declined = 0  # shared admission: submits not made because the worker's queue was full
        self.withdrawn = 0  # shared admission: prompts taken back as the overshoot of a simultaneous submit

    # ------------------------------------------------------------------ construction / lifecycle

    @classmethod
    def from_urls(
        cls,
        urls_with_labels: Mapping[str, Iterable[str]] | Iterable[str],
        *,
        http: httpx.AsyncClient | None = None,
        token: str | None = None,
        **kwargs: Any,
    ) -> WorkerPool:
        """A pool over ComfyUI URLs (optionally ``{url: labels}``); the pool closes the clients it made."""
        if isinstance(urls_with_labels, Mapping):
            labels = {str(u).rstrip("/"): set(ls) for u, ls in urls_with_labels.items()}
            urls = list(labels)
        else:
            urls = [str(u).rstrip("/") for u in urls_with_labels]
            labels = {}
        owned_http = None
        if http is None:
            owned_http = http = httpx.AsyncClient(
                timeout=30.0, limits=httpx.Limits(max_connections=64, max_keepalive_connections=32)
            )
        clients = [ComfyClient(url, http=http, token=token) for url in urls]
        pool = cls(clients, labels=labels or None, **kwargs)
        pool._owned = list(clients)
        pool._owned_http = owned_http
        return pool

    async def __aenter__(self) -> WorkerPool:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Check every worker once (concurrently), then keep watching their health in the background."""
        if self._started:
            return
        self._started = True
        await asyncio.gather(*(self._check(w, full=True) for w in self._workers))
        healthy = [w.name for w in self._workers if w.healthy]
        log.info("worker pool started: %d/%d healthy %s", len(healthy), len(self._workers), healthy)
        for w in self._workers:
            if not w.healthy:
                log.warning("worker %s (%s) is not healthy at start: %s", w.name, w.url, w.last_error)
        self._watchers = [
            asyncio.create_task(self._watch(w), name=f"pool-health-{w.name}") for w in self._workers
        ]
        if self.admission == "shared":
            for w in self._workers:
                w.client.watch_queue(functools.partial(self._on_queue, w))
        self._dispatch()

    async def aclose(self) -> None:
        """Stop the health watchers and fail waiting jobs; close the clients made by ``from_urls``."""
        if self._closed:
            return
        self._closed = True
        for task in self._watchers:
            task.cancel()
        for task in self._watchers:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for ticket in self._tickets:
            if not ticket.future.done():
                ticket.future.set_exception(NoWorkerAvailable("the worker pool was closed"))
        self._tickets.clear()
        for client in self._owned:
            with contextlib.suppress(Exception):
                await client.aclose()
        if self._owned_http is not None:
            await self._owned_http.aclose()

    def stop_dispatch(self, reason: str = "the pool was stopped", *, flow_run_id: str | None = None) -> None:
        """Submit nothing more: jobs waiting for a slot, later ``run`` calls and failovers fail with
        ``DispatchStopped``. Prompts already on workers are left alone (see ``cancel.cancel_owned``).

        With ``flow_run_id``, only that flow run's jobs are stopped: the pool goes on serving the others (a
        batch's characters share one pool, and one cancelled or failed character must not stop the rest)."""
        if flow_run_id is not None:
            self._stopped_runs.setdefault(flow_run_id, reason)
            log.info("worker pool: dispatch stopped for flow run %s (%s)", flow_run_id, reason)
        elif self._stopped is None:
            self._stopped = reason
            log.info("worker pool: dispatch stopped (%s)", reason)
        for ticket in list(self._tickets):
            why = self._stop_reason(ticket.run)
            if why is not None and not ticket.future.done():
                ticket.future.set_exception(DispatchStopped(why))
        self._tickets = [t for t in self._tickets if not t.future.done()]

    def _stop_reason(self, run: str | None) -> str | None:
        if self._stopped is not None:
            return self._stopped
        return self._stopped_runs.get(run) if run is not None else None

    @property
    def stopped(self) -> bool:
        return self._stopped is not None

    async def submissions_settled(self, timeout: float = 5.0) -> bool:
        """Wait until no submit request is in flight (after ``stop_dispatch`` none starts); False on timeout."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._no_submits.wait()
        return not self._submitting

    # ------------------------------------------------------------------ introspection

    @property
    def capacity(self) -> int:
        """Our prompts allowed per worker: one running plus ``queue_depth`` pending."""
        return 1 + self.queue_depth

    def snapshots(self) -> list[WorkerSnapshot]:
        now = self._clock()
        return [w.snapshot(self.capacity, now) for w in self._workers]

    def status(self) -> list[WorkerStatus]:
        now = self._clock()
        return [
            WorkerStatus(
                name=w.name,
                url=w.url,
                labels=sorted(w.labels),
                healthy=w.healthy,
                cooling_s=round(max(0.0, w.cooling_until - now), 3),
                in_flight=w.in_flight,
                others=w.others_at(now),
                capacity=self.capacity,
                node_classes=None if w.node_classes is None else len(w.node_classes),
                last_models=sorted(str(m) for m in w.last_models),
                completed=w.completed,
                failed_over=w.failed_over,
                consecutive_failures=w.failures,
                last_error=w.last_error,
            )
            for w in self._workers
        ]

    def client_for(self, worker: str) -> ComfyClient:
        """The client of a worker, by the name or URL a ``JobResult.worker`` carries."""
        key = worker.rstrip("/")
        for w in self._workers:
            if key in (w.name, w.url) or key == _client_name(w.client):
                return w.client
        raise KeyError(f"no worker {worker!r} in this pool")

    @property
    def clients(self) -> list[ComfyClient]:
        return [w.client for w in self._workers]

    def _worker(self, worker: str) -> _Worker:
        key = worker.rstrip("/")
        for w in self._workers:
            if key in (w.name, w.url):
                return w
        raise KeyError(f"no worker {worker!r} in this pool")

    def _name_of(self, worker: str) -> str:
        try:
            return self._worker(worker).name
        except KeyError:
            return worker

    def report_failure(self, worker: str, err: BaseException) -> None:
        """Something outside a job's prompt failed on ``worker`` (e.g. its downloads): it cools down and is
        checked again like after a failed job."""
        self._mark_unhealthy(self._worker(worker), err)

    async def wait_healthy(self, grace_s: float) -> list[WorkerStatus]:
        """Wait up to ``grace_s`` seconds for at least one healthy worker; returns the status of every worker.

        Raises ``NoHealthyWorkers`` (permanent: waiting longer in a retry would not help) listing every worker
        and why it is not healthy.
        """
        deadline = self._clock() + grace_s
        while not any(w.healthy for w in self._workers):
            left = deadline - self._clock()
            if left <= 0:
                raise NoHealthyWorkers(
                    f"no worker became healthy within {grace_s:g} s (REELFORGE_WORKER_GRACE_S)",
                    reasons={w.name: w.last_error or "never answered" for w in self._workers},
                )
            for w in self._workers:
                w.wake.set()  # re-check now rather than after a cooldown
            await asyncio.sleep(min(0.25, left))
        return self.status()

    # ------------------------------------------------------------------ running jobs

    async def run(
        self,
        graph: Graph,
        *,
        job_id: str | None = None,
        owner: JobOwner | None = None,
        label: str | None = None,
        models: Iterable[ModelRef] | None = None,
        timeout: float | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        prepare: Prepare | None = None,
        avoid: Iterable[str] = (),
    ) -> JobResult:
        """Run ``graph`` on the best eligible worker and return its result, failing over if it dies.

        Jobs waiting for a slot are served by ``job_priority`` (lower first; a batch gives each character its
        row number, so characters started first finish first and the long single jobs of their last stages
        overlap other characters' work instead of piling up at the end), then in arrival order.

        ``prepare(client, graph)``, when given, runs once per attempt after the worker is chosen and before
        the prompt is submitted, and returns the graph to submit: the place to upload input files to that
        worker and point the graph at them. ``avoid``: worker names (or URLs) to use only when no other
        eligible worker is healthy; a failover adds the worker that failed.
        """
        if not self._started:
            await self.start()
        avoided = {self._name_of(a) for a in avoid}
        requirement = Requirement.for_graph(graph, models=models, label=label, avoid=avoided)
        if owner is None:
            owner = JobOwner(job_id=job_id or uuid.uuid4().hex)
        deadline = None if timeout is None else self._clock() + timeout
        failovers = 0
        refreshed = False
        while True:
            try:
                worker = await self._acquire(requirement, deadline, owner.flow_run_id, JOB_PRIORITY.get())
            except NoEligibleWorker:
                # Model lists may be stale (a LoRA was just trained / copied): re-read them once.
                if refreshed:
                    raise
                refreshed = True
                await self.refresh()
                continue
            prompt_id = str(uuid.uuid4())
            try:
                result = await self._attempt(worker, graph, prompt_id, owner, deadline, on_progress, prepare)
            except _NoRoom:
                continue  # another orchestrator took the slot: wait for the next one (not a failure)
            except FAILOVER_ERRORS as err:
                failovers += 1
                worker.failed_over += 1
                if failovers > self.max_failovers:
                    log.warning("job %s (flow run %s): giving up after %d failovers, last on %s under prompt %s: %s",
                                owner.job_id, owner.flow_run_id, failovers - 1, worker.name, prompt_id, err)
                    raise
                self.failovers += 1
                requirement = replace(requirement, avoid=requirement.avoid | {worker.name})
                log.warning(
                    "job %s (flow run %s): worker %s failed under prompt %s (%s: %s); running it elsewhere (%d/%d)",
                    owner.job_id,
                    owner.flow_run_id,
                    worker.name,
                    prompt_id,
                    type(err).__name__,
                    err.message,
                    failovers,
                    self.max_failovers,
                )
                continue
            worker.completed += 1
            return result

    async def _attempt(
        self,
        worker: _Worker,
        graph: Graph,
        prompt_id: str,
        owner: JobOwner,
        deadline: float | None,
        on_progress: Callable[[Progress], None] | None,
        prepare: Prepare | None = None,
    ) -> JobResult:
        """Submit and wait on one worker; the slot taken by ``_acquire`` is released on the way out."""
        try:
            if self.admission == "shared":
                try:
                    await self._room_before(worker)
                except FAILOVER_ERRORS as err:
                    self._mark_unhealthy(worker, err)
                    raise
            if prepare is not None:
                try:
                    graph = await prepare(worker.client, graph)
                except FAILOVER_ERRORS as err:
                    self._mark_unhealthy(worker, err)
                    raise
            try:
                stopped = self._stop_reason(owner.flow_run_id)
                if stopped is not None:
                    raise DispatchStopped(stopped, worker=worker.name)
                self._submitting += 1
                self._no_submits.clear()
                worker.prompts.add(prompt_id)
                try:
                    await worker.client.submit(graph, prompt_id=prompt_id, owner=owner)
                finally:
                    self._submitting -= 1
                    if not self._submitting:
                        self._no_submits.set()
                if self.admission == "shared":
                    await self._keep_or_withdraw(worker, prompt_id)
                return await worker.client.wait(
                    prompt_id, timeout=self._remaining(deadline, prompt_id), on_progress=on_progress
                )
            except FAILOVER_ERRORS as err:
                if not isinstance(err, PromptLost):
                    salvaged = await self._salvage(worker, prompt_id, deadline, on_progress)
                    if salvaged is not None:
                        self.salvaged += 1
                        return salvaged
                self._mark_unhealthy(worker, err)
                raise
        finally:
            worker.prompts.discard(prompt_id)
            self._release(worker)

    # ------------------------------------------------------------------ shared admission

    def _note_others(self, worker: _Worker, others: int) -> None:
        worker.others = max(0, others)
        worker.others_until = self._clock() + self.others_ttl

    def _on_queue(self, worker: _Worker, remaining: int) -> None:
        """A worker's queue changed (its ``status`` broadcast): re-count the others and hand out slots."""
        self._note_others(worker, remaining - len(worker.prompts))
        self._dispatch()

    async def _room_before(self, worker: _Worker) -> None:
        """Raise ``_NoRoom`` unless the worker's queue leaves room for the slot we were granted."""
        queue = await worker.client.get_queue()
        others = sum(1 for item in [*queue.running, *queue.pending] if item.prompt_id not in worker.prompts)
        self._note_others(worker, others)
        if others + worker.in_flight > self.capacity:
            self.declined += 1
            raise _NoRoom

    async def _keep_or_withdraw(self, worker: _Worker, prompt_id: str) -> None:
        """After submitting: if our prompt ranks beyond capacity in the worker's queue, take it back."""
        queue = await worker.client.get_queue()
        order = [item.prompt_id for item in [*queue.running, *queue.pending]]  # pending in execution order
        self._note_others(worker, sum(1 for pid in order if pid not in worker.prompts))
        if prompt_id not in order or order.index(prompt_id) < self.capacity:
            return  # within capacity (or already finished)
        removal = await worker.client.remove(prompt_id, interrupt_running=False)
        if removal.action != "deleted":
            return  # it started (or finished) in the meantime: keep it
        worker.client.forget(prompt_id)
        self.withdrawn += 1
        log.info("prompt %s withdrawn from %s: another orchestrator's submit came first", prompt_id, worker.name)
        raise _NoRoom

    async def _salvage(
        self,
        worker: _Worker,
        prompt_id: str,
        deadline: float | None,
        on_progress: Callable[[Progress], None] | None,
    ) -> JobResult | None:
        """After a failure, ask the original worker about the prompt so that it never runs twice.

        Returns its result if it finished (or, still running, finishes) there; ``None`` when the worker is
        unreachable or no longer has the prompt (a pending copy is deleted first).
        """
        client = worker.client
        removal = await client.remove(prompt_id, interrupt_running=False)
        if removal.action == "deleted" or removal.found == "unknown":
            return None  # it had not started (now deleted there), is gone, or the worker cannot be asked
        if removal.found == "finished" and removal.ended != "success":
            return None
        log.info("prompt %s on %s: %s; waiting for it", prompt_id, worker.name, removal.describe())
        try:
            return await client.wait(prompt_id, timeout=self._remaining(deadline, prompt_id), on_progress=on_progress)
        except FAILOVER_ERRORS:
            return None

    def _remaining(self, deadline: float | None, prompt_id: str) -> float | None:
        if deadline is None:
            return None
        left = deadline - self._clock()
        if left <= 0:
            raise JobDeadlineExceeded("the job's deadline passed", prompt_id=prompt_id)
        return left

    # ------------------------------------------------------------------ slots and the FIFO dispatcher

    async def _acquire(
        self, requirement: Requirement, deadline: float | None, run: str | None = None, priority: int = 0
    ) -> _Worker:
        """Wait (first come, first served) for a slot on a worker that can run ``requirement``."""
        if self._closed:
            raise NoWorkerAvailable("the worker pool is closed")
        stopped = self._stop_reason(run)
        if stopped is not None:
            raise DispatchStopped(stopped)
        ticket = _Ticket(requirement, asyncio.get_running_loop().create_future(), run=run, priority=priority)
        self._tickets.append(ticket)
        self._dispatch()
        try:
            while True:
                tick = _TICK if deadline is None else min(_TICK, max(0.0, deadline - self._clock()))
                await asyncio.wait({ticket.future}, timeout=tick)
                if ticket.future.done():
                    return ticket.future.result()
                now = self._clock()
                if deadline is not None and now >= deadline:
                    raise JobDeadlineExceeded("no eligible worker had a free slot before the job's deadline")
                self._dispatch()
                if ticket.future.done():
                    return ticket.future.result()
                if any_eligible_healthy(self.snapshots(), requirement, now):
                    ticket.unavailable_since = None
                elif ticket.unavailable_since is None:
                    ticket.unavailable_since = now
                    log.warning(
                        "a job is waiting: every worker that could run it is unhealthy (%s); giving up after %.0f s",
                        "; ".join(f"{w.name}: {w.last_error or 'down'}" for w in self._workers),
                        self.unavailable_timeout,
                    )
                since = ticket.unavailable_since
                if since is not None and now - since >= self.unavailable_timeout:
                    raise NoWorkerAvailable(
                        f"every worker that could run this job has been unhealthy for {now - since:.0f} s: "
                        + "; ".join(f"{w.name}: {w.last_error or 'down'}" for w in self._workers)
                    )
        except BaseException:
            if ticket in self._tickets:
                self._tickets.remove(ticket)
            fut = ticket.future
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self._release(fut.result())  # a slot was granted just as we gave up
            elif not fut.done():
                fut.cancel()
            raise

    def _dispatch(self) -> None:
        """Hand free slots to waiting jobs by priority, then arrival order.

        Cheap with hundreds of waiters: it stops as soon as no slot is left, and asks the router only once
        per distinct requirement that found no slot (handing out slots never frees one).
        """
        if not self._tickets:
            return
        now = self._clock()
        snaps = self.snapshots()
        if not any(s.known and s.available(now) for s in snaps):
            return
        index = {w.name: i for i, w in enumerate(self._workers)}
        unserved: set[Requirement] = set()
        for ticket in sorted(self._tickets, key=lambda t: t.priority):  # stable: arrival order within a priority
            if ticket.future.done():
                self._tickets.remove(ticket)
                continue
            if ticket.requirement in unserved:
                continue
            try:
                chosen = choose_worker(snaps, ticket.requirement, now)
            except NoEligibleWorker as err:
                self._tickets.remove(ticket)
                ticket.future.set_exception(err)
                continue
            if chosen is None:
                unserved.add(ticket.requirement)
                continue
            worker = self._workers[index[chosen.name]]
            worker.in_flight += 1
            if ticket.requirement.affinity:
                # Our prompts run in submission order, so after this one the worker holds its model.
                worker.last_models = ticket.requirement.affinity
            snaps[index[chosen.name]] = worker.snapshot(self.capacity, now)
            self._tickets.remove(ticket)
            ticket.future.set_result(worker)
            if not any(s.known and s.available(now) for s in snaps):
                break

    def _release(self, worker: _Worker) -> None:
        worker.in_flight -= 1
        self._dispatch()

    # ------------------------------------------------------------------ health

    def _mark_unhealthy(self, worker: _Worker, err: BaseException, *, from_check: bool = False) -> None:
        message = f"{type(err).__name__}: {getattr(err, 'message', None) or err}"
        worker.last_error = message
        # Several jobs failing on one dead worker count once; each failed check doubles the cooldown.
        if worker.healthy or from_check or worker.cooling_until <= self._clock():
            worker.failures += 1
            delay = min(self.cooldown_max, self.cooldown_base * 2 ** (worker.failures - 1))
            worker.cooling_until = self._clock() + delay
            if worker.healthy:
                log.warning("worker %s unhealthy (%s); cooling down %.1f s", worker.name, message, delay)
        worker.healthy = False
        worker.wake.set()

    def _mark_healthy(self, worker: _Worker) -> None:
        if not worker.healthy:
            log.info("worker %s healthy (%d node classes)", worker.name, len(worker.node_classes or ()))
        worker.healthy = True
        worker.failures = 0
        worker.cooling_until = 0.0
        worker.last_error = None
        self._dispatch()

    async def _check(self, worker: _Worker, *, full: bool) -> bool:
        """One health check; ``full`` also re-reads the worker's node classes and model lists."""
        try:
            await worker.client.system_stats()
            if full or worker.node_classes is None:
                await self._read_capabilities(worker)
        except (ComfyError, httpx.HTTPError, OSError) as err:
            self._mark_unhealthy(worker, err, from_check=True)
            return False
        self._mark_healthy(worker)
        return True

    async def _read_capabilities(self, worker: _Worker) -> None:
        client = worker.client
        info = await client.object_info(refresh=True)
        folders = [str(f) for f in await client.models()]
        # A few listings at a time: every extra connection left open in httpx's pool slows each later request.
        gate = asyncio.Semaphore(4)

        async def list_folder(folder: str) -> list[str]:
            async with gate:
                return await client.models(folder)

        listings = await asyncio.gather(*(list_folder(f) for f in folders), return_exceptions=True)
        models: dict[str, frozenset[str]] = {}
        for folder, listing in zip(folders, listings, strict=True):
            if isinstance(listing, RequestRejected) and listing.status == 404:
                models[folder] = frozenset()  # a folder key the worker lists but cannot enumerate
            elif isinstance(listing, BaseException):
                raise listing  # the worker is unhealthy with this error as its reason, never silently empty
            else:
                models[folder] = frozenset(str(name) for name in listing)
        worker.node_classes = frozenset(info)
        worker.models = models

    async def refresh(self) -> None:
        """Re-read node classes and model lists of every healthy worker.

        Callers that arrive while a refresh is under way share it instead of starting another.
        """
        generation = self._refresh_generation
        async with self._refresh_lock:
            if self._refresh_generation != generation:
                return  # somebody refreshed while we waited for the lock
            await asyncio.gather(*(self._check(w, full=True) for w in self._workers if w.healthy))
            self._refresh_generation += 1

    async def _watch(self, worker: _Worker) -> None:
        """Per-worker health loop: periodic checks while healthy, a check after each cooldown otherwise."""
        while not self._closed:
            if worker.healthy:
                wait_s = self.health_interval
            else:
                wait_s = max(0.0, worker.cooling_until - self._clock())
            worker.wake.clear()
            if wait_s > 0:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that races the event.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait_s):
                        await worker.wake.wait()
                if self._closed:
                    return
                if worker.wake.is_set():
                    continue  # state changed (e.g. a job failed there): recompute the wait
            was_healthy = worker.healthy
            await self._check(worker, full=not was_healthy)

