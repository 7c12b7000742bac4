"""The preview worker's prompt queue, single execution loop, node-result reuse, history and WebSocket fan-out.

Mirrors ComfyUI 0.3.64 (``execution.py``, ``main.prompt_worker``, ``server.PromptServer``): a min-heap of
``(number, prompt_id, prompt, extra_data, outputs_to_execute)``, one prompt executing at a time, node
results cached by input signature (only what the current prompt can reuse survives), and the same
WebSocket events with the same recipients and order.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import heapq
import json
import logging
import math
import random
import struct
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from reelforge.preview.faults import Faults, saved_output_images
from reelforge.preview.latency import LatencyProfile
from reelforge.preview.registry import (
    ExecContext,
    NodeClass,
    NodeInterrupted,
    NodeRegistry,
    NodeResult,
    WorkerDirs,
)
from reelforge.preview.validation import full_type_name, is_link

log = logging.getLogger(__name__)

MAXIMUM_HISTORY_SIZE = 10000
SENSITIVE_EXTRA_DATA_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")
BINARY_PREVIEW = 1  # BinaryEventTypes.PREVIEW_IMAGE (legacy clients)
BINARY_TEXT = 3  # BinaryEventTypes.TEXT
BINARY_PREVIEW_WITH_METADATA = 4  # BinaryEventTypes.PREVIEW_IMAGE_WITH_METADATA
PREVIEW_FORMAT_PNG = 2  # the image format field of a legacy preview frame (1 = JPEG)

QueueItem = tuple[Any, str, dict[str, Any], dict[str, Any], list[str]]


def _now_ms() -> int:
    return int(time.time() * 1000)


def unordered(executed: list[str]) -> list[str]:
    """The ``executed`` ids of ``execution_interrupted`` / ``execution_error`` in no order a client may rely on.

    ComfyUI sends ``list()`` of a set (hash order, e.g. ``["4", "1", "2", "3"]`` in c.5); the preview shuffles,
    and never returns the execution order itself when there are two or more, so a client relying on it fails
    here rather than by chance on a GPU worker.
    """
    shuffled = random.sample(executed, len(executed))
    if len(shuffled) > 1 and shuffled == executed:
        shuffled = shuffled[1:] + shuffled[:1]
    return shuffled


def _has_nan(value: Any) -> bool:
    if isinstance(value, float):
        return math.isnan(value)
    return isinstance(value, list) and any(_has_nan(v) for v in value)


def format_value(x: Any) -> Any:
    """ComfyUI's ``format_value`` for ``current_inputs``."""
    if x is None or isinstance(x, (int, float, bool, str)):
        return x
    return str(x)


# --------------------------------------------------------------------------------------------------
# WebSocket fan-out
# --------------------------------------------------------------------------------------------------


class MessageHub:
    """Sockets by client id and an ordered outgoing queue (ComfyUI's ``send_sync`` + ``publish_loop``).

    ``sid=None`` broadcasts; a sid that is not connected drops the message. Messages are serialised when
    queued, so later mutation of the data cannot change what is sent.
    """

    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.metadata: dict[str, dict[str, Any]] = {}
        # Every open socket's transport (also sockets replaced under the same clientId), for abort_all.
        self.transports: dict[int, asyncio.Transport] = {}
        self._queue: asyncio.Queue[tuple[str | bytes, str | None]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._publish(), name="preview-ws-publish")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def send(self, event: str, data: dict[str, Any], sid: str | None = None) -> None:
        """Queue a JSON frame (event-loop thread only)."""
        if self._queue is not None:
            self._queue.put_nowait((json.dumps({"type": event, "data": data}), sid))

    def send_bytes(self, payload: bytes, sid: str | None = None) -> None:
        if self._queue is not None:
            self._queue.put_nowait((payload, sid))

    def supports_preview_metadata(self, sid: str | None) -> bool:
        """ComfyUI's ``feature_flags.supports_feature(..., "supports_preview_metadata")`` for one client."""
        if sid is None:
            return False
        flags = self.metadata.get(sid, {}).get("feature_flags", {})
        return isinstance(flags, dict) and flags.get("supports_preview_metadata") is True

    def call_threadsafe(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` on the hub's event loop (from a node thread)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # loop shutting down (crash)
                loop.call_soon_threadsafe(fn, *args)

    async def send_now(self, ws: web.WebSocketResponse, event: str, data: dict[str, Any]) -> None:
        """Send directly to one socket (the greeting frames of a new connection)."""
        await self._write(ws, json.dumps({"type": event, "data": data}))

    async def _write(self, ws: web.WebSocketResponse, message: str | bytes) -> None:
        try:
            if isinstance(message, bytes):
                await ws.send_bytes(message)
            else:
                await ws.send_str(message)
        except (ConnectionError, RuntimeError):  # socket went away meanwhile; ComfyUI logs and goes on
            return
        if self.faults.ws_frame_sent():
            asyncio.get_running_loop().create_task(self.close_all())

    async def _publish(self) -> None:
        assert self._queue is not None
        while True:
            message, sid = await self._queue.get()
            if sid is None:
                targets = list(self.sockets.values())
            else:
                ws = self.sockets.get(sid)
                targets = [ws] if ws is not None else []
            for ws in targets:
                await self._write(ws, message)

    async def close_all(self) -> None:
        """Close every socket with a normal close frame."""
        for ws in list(self.sockets.values()):
            with contextlib.suppress(Exception):
                await ws.close()

    def abort_all(self) -> None:
        """Drop every socket's TCP connection without a close frame (a crashed server)."""
        for transport in list(self.transports.values()):
            transport.abort()
        self.transports.clear()


# --------------------------------------------------------------------------------------------------
# Stats
# --------------------------------------------------------------------------------------------------


@dataclass
class WorkerStats:
    """What the worker did: prompts executed and busy time (for utilization benchmarks)."""

    prompts_executed: int = 0
    nodes_executed: int = 0
    busy_seconds: float = 0.0
    # (prompt_id, start, end) in ``time.monotonic()`` seconds, from execution_start to history stored.
    intervals: list[tuple[str, float, float]] = field(default_factory=list)
    # prompt_id -> [queued at, left the queue at (None: still there), taken back before it ran]
    held: dict[str, list[Any]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, prompt_id: str, start: float, end: float) -> None:
        with self._lock:
            self.prompts_executed += 1
            self.busy_seconds += end - start
            self.intervals.append((prompt_id, start, end))
            if prompt_id in self.held:
                self.held[prompt_id][1] = end

    def queued(self, prompt_id: str) -> None:
        with self._lock:
            self.held[prompt_id] = [time.monotonic(), None, False]

    def deleted(self, prompt_id: str) -> None:
        with self._lock:
            if prompt_id in self.held:
                self.held[prompt_id][1:] = [time.monotonic(), True]

    def max_held(self, *, kept_only: bool = False) -> int:
        """The most prompts the worker held at once (running + pending); ``kept_only``: counting only prompts
        that were not deleted while pending (a deleted one sat in the queue without ever using the GPU)."""
        with self._lock:
            spans = [(q, e) for q, e, gone in self.held.values() if not (kept_only and gone)]
        edges = sorted([(q, 1) for q, _ in spans] + [(e, -1) for _, e in spans if e is not None],
                       key=lambda edge: (edge[0], edge[1]))  # a leave before an arrival at the same instant
        most = held = 0
        for _, step in edges:
            held += step
            most = max(most, held)
        return most

    def busy_between(self, start: float, end: float) -> float:
        """Busy seconds inside the window [start, end] (monotonic clock)."""
        with self._lock:
            return sum(max(0.0, min(e, end) - max(s, start)) for _, s, e in self.intervals)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "prompts_executed": self.prompts_executed,
                "nodes_executed": self.nodes_executed,
                "busy_seconds": self.busy_seconds,
            }


# --------------------------------------------------------------------------------------------------
# Execution planning (ComfyUI's ExecutionList)
# --------------------------------------------------------------------------------------------------


class _DependencyCycle(Exception):
    def __init__(self, node_id: str) -> None:
        super().__init__("Dependency cycle detected")
        self.node_id = node_id


class _ExecutionList:
    """Nodes still to run and their blockers; output nodes first (ComfyUI's ``ux_friendly_pick_node``)."""

    def __init__(
        self,
        prompt: dict[str, Any],
        is_cached: Callable[[str], bool],
        is_output: Callable[[str], bool],
    ) -> None:
        self.prompt = prompt
        self.is_cached = is_cached
        self.is_output = is_output
        self.pending: dict[str, None] = {}
        self.block_count: dict[str, int] = {}
        self.blocking: dict[str, dict[str, None]] = {}

    def add_node(self, node_id: str) -> None:
        stack = [node_id]
        links: list[tuple[str, str]] = []
        while stack:
            uid = stack.pop()
            if uid in self.pending:
                continue
            self.pending[uid] = None
            self.block_count[uid] = 0
            self.blocking[uid] = {}
            for value in self.prompt[uid].get("inputs", {}).values():
                if is_link(value):
                    src = value[0]
                    if not self.is_cached(src):
                        stack.append(src)
                    links.append((src, uid))
        for src, dst in links:
            if not self.is_cached(src):
                self.add_node(src)
                if dst not in self.blocking[src]:
                    self.blocking[src][dst] = None
                    self.block_count[dst] += 1

    def is_empty(self) -> bool:
        return not self.pending

    def stage(self) -> str:
        available = [n for n in self.pending if self.block_count[n] == 0]
        if not available:
            raise _DependencyCycle(next(iter(self.pending)))
        for n in available:
            if self.is_output(n):
                return n
        for n in available:
            if any(self.is_output(b) for b in self.blocking[n]):
                return n
        for n in available:
            if any(self.is_output(b2) for b in self.blocking[n] for b2 in self.blocking.get(b, {})):
                return n
        return available[0]

    def complete(self, node_id: str) -> None:
        del self.pending[node_id]
        for dst in self.blocking.pop(node_id, {}):
            self.block_count[dst] -= 1


class _ProgressState:
    """Cumulative ``progress_state`` of one prompt (nodes that are not pending)."""

    def __init__(self, prompt_id: str, emit: Callable[[dict[str, Any]], None]) -> None:
        self.prompt_id = prompt_id
        self.nodes: dict[str, dict[str, Any]] = {}
        self._emit = emit

    def _entry(self, node_id: str) -> dict[str, Any]:
        entry = self.nodes.get(node_id)
        if entry is None:
            entry = {
                "value": 0.0,
                "max": 1.0,
                "state": "pending",
                "node_id": node_id,
                "prompt_id": self.prompt_id,
                "display_node_id": node_id,
                "parent_node_id": None,
                "real_node_id": node_id,
            }
            self.nodes[node_id] = entry
        return entry

    def _send(self) -> None:
        self._emit({"prompt_id": self.prompt_id, "nodes": copy.deepcopy(self.nodes)})

    def start(self, node_id: str) -> None:
        entry = self._entry(node_id)
        entry.update(value=0.0, max=1.0, state="running")
        self._send()

    def update(self, node_id: str, value: float, total: float) -> None:
        entry = self._entry(node_id)
        entry.update(value=value, max=total, state="running")
        self._send()

    def finish(self, node_id: str) -> None:
        entry = self._entry(node_id)
        entry.update(value=entry["max"], state="finished")
        self._send()


@dataclass
class _CacheEntry:
    outputs: tuple[list[Any], ...]  # per output slot, the list of values (one per mapped call)
    ui: dict[str, Any] | None


def _merge_results(cls: NodeClass, results: list[NodeResult]) -> tuple[tuple[list[Any], ...], dict[str, Any]]:
    """ComfyUI's ``merge_result_data`` and UI merge: per slot, the calls' values (list outputs extended), and
    each UI key's lists concatenated over the calls."""
    slots = len(results[0].outputs)
    is_list = cls.output_is_list + [False] * slots
    outputs: list[list[Any]] = []
    for i in range(slots):
        merged: list[Any] = []
        for r in results:
            if is_list[i]:
                merged.extend(r.outputs[i])
            else:
                merged.append(r.outputs[i])
        outputs.append(merged)
    uis = [r.ui for r in results if r.ui is not None]
    ui: dict[str, Any] = {}
    if uis:
        ui = {k: [y for u in uis for y in u.get(k, [])] for k in uis[0]}
    return tuple(outputs), ui


class _NodeFailed(Exception):
    def __init__(self, node_id: str, error: BaseException, inputs: dict[str, list[Any]] | None) -> None:
        super().__init__(str(error))
        self.node_id = node_id
        self.error = error
        self.inputs = inputs


@dataclass(order=True)
class _HeapEntry:
    number: Any
    prompt_id: str
    seq: int
    item: QueueItem = field(compare=False)


# --------------------------------------------------------------------------------------------------
# The executor
# --------------------------------------------------------------------------------------------------


class Executor:
    """Queue, history and the single execution loop of one preview worker process."""

    def __init__(
        self,
        registry: NodeRegistry,
        dirs: WorkerDirs,
        hub: MessageHub,
        *,
        latency: LatencyProfile,
        faults: Faults,
        stats: WorkerStats,
        on_crash: Callable[[], None] = lambda: None,
    ) -> None:
        self.registry = registry
        self.dirs = dirs
        self.hub = hub
        self.latency = latency
        self.faults = faults
        self.stats = stats
        self.on_crash = on_crash
        self.counter = 0  # ``PromptServer.number``
        self._heap: list[_HeapEntry] = []
        self._seq = 0
        self.running: dict[int, QueueItem] = {}
        self._task_counter = 0
        self.history: dict[str, dict[str, Any]] = {}
        self._interrupt = threading.Event()
        self.client_id: str | None = None
        self.last_node_id: str | None = None
        self._cache: dict[str, _CacheEntry] = {}
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failed_node = ""  # the node being run, named by execution_interrupted

    # ---- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="preview-executor")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # ---- queue ----------------------------------------------------------------------------------
    def next_number(self, front: bool) -> int:
        """The counter value for a POST without ``number`` (incremented on every POST /prompt)."""
        number = self.counter
        if front:
            number = -number
        self.counter += 1
        return number

    def queue_remaining(self) -> int:
        return len(self._heap) + len(self.running)

    def queue_info(self) -> dict[str, Any]:
        return {"exec_info": {"queue_remaining": self.queue_remaining()}}

    def queue_updated(self) -> None:
        self.hub.send("status", {"status": self.queue_info()})

    def put(self, item: QueueItem) -> None:
        self.stats.queued(item[1])
        self._seq += 1
        heapq.heappush(self._heap, _HeapEntry(item[0], item[1], self._seq, item))
        self.queue_updated()
        self._wakeup.set()

    def current_queue(self) -> tuple[list[list[Any]], list[list[Any]]]:
        """(running, pending) as JSON lists; pending in raw heap order like ComfyUI."""
        running = [list(copy.deepcopy(item)) for item in self.running.values()]
        pending = [list(copy.deepcopy(e.item)) for e in self._heap]
        return running, pending

    def running_prompt_ids(self) -> list[str]:
        return [item[1] for item in self.running.values()]

    def delete_pending(self, prompt_id: str) -> bool:
        for i, entry in enumerate(self._heap):
            if entry.prompt_id == prompt_id:
                self.stats.deleted(prompt_id)
                self._heap.pop(i)
                heapq.heapify(self._heap)
                self.queue_updated()
                return True
        return False

    def wipe_queue(self) -> None:
        for entry in self._heap:
            self.stats.deleted(entry.prompt_id)
        self._heap = []
        self.queue_updated()

    def interrupt(self, prompt_id: str | None = None) -> None:
        """Global interrupt, or only when ``prompt_id`` is the running prompt."""
        if prompt_id and prompt_id not in self.running_prompt_ids():
            log.info("interrupt for %s ignored: not the running prompt", prompt_id)
            return
        self._interrupt.set()

    # ---- history --------------------------------------------------------------------------------
    def get_history(
        self, prompt_id: str | None = None, max_items: int | None = None, offset: int = -1
    ) -> dict[str, Any]:
        if prompt_id is not None:
            entry = self.history.get(prompt_id)
            return {prompt_id: copy.deepcopy(entry)} if entry is not None else {}
        out: dict[str, Any] = {}
        if offset < 0 and max_items is not None:
            offset = len(self.history) - max_items
        for i, key in enumerate(self.history):
            if i >= offset:
                out[key] = self.history[key]
                if max_items is not None and len(out) >= max_items:
                    break
        return copy.deepcopy(out)

    def wipe_history(self) -> None:
        self.history.clear()

    def delete_history(self, prompt_id: str) -> None:
        self.history.pop(prompt_id, None)

    # ---- the loop -------------------------------------------------------------------------------
    async def _loop(self) -> None:
        while True:
            while not self._heap:
                self._wakeup.clear()
                await self._wakeup.wait()
            entry = heapq.heappop(self._heap)
            task_id = self._task_counter
            self._task_counter += 1
            self.running[task_id] = copy.deepcopy(entry.item)
            self.queue_updated()
            try:
                await self._run_prompt(task_id, entry.item)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not kill the worker loop
                log.exception("preview executor failed on prompt %s", entry.prompt_id)
                self.running.pop(task_id, None)
                self.queue_updated()

    async def _run_prompt(self, task_id: int, item: QueueItem) -> None:
        number, prompt_id, prompt, extra_data, execute_outputs = item
        self._interrupt.clear()
        client_id: str | None = extra_data["client_id"] if "client_id" in extra_data else None
        self.client_id = client_id
        messages: list[list[Any]] = []
        success = True
        started = time.monotonic()

        def add_message(event: str, data: dict[str, Any], broadcast: bool) -> None:
            data = {**data, "timestamp": _now_ms()}
            messages.append([event, data])
            if client_id is not None or broadcast:
                self.hub.send(event, data, client_id)

        add_message("execution_start", {"prompt_id": prompt_id}, broadcast=False)
        signatures, is_changed = await asyncio.to_thread(self._signatures, prompt)
        # Save nodes embed the prompt as execution left it: with ``is_changed`` on fingerprinted nodes
        # (ComfyUI mutates its prompt dict); history keeps the graph as queued.
        embedded = copy.deepcopy(prompt)
        for node_id, value in is_changed.items():
            embedded[node_id].setdefault("is_changed", value)
        wanted = set(signatures.values())
        self._cache = {sig: e for sig, e in self._cache.items() if sig in wanted}
        values: dict[str, tuple[list[Any], ...]] = {}
        cached_nodes: list[str] = []
        for node_id in prompt:
            hit = self._cache.get(signatures.get(node_id, ""))
            if hit is not None:
                cached_nodes.append(node_id)
                values[node_id] = hit.outputs
        add_message("execution_cached", {"nodes": cached_nodes, "prompt_id": prompt_id}, broadcast=False)

        progress = _ProgressState(prompt_id, lambda data: self.hub.send("progress_state", data, client_id))
        plan = _ExecutionList(prompt, lambda n: n in values, self._is_output(prompt))
        executed: list[str] = []
        try:
            for node_id in execute_outputs:
                plan.add_node(node_id)
            to_run = sum(1 for n in plan.pending if n not in values)
            while not plan.is_empty():
                node_id = plan.stage()
                if node_id in values:  # a cached output node: re-send its UI, run nothing
                    if client_id is not None:
                        hit = self._cache.get(signatures[node_id])
                        ui = hit.ui if hit is not None else None
                        self.hub.send(
                            "executed",
                            {"node": node_id, "display_node": node_id, "output": ui, "prompt_id": prompt_id},
                            client_id,
                        )
                    progress.finish(node_id)
                    plan.complete(node_id)
                    continue
                await self._run_node(
                    prompt_id, embedded, extra_data, node_id, signatures[node_id], values, progress, to_run
                )
                executed.append(node_id)
                plan.complete(node_id)
        except NodeInterrupted:
            success = False
            node_id = self._failed_node
            add_message(
                "execution_interrupted",
                {
                    "prompt_id": prompt_id,
                    "node_id": node_id,
                    "node_type": prompt[node_id]["class_type"],
                    "executed": unordered(executed),
                },
                broadcast=True,
            )
        except (_NodeFailed, _DependencyCycle) as failure:
            success = False
            add_message("execution_error", self._error_data(prompt_id, prompt, executed, failure), False)
        if success:
            add_message("execution_success", {"prompt_id": prompt_id}, broadcast=False)

        outputs: dict[str, Any] = {}
        meta: dict[str, Any] = {}
        for node_id in prompt:
            hit = self._cache.get(signatures.get(node_id, ""))
            if hit is not None and hit.ui:
                outputs[node_id] = hit.ui
                meta[node_id] = {
                    "node_id": node_id,
                    "display_node": node_id,
                    "parent_node": None,
                    "real_node_id": node_id,
                }
        self.last_node_id = None
        self._task_done(
            task_id,
            {
                "prompt": [number, prompt_id, prompt, extra_data, execute_outputs],
                "outputs": outputs,
                "status": {"status_str": "success" if success else "error", "completed": success,
                           "messages": messages},
                "meta": meta,
            },
        )
        self.stats.record(prompt_id, started, time.monotonic())
        if client_id is not None:
            self.hub.send("executing", {"node": None, "prompt_id": prompt_id}, client_id)

    def _task_done(self, task_id: int, entry: dict[str, Any]) -> None:
        self.running.pop(task_id, None)
        if len(self.history) > MAXIMUM_HISTORY_SIZE:
            self.history.pop(next(iter(self.history)))
        prompt_id = entry["prompt"][1]
        self.history[prompt_id] = entry
        self.queue_updated()

    def _is_output(self, prompt: dict[str, Any]) -> Callable[[str], bool]:
        def is_output(node_id: str) -> bool:
            cls = self.registry.get(prompt[node_id]["class_type"])
            return cls is not None and cls.output_node

        return is_output

    # ---- one node -------------------------------------------------------------------------------

    async def _run_node(
        self,
        prompt_id: str,
        prompt: dict[str, Any],
        extra_data: dict[str, Any],
        node_id: str,
        signature: str,
        values: dict[str, tuple[list[Any], ...]],
        progress: _ProgressState,
        to_run: int,
    ) -> None:
        client_id = self.client_id
        node = prompt[node_id]
        cls = self.registry.get(node["class_type"])
        assert cls is not None  # validation rejected unknown classes
        self._failed_node = node_id
        if self.faults.crash_now():
            self.on_crash()
            await asyncio.Event().wait()  # the crash cancels this task
        progress.start(node_id)
        inputs: dict[str, list[Any]] | None = None
        try:
            inputs = self._node_inputs(cls.schema, node.get("inputs", {}), values)
        except Exception as ex:
            raise _NodeFailed(node_id, ex, None) from ex
        if client_id is not None:
            self.last_node_id = node_id
            self.hub.send(
                "executing", {"node": node_id, "display_node": node_id, "prompt_id": prompt_id}, client_id
            )
        self._check_interrupt()  # ComfyUI's before_node_execution()

        def report(value: float, total: float, png: bytes | None = None) -> None:
            # ComfyUI's order: progress_state, the preview with metadata (clients that asked for it), progress,
            # then the legacy preview frame for the other clients (main.py's hook, progress.py's handler).
            progress.update(node_id, value, total)
            with_metadata = self.hub.supports_preview_metadata(client_id)
            if png is not None and with_metadata:
                meta = json.dumps(
                    {
                        "node_id": node_id,
                        "prompt_id": prompt_id,
                        "display_node_id": node_id,
                        "parent_node_id": None,
                        "real_node_id": node_id,
                        "image_type": "image/png",
                    }
                ).encode()
                self.hub.send_bytes(struct.pack(">II", BINARY_PREVIEW_WITH_METADATA, len(meta)) + meta + png, client_id)
            self.hub.send("progress", {"value": value, "max": total, "prompt_id": prompt_id, "node": node_id},
                          client_id)
            if png is not None and not with_metadata:
                self.hub.send_bytes(struct.pack(">II", BINARY_PREVIEW, PREVIEW_FORMAT_PNG) + png, client_id)

        def ctx_progress(value: float, total: float) -> None:  # runs in the node thread
            self._check_interrupt()
            self.hub.call_threadsafe(report, value, total)

        def ctx_preview(value: float, total: float, png: bytes) -> None:  # runs in the node thread
            self._check_interrupt()
            self.hub.call_threadsafe(report, value, total, png)

        def ctx_send_text(text: str) -> None:  # runs in the node thread
            nid = node_id.encode()
            payload = struct.pack(">II", BINARY_TEXT, len(nid)) + nid + text.encode()
            self.hub.call_threadsafe(self.hub.send_bytes, payload, None)

        ctx = ExecContext(
            prompt_id=prompt_id,
            node_id=node_id,
            prompt=prompt,
            extra_pnginfo=extra_data.get("extra_pnginfo"),
            dirs=self.dirs,
            progress=ctx_progress,
            send_text=ctx_send_text,
            preview=ctx_preview,
        )
        t0 = time.monotonic()
        try:
            results, first = await asyncio.to_thread(self._map_over_lists, cls, ctx, inputs)
        except NodeInterrupted:
            raise
        except _NodeFailed as failed:
            raise _NodeFailed(node_id, failed.error, inputs) from failed.error
        outputs, merged_ui = _merge_results(cls, results)
        ui = merged_ui or None
        # The near_duplicate fault swaps saved images before anyone hears of them (faults.py).
        saved = saved_output_images(self.dirs.output, ui)
        if saved and (swaps := self.faults.images_saved(saved)):
            await asyncio.to_thread(self.faults.write_near_duplicates, swaps)
        timing = self.latency.plan(cls, first, to_run)
        await self._pad(timing.seconds * len(results) - (time.monotonic() - t0), timing.steps, report)
        self._cache[signature] = _CacheEntry(outputs, ui)
        values[node_id] = outputs
        if ui and client_id is not None:
            self.hub.send(
                "executed",
                {"node": node_id, "display_node": node_id, "output": ui, "prompt_id": prompt_id},
                client_id,
            )
        progress.finish(node_id)
        self.stats.nodes_executed += 1

    def _map_over_lists(
        self, cls: NodeClass, ctx: ExecContext, inputs: dict[str, list[Any]]
    ) -> tuple[list[NodeResult], dict[str, Any]]:
        """ComfyUI's ``_map_node_over_list``: one call per list item (the last item repeats for shorter lists),
        or one call with the lists themselves for an INPUT_IS_LIST class. Returns the results and the first
        call's inputs (what the latency model looks at). Runs in the node thread."""
        if cls.input_is_list:
            calls: list[dict[str, Any]] = [dict(inputs)]
        else:
            count = max((len(v) for v in inputs.values()), default=0)
            calls = [{k: v[i if len(v) > i else -1] for k, v in inputs.items()} for i in range(count)] or [{}]
        results: list[NodeResult] = []
        for i, call in enumerate(calls):
            if i:
                self._check_interrupt()  # ComfyUI checks before each item of a mapped node
            try:
                result = cls.run(ctx, call)
            except NodeInterrupted:
                raise
            except Exception as ex:
                raise _NodeFailed(ctx.node_id, ex, None) from ex
            if not isinstance(result, NodeResult):
                raise _NodeFailed(ctx.node_id, TypeError(f"{cls.name} returned {type(result).__name__}"), None)
            results.append(result)
        return results, calls[0]

    async def _pad(self, seconds: float, steps: int, report: Callable[[float, float], None]) -> None:
        """Sleep the modelled remainder; with steps, report progress and honour interrupts per step."""
        if steps <= 0:
            if seconds > 0:
                await asyncio.sleep(seconds)
            return
        per_step = max(0.0, seconds) / steps
        for step in range(1, steps + 1):
            if per_step > 0:
                await asyncio.sleep(per_step)
            self._check_interrupt()
            report(float(step), float(steps))

    def _check_interrupt(self) -> None:
        """ComfyUI's ``throw_exception_if_processing_interrupted``: clears the flag and raises."""
        if self._interrupt.is_set():
            self._interrupt.clear()
            raise NodeInterrupted("Processing interrupted")

    @staticmethod
    def _node_inputs(
        schema: dict[str, Any], raw: dict[str, Any], values: dict[str, tuple[list[Any], ...]]
    ) -> dict[str, list[Any]]:
        """Each declared input as a list (ComfyUI's ``input_data_all``): a link gives the source slot's list of
        values, a literal a one-item list."""
        declared = schema.get("input", {})
        names = set(declared.get("required", {}) or {}) | set(declared.get("optional", {}) or {})
        inputs: dict[str, list[Any]] = {}
        for name, value in raw.items():
            if name not in names:
                continue
            if is_link(value):
                inputs[name] = list(values[value[0]][int(value[1])])
            elif isinstance(value, dict) and set(value) == {"__value__"}:
                inputs[name] = [value["__value__"]]
            else:
                inputs[name] = [value]
        return inputs

    def _error_data(
        self,
        prompt_id: str,
        prompt: dict[str, Any],
        executed: list[str],
        failure: _NodeFailed | _DependencyCycle,
    ) -> dict[str, Any]:
        if isinstance(failure, _DependencyCycle):
            return {
                "prompt_id": prompt_id,
                "node_id": failure.node_id,
                "node_type": prompt[failure.node_id]["class_type"],
                "executed": unordered(executed),
                "exception_message": "Dependency cycle detected",
                "exception_type": "graph.DependencyCycleError",
                "traceback": [],
                "current_inputs": [],
                "current_outputs": [],
            }
        ex = failure.error
        formatted: dict[str, Any] = {}
        if failure.inputs is not None:
            formatted = {name: [format_value(v) for v in items] for name, items in failure.inputs.items()}
        return {
            "prompt_id": prompt_id,
            "node_id": failure.node_id,
            "node_type": prompt[failure.node_id]["class_type"],
            "executed": unordered(executed),
            "exception_message": f"{ex}\n",
            "exception_type": full_type_name(type(ex)),
            "traceback": traceback.format_tb(ex.__traceback__),
            "current_inputs": formatted,
            "current_outputs": list(prompt),
        }

    # ---- cache signatures -----------------------------------------------------------------------
    def _signatures(self, prompt: dict[str, Any]) -> tuple[dict[str, str], dict[str, Any]]:
        """Input signature per node (class, ``is_changed``, literal inputs, ancestors' signatures) and the
        ``is_changed`` value of each node whose class has a fingerprint (ComfyUI's ``IsChangedCache``).

        Node ids are not part of a signature, so the same sub-graph under new ids hits the cache. A node that
        arrives with an ``is_changed`` key keeps it instead of being fingerprinted (ComfyUI's rule, so a prompt
        copied from a PNG's metadata carries the old file hash). Runs in a thread (fingerprints hash files).
        """
        sigs: dict[str, str] = {}
        changed: dict[str, Any] = {}
        visiting: set[str] = set()

        def sig(node_id: str) -> str:
            done = sigs.get(node_id)
            if done is not None:
                return done
            node = prompt.get(node_id)
            if not isinstance(node, dict) or node_id in visiting:
                return "missing:" + uuid.uuid4().hex  # never matches: bad links and cycles are not cached
            visiting.add(node_id)
            class_type = node.get("class_type")
            cls = self.registry.get(class_type) if isinstance(class_type, str) else None
            raw = node.get("inputs", {})
            raw = raw if isinstance(raw, dict) else {}
            parts: list[Any] = [class_type]
            if cls is not None and cls.fingerprint is not None:
                if "is_changed" in node:
                    value = node["is_changed"]
                else:
                    literals = {k: v for k, v in raw.items() if not is_link(v)}
                    try:
                        fp = cls.fingerprint(self.dirs, literals)
                    except Exception:
                        fp = math.nan
                    # ComfyUI stores a failed IS_CHANGED as a bare NaN, a result as a list (one per input list).
                    value = fp if isinstance(fp, float) and math.isnan(fp) else [fp]
                changed[node_id] = value
                if _has_nan(value):
                    parts.append("nan:" + uuid.uuid4().hex)  # NaN != NaN: always re-run
                else:
                    parts.append(repr(value))
            for name in sorted(raw):
                value = raw[name]
                if is_link(value):
                    parts.append([name, "ANCESTOR", sig(value[0]), int(value[1])])
                else:
                    parts.append([name, value])
            visiting.discard(node_id)
            digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=repr).encode()).hexdigest()
            sigs[node_id] = digest
            return digest

        for node_id in prompt:
            sig(node_id)
        return sigs, changed
