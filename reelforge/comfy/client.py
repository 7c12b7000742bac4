"""Async client of one ComfyUI worker (HTTP + one shared WebSocket).

``ComfyClient`` submits API-format graphs, waits for them, and moves files in and out. Failures are raised as
the exception tree of ``reelforge.comfy.errors`` (see its docstring); in short:

* transport: connection refused/reset -> ``WorkerUnavailable``; request timeout -> ``WorkerTimeout``;
  5xx -> ``WorkerServerError``; other 4xx -> ``RequestRejected``.
* a 2xx whose body is not what the protocol says (non-JSON, a list where an object belongs) ->
  ``ProtocolError`` naming the route; never an empty value in its place.
* submit: 400 -> ``PromptValidationError`` listing every node error. A 200 whose ``node_errors`` is
  non-empty means the worker queued the outputs that validated and (on an idle worker) is already running
  them: the prompt is taken back with ``remove`` and the error says what really happened (``removal``:
  deleted while pending / interrupted while running / already finished) and lists the files it wrote anyway
  (``orphaned_outputs``). A response lost after the request went out is resolved by looking for our own
  prompt id in /queue and /history; only if it is in neither is the same prompt id posted once more.
* wait: ``execution_error`` -> ``ExecutionError`` (``WorkerResourceError`` for out of memory, by exception
  type or message); ``execution_interrupted`` -> ``PromptInterrupted``; the prompt in neither queue nor
  history -> ``PromptDeleted`` (permanent: somebody removed it) when the worker provably did not restart
  since the submit (our WebSocket of that time still open and answering a ping, or a prompt we saw in its
  history before the submit still there), else ``PromptLost`` (transient: the worker restarted); worker
  unreachable for ``unreachable_grace`` seconds -> ``WorkerUnavailable``; deadline -> ``remove``, then
  ``JobDeadlineExceeded`` carrying the ``Removal``.
* progress: reports are kept per prompt from the moment its id is chosen (before the POST) and replayed in
  order when ``wait`` attaches the callback, since a short prompt's events can all arrive before the POST
  answer.
* ``TransientComfyError`` subclasses are worth retrying (here later or on another worker);
  ``PermanentComfyError`` ones are not.
* files: download size mismatches and malformed outputs -> ``OutputError``.

The bearer token is sent as ``Authorization`` on HTTP and WebSocket requests and never appears in messages,
logs or reprs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import logging
import os
import re
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any, BinaryIO, Literal
from urllib.parse import urlsplit

import httpx

from reelforge.comfy.errors import (
    ComfyError,
    JobDeadlineExceeded,
    OutputError,
    PromptDeleted,
    PromptInterrupted,
    PromptLost,
    ProtocolError,
    RequestRejected,
    TransientComfyError,
    WorkerServerError,
    WorkerTimeout,
    WorkerUnavailable,
)
from reelforge.comfy.graph import saved_models
from reelforge.comfy.graph import stamp_prefixes as _stamp_prefixes
from reelforge.comfy.outputs import (
    ancestors,
    failure_from_event,
    history_failure,
    message_data,
    numeric_order,
    parse_outputs,
    timestamp,
    validation_error,
)
from reelforge.comfy.types import (
    DownloadedFile,
    Graph,
    JobOwner,
    JobResult,
    OutputFile,
    Progress,
    QueueItem,
    QueueState,
    Removal,
    UploadedFile,
)
from reelforge.comfy.ws import EventStream
from reelforge.hashing import sha256_bytes, sha256_file

__all__ = ["ComfyClient", "ProgressCallback", "parse_outputs"]

log = logging.getLogger("reelforge.comfy.client")

ProgressCallback = Callable[[Progress], object]

_CHUNK = 1 << 16
_BACKLOG = 512  # progress reports kept per prompt until wait() attaches a callback (the oldest go first)
_SETTLE_S = 3.0  # how long a prompt accepted with node_errors is watched after its interrupt, to list its files
_SAFE_TAG = re.compile(r"[^A-Za-z0-9_-]")
_SAFE_EXT = re.compile(r"^\.[A-Za-z0-9]{1,10}$")


@dataclass
class _Watch:
    """What the WebSocket told us about one prompt, plus what a waiter needs to report progress."""

    prompt_id: str
    graph: Graph | None = None
    total: int | None = None  # nodes the prompt executes, cached ones included
    submitted_at: float | None = None  # loop time of submit
    started_at: float | None = None  # loop time when execution_start arrived
    started_ms: int | None = None
    success_ms: int | None = None
    cached: list[str] = field(default_factory=list)
    executed: list[str] = field(default_factory=list)
    current: str | None = None
    done: bool = False  # executing{node: null} seen
    poll_now: bool = False  # the WebSocket (re)connected: check history at once (events may be lost)
    client_id: str | None = None  # WebSocket client id the prompt was submitted under, if the socket was up
    ws_generation: int | None = None  # EventStream.generation at submit, if the socket was up
    witness: str | None = None  # a finished prompt seen in the worker's history before the submit
    failure: tuple[str, dict[str, Any]] | None = None  # (event, data) of execution_error / interrupted
    fraction: float = 0.0
    on_progress: ProgressCallback | None = None
    attached: bool = False  # wait() has taken over; until then progress reports go to backlog
    backlog: deque[Progress] = field(default_factory=lambda: deque(maxlen=_BACKLOG))
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class ComfyClient:
    """Client of one ComfyUI worker. Use one per worker; it is safe to share between tasks of one loop."""

    def __init__(
        self,
        url: str,
        *,
        http: httpx.AsyncClient | None = None,
        token: str | None = None,
        name: str | None = None,
        request_timeout: float = 30.0,
        poll_interval: float = 1.0,
        use_websocket: bool = True,
        unreachable_grace: float = 10.0,
        history_lag: float = 3.0,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("worker url must be http(s)://host[:port][/path]")
        # Credentials in the URL would leak into names and messages: drop them.
        netloc = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
        if ":" in (parts.hostname or "") and not netloc.startswith("["):
            netloc = f"[{parts.hostname}]" + (f":{parts.port}" if parts.port else "")
        self.url = f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}"
        self.name = name or netloc
        self.request_timeout = request_timeout
        self.poll_interval = poll_interval
        self.use_websocket = use_websocket
        self.unreachable_grace = unreachable_grace
        self.history_lag = history_lag
        self._token = token
        self._headers: dict[str, str] = {"Authorization": f"Bearer {token}"} if token else {}
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(timeout=request_timeout)
        self._stream = EventStream(
            self.url,
            on_event=self._on_event,
            on_connect=self._on_connect,
            headers=self._headers,
            open_timeout=min(10.0, request_timeout),
            name=self.name,
        )
        self._plain_client_id = uuid.uuid4().hex
        self._watches: dict[str, _Watch] = {}
        self._object_info: dict[str, Any] | None = None
        self._object_info_lock = asyncio.Lock()
        self._uploaded: dict[tuple[str, str, str, str], UploadedFile] = {}
        self._witness: str | None = None  # the latest prompt seen finished in this worker's history
        self._callback_tasks: set[asyncio.Future[Any]] = set()
        self._queue_listeners: list[Callable[[int], None]] = []
        self._closed = False

    def __repr__(self) -> str:
        return f"ComfyClient(name={self.name!r}, url={self.url!r})"

    # ------------------------------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> ComfyClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._stream.close()
        if self._owns_http:
            await self._http.aclose()

    @property
    def client_id(self) -> str:
        """The ``client_id`` the next submission carries (the current WebSocket's id)."""
        return self._stream.client_id if self.use_websocket else self._plain_client_id

    @property
    def websocket(self) -> EventStream:
        return self._stream

    # ------------------------------------------------------------------------------------------ http core

    def _scrub(self, text: str) -> str:
        return text.replace(self._token, "***") if self._token else text

    def _transport_error(self, exc: httpx.TransportError, what: str, prompt_id: str | None) -> ComfyError:
        detail = self._scrub(f"{type(exc).__name__}: {exc}".rstrip(": "))
        if isinstance(exc, httpx.TimeoutException):
            return WorkerTimeout(f"{what} timed out ({detail})", worker=self.name, prompt_id=prompt_id)
        return WorkerUnavailable(f"{what} failed ({detail})", worker=self.name, prompt_id=prompt_id)

    def _status_error(self, resp: httpx.Response, what: str, prompt_id: str | None) -> ComfyError:
        try:
            body = self._scrub(resp.text[:2000])
        except Exception:
            body = ""
        msg = f"{what} answered {resp.status_code}"
        if resp.status_code >= 500:
            return WorkerServerError(
                msg, status=resp.status_code, body=body, worker=self.name, prompt_id=prompt_id
            )
        return RequestRejected(
            f"{msg}: {body[:300]}" if body else msg,
            status=resp.status_code,
            body=body,
            worker=self.name,
            prompt_id=prompt_id,
        )

    async def _request(
        self,
        method: str,
        path: str,
        *,
        prompt_id: str | None = None,
        ok: Iterable[int] = (),
        **kwargs: Any,
    ) -> httpx.Response:
        what = f"{method} {path}"
        kwargs.setdefault("timeout", self.request_timeout)
        try:
            resp = await self._http.request(method, self.url + path, headers=self._headers, **kwargs)
        except httpx.TransportError as exc:
            raise self._transport_error(exc, what, prompt_id) from exc
        if resp.status_code >= 400 and resp.status_code not in set(ok):
            raise self._status_error(resp, what, prompt_id)
        return resp

    def _json(self, resp: httpx.Response, what: str, prompt_id: str | None = None) -> Any:
        try:
            return resp.json()
        except ValueError as exc:
            raise ProtocolError(
                f"{what} answered non-JSON",
                route=what,
                status=resp.status_code,
                body=self._scrub(resp.text[:300]),
                worker=self.name,
                prompt_id=prompt_id,
            ) from exc

    def _shape_error(self, what: str, expected: str, data: Any, prompt_id: str | None = None) -> ProtocolError:
        return ProtocolError(
            f"{what} answered {_json_kind(data)} where the protocol has {expected}",
            route=what,
            body=self._scrub(repr(data)[:300]),
            worker=self.name,
            prompt_id=prompt_id,
        )

    async def _get_json(self, path: str, *, prompt_id: str | None = None, **kwargs: Any) -> Any:
        resp = await self._request("GET", path, prompt_id=prompt_id, **kwargs)
        return self._json(resp, f"GET {path}", prompt_id)

    # ------------------------------------------------------------------------------------------ info

    async def object_info(self, refresh: bool = False) -> dict[str, Any]:
        """``GET /object_info``, cached for the life of this client unless ``refresh``."""
        async with self._object_info_lock:
            if self._object_info is None or refresh:
                data = await self._get_json("/object_info")
                if not isinstance(data, dict):
                    raise self._shape_error("GET /object_info", "an object", data)
                self._object_info = data
            return self._object_info

    async def models(self, folder: str | None = None) -> list[str]:
        """Model folder keys (``folder=None``) or the files of one folder key.

        An unknown folder key is ``RequestRejected`` with status 404 (what ComfyUI answers); an answer that is
        not a list is ``ProtocolError``.
        """
        path = "/models" if folder is None else f"/models/{folder}"
        data = await self._get_json(path)
        if not isinstance(data, list):
            raise self._shape_error(f"GET {path}", "a list", data)
        return [str(x) for x in data]

    async def system_stats(self) -> dict[str, Any]:
        """``GET /system_stats``; an answer that is not an object is ``ProtocolError``."""
        data = await self._get_json("/system_stats")
        if not isinstance(data, dict):
            raise self._shape_error("GET /system_stats", "an object", data)
        return data

    async def features(self) -> dict[str, Any]:
        """``GET /features``; an answer that is not an object is ``ProtocolError``."""
        data = await self._get_json("/features")
        if not isinstance(data, dict):
            raise self._shape_error("GET /features", "an object", data)
        return data

    async def post_extension(self, path: str, body: Mapping[str, Any], *, timeout: float | None = None) -> Any:
        """``POST`` a JSON body to a route served next to ComfyUI on the same address and token (reelforge's own
        extensions, e.g. the model fetcher); returns the JSON answer. Errors as for every request."""
        resp = await self._request("POST", path, json=dict(body), timeout=timeout or self.request_timeout)
        return self._json(resp, f"POST {path}")

    # ------------------------------------------------------------------------------ queue / history

    async def _queue_raw(self, prompt_id: str | None = None) -> dict[str, Any]:
        data = await self._get_json("/queue", prompt_id=prompt_id)
        if not isinstance(data, dict):
            # Never read as "empty queue": that would make a live prompt look lost.
            raise self._shape_error("GET /queue", "an object", data, prompt_id)
        return data

    @staticmethod
    def _queue_item(raw: Any) -> QueueItem | None:
        if not isinstance(raw, list | tuple) or len(raw) < 2:
            return None
        try:
            number = float(raw[0])
        except (TypeError, ValueError):
            number = 0.0
        extra = raw[3] if len(raw) > 3 and isinstance(raw[3], dict) else {}
        outs = raw[4] if len(raw) > 4 and isinstance(raw[4], list) else []
        return QueueItem(
            number=number, prompt_id=str(raw[1]), extra_data=extra, outputs_to_execute=[str(o) for o in outs]
        )

    @classmethod
    def _parse_queue(cls, data: Mapping[str, Any]) -> QueueState:
        running = [i for i in map(cls._queue_item, data.get("queue_running") or []) if i is not None]
        pending = [i for i in map(cls._queue_item, data.get("queue_pending") or []) if i is not None]
        pending.sort(key=lambda i: (i.number, i.prompt_id))
        return QueueState(running=running, pending=pending)

    async def get_queue(self) -> QueueState:
        """``GET /queue``: running prompt(s) and pending ones in execution order."""
        return self._parse_queue(await self._queue_raw())

    async def get_history(self, prompt_id: str) -> dict[str, Any] | None:
        """The history entry of one prompt, or None when the worker has none (running, pending or unknown)."""
        what = f"GET /history/{prompt_id}"
        data = await self._get_json(f"/history/{prompt_id}", prompt_id=prompt_id)
        if not isinstance(data, dict):
            raise self._shape_error(what, "an object", data, prompt_id)
        entry = data.get(prompt_id)
        if entry is None:
            return None
        if not isinstance(entry, dict):
            raise self._shape_error(what, "an object per entry", entry, prompt_id)
        if entry.get("status"):
            # Proof of this worker process's history: if it is still there later, the worker did not restart.
            self._witness = prompt_id
        return entry

    async def recent_history(self, max_items: int = 1) -> dict[str, Any]:
        """``GET /history?max_items=N``: the last N entries, by prompt id, oldest first."""
        data = await self._get_json("/history", params={"max_items": max_items})
        if not isinstance(data, dict):
            raise self._shape_error("GET /history", "an object", data)
        return data

    async def delete_pending(self, prompt_ids: Iterable[str]) -> None:
        """Remove pending prompts (``POST /queue {"delete"}``); running ones are not affected."""
        ids = [str(i) for i in prompt_ids]
        if ids:
            await self._request("POST", "/queue", json={"delete": ids})

    async def interrupt(self, prompt_id: str) -> bool:
        """Interrupt ``prompt_id`` if, and only if, /queue shows it is the running prompt. True when sent."""
        queue = await self.get_queue()
        if queue.position(prompt_id) != "running":
            return False
        await self._request("POST", "/interrupt", json={"prompt_id": prompt_id}, prompt_id=prompt_id)
        return True

    async def _locate(self, prompt_id: str) -> bool:
        """Whether the worker knows the prompt (queue, then history, then queue again against races)."""
        if self._parse_queue(await self._queue_raw(prompt_id)).position(prompt_id):
            return True
        if await self.get_history(prompt_id) is not None:
            return True
        return self._parse_queue(await self._queue_raw(prompt_id)).position(prompt_id) is not None

    async def remove(self, prompt_id: str, *, settle: float = 0.0, interrupt_running: bool = True) -> Removal:
        """Take one prompt back from this worker and report what was found and done; never raises.

        Pending -> ``POST /queue {"delete": [id]}``; running -> ``POST /interrupt {"prompt_id": id}`` (targeted:
        a worker ignores it once another prompt runs), or left running with ``interrupt_running=False`` (to wait
        for it instead); already finished -> nothing. No other prompt is ever touched. Then the history entry
        says how it ended and which files it wrote anyway (``outputs``); with ``settle`` > 0 an interrupted
        prompt is watched up to that many seconds until the worker stores that. A worker that cannot be asked
        gives what was learnt so far (``found="unknown"`` if nothing) and ``error``.
        """
        removal, _ = await self._take_back(prompt_id, settle, interrupt_running=interrupt_running)
        return removal

    async def _position(self, prompt_id: str) -> Literal["running", "pending"] | None:
        return self._parse_queue(await self._queue_raw(prompt_id)).position(prompt_id)

    async def _take_back(
        self, prompt_id: str, settle: float, *, interrupt_running: bool = True
    ) -> tuple[Removal, dict[str, Any] | None]:
        """``remove``, also returning the history entry it read (None if none)."""
        found: Literal["pending", "running", "finished", "unknown"] | None = None
        action: Literal["deleted", "interrupted", "nothing"] = "nothing"
        entry: dict[str, Any] | None = None
        error: str | None = None
        try:
            pos = await self._position(prompt_id)
            if pos is None:
                entry = await self.get_history(prompt_id)
                if entry is None:  # it may have been between two places: look at the queue once more
                    pos = await self._position(prompt_id)
            if pos == "pending":
                found = "pending"
                await self.delete_pending([prompt_id])
                action = "deleted"
                pos = await self._position(prompt_id)  # it may have started between the two requests
                if pos == "pending":
                    action, error = "nothing", "still pending after the delete"
            if pos == "running":
                found = "running"
                if not interrupt_running:
                    # Left running for the caller to wait on (a delete sent just before came too late).
                    removal = Removal(prompt_id=prompt_id, worker=self.name, found="running", action="nothing")
                    return removal, None
                await self._request("POST", "/interrupt", json={"prompt_id": prompt_id}, prompt_id=prompt_id)
                action = "interrupted"
            if entry is None and pos != "pending":
                entry = await self.get_history(prompt_id)
                if action == "interrupted" and settle > 0:
                    loop = asyncio.get_running_loop()
                    until, delay = loop.time() + settle, 0.05
                    while (entry is None or not entry.get("status")) and loop.time() < until:
                        await asyncio.sleep(min(delay, max(0.0, until - loop.time())))
                        delay = min(delay * 2, 0.5)
                        entry = await self.get_history(prompt_id)
        except ComfyError as exc:
            error = f"{type(exc).__name__}: {exc.message}"
            log.warning("removing prompt %s from %s: %s", prompt_id, self.name, error)
        ended: Literal["success", "error", "interrupted"] | None = None
        outputs: list[OutputFile] = []
        if entry is not None:
            if found is None or (found == "pending" and action == "deleted"):
                # In history already, or it ran to its end between our look at the queue and the delete.
                found, action = "finished", "nothing"
            if entry.get("status"):
                failure = history_failure(entry, worker=self.name, prompt_id=prompt_id)
                if failure is None:
                    ended = "success"
                else:
                    ended = "interrupted" if isinstance(failure, PromptInterrupted) else "error"
            try:
                outputs = parse_outputs(entry.get("outputs") or {})[0]
            except OutputError as exc:
                error = f"its history outputs are malformed: {exc.message}"
        removal = Removal(
            prompt_id=prompt_id,
            worker=self.name,
            found=found or "unknown",
            action=action,
            ended=ended,
            outputs=outputs,
            error=error,
        )
        return removal, entry

    # ------------------------------------------------------------------------------------------ submit

    def _watch(self, prompt_id: str) -> _Watch:
        watch = self._watches.get(prompt_id)
        if watch is None:
            if len(self._watches) > 2000:  # submitted but never waited for: forget the oldest
                for key in list(self._watches)[:500]:
                    self._watches.pop(key, None)
            watch = self._watches[prompt_id] = _Watch(prompt_id)
        return watch

    async def submit(
        self,
        graph: Graph,
        *,
        prompt_id: str | None = None,
        owner: JobOwner | None = None,
        extra_pnginfo: Mapping[str, Any] | None = None,
        front: bool = False,
        stamp_prefixes: bool = True,
    ) -> str:
        """Queue ``graph``; returns the prompt id (chosen here, before the POST). See the module docstring."""
        pid = str(prompt_id) if prompt_id else uuid.uuid4().hex
        if stamp_prefixes:
            graph = _stamp_prefixes(graph, _SAFE_TAG.sub("", pid)[:12] or "x")
        owner_data = owner.extra_data() if owner is not None else {}
        pnginfo: dict[str, Any] = dict(extra_pnginfo or {})
        pnginfo["reelforge"] = {**owner_data, "prompt_id": pid, "worker": self.name}
        if self.use_websocket:
            await self._stream.wait_connected(min(2.0, self.request_timeout))
        body: dict[str, Any] = {
            "prompt": graph,
            "client_id": self.client_id,
            "prompt_id": pid,
            "extra_data": {"reelforge": owner_data, "extra_pnginfo": pnginfo},
        }
        if front:
            body["front"] = True
        watch = self._watch(pid)
        watch.graph = graph
        watch.total = len(graph)
        watch.submitted_at = asyncio.get_running_loop().time()
        watch.client_id = self.client_id if self.use_websocket and self._stream.connected else None
        watch.ws_generation = self._stream.generation if watch.client_id is not None else None
        watch.witness = self._witness if self._witness != pid else None
        try:
            resp = await self._post_prompt(body, pid)
            if resp is None:  # response lost, but the worker has the prompt
                return pid
            if resp.status_code == 400:
                data = self._json(resp, "POST /prompt", pid)
                raise validation_error(data, worker=self.name, prompt_id=pid, graph=graph)
            if resp.status_code >= 400:
                raise self._status_error(resp, "POST /prompt", pid)
            data = self._json(resp, "POST /prompt", pid)
            server_pid = str(data.get("prompt_id") or pid) if isinstance(data, dict) else pid
            if server_pid != pid:  # a worker older than 0.3.45 ignores our prompt id
                log.warning("worker %s renamed prompt %s to %s", self.name, pid, server_pid)
                self._watches[server_pid] = self._watches.pop(pid)
                watch.prompt_id = pid = server_pid
            if isinstance(data, dict) and data.get("node_errors"):
                # Queued with only the outputs that validated, and on an idle worker already running them: take
                # it back, then say what really happened, with the files it wrote anyway.
                removal = await self.remove(pid, settle=_SETTLE_S)
                log.warning("prompt %s accepted with node_errors by %s; %s", pid, self.name, removal.describe())
                raise validation_error(
                    data, worker=self.name, prompt_id=pid, graph=graph, accepted=True, removal=removal
                )
        except BaseException:
            self._watches.pop(pid, None)
            raise
        return pid

    async def _post_prompt(self, body: dict[str, Any], pid: str) -> httpx.Response | None:
        """POST /prompt; on a lost response, look the prompt up and re-post (same id) only when absent."""
        for attempt in (1, 2):
            try:
                return await self._http.post(
                    self.url + "/prompt", json=body, headers=self._headers, timeout=self.request_timeout
                )
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                raise self._transport_error(exc, "POST /prompt", pid) from exc  # never reached the worker
            except httpx.TransportError as exc:
                error = self._transport_error(exc, "POST /prompt", pid)
                log.warning("response to POST /prompt %s lost (%s); looking it up", pid, type(exc).__name__)
                known = await self._locate_after_loss(pid)
                if known is None:
                    raise error from exc
                if known:
                    return None
                if attempt == 2:
                    raise error from exc
                log.warning("prompt %s is not on %s; posting it again", pid, self.name)
        raise AssertionError("unreachable")

    async def _locate_after_loss(self, pid: str) -> bool | None:
        """True/False = the worker has / has not got the prompt; None = the worker could not be asked."""
        for delay in (0.0, 0.25, 1.0):
            if delay:
                await asyncio.sleep(delay)
            try:
                return await self._locate(pid)
            except TransientComfyError:
                continue
        return None

    async def run(
        self,
        graph: Graph,
        *,
        prompt_id: str | None = None,
        owner: JobOwner | None = None,
        extra_pnginfo: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
        stamp_prefixes: bool = True,
    ) -> JobResult:
        """``submit`` then ``wait``."""
        pid = await self.submit(
            graph,
            prompt_id=prompt_id,
            owner=owner,
            extra_pnginfo=extra_pnginfo,
            stamp_prefixes=stamp_prefixes,
        )
        return await self.wait(pid, timeout=timeout, on_progress=on_progress)

    # ------------------------------------------------------------------------------------------ events

    def _on_connect(self) -> None:
        for watch in self._watches.values():
            watch.poll_now = True
            watch.changed.set()

    def watch_queue(self, listener: Callable[[int], None]) -> None:
        """Call ``listener(queue_remaining)`` on every change of the worker's queue (its ``status`` broadcast,
        sent to every socket on each put, pop, finish and delete), whoever caused it; opens the WebSocket now."""
        self._queue_listeners.append(listener)
        if self.use_websocket:
            self._stream.start()

    def forget(self, prompt_id: str) -> None:
        """Stop tracking a prompt this client submitted (it was taken back before it ran)."""
        self._watches.pop(prompt_id, None)

    def _on_event(self, msg: dict[str, Any]) -> None:
        data = msg.get("data")
        if not isinstance(data, dict):
            return
        if msg["type"] == "status" and self._queue_listeners:
            status = data.get("status")
            info = status.get("exec_info") if isinstance(status, dict) else None
            remaining = info.get("queue_remaining") if isinstance(info, dict) else None
            if isinstance(remaining, int):
                for listener in self._queue_listeners:
                    listener(remaining)
            return
        pid = data.get("prompt_id")
        watch = self._watches.get(pid) if isinstance(pid, str) else None
        if watch is None:
            return
        kind = msg["type"]
        loop_now = asyncio.get_running_loop().time()
        if kind == "execution_start":
            watch.started_ms = timestamp(data)
            watch.started_at = loop_now
        elif kind == "execution_cached":
            nodes = data.get("nodes")
            watch.cached = [str(n) for n in nodes] if isinstance(nodes, list) else []
        elif kind == "executing":
            node = data.get("node")
            if node is None:
                watch.done = True
            else:
                node = str(node)
                watch.current = node
                if node not in watch.executed:
                    watch.executed.append(node)
                self._emit(watch, node, 0.0, 1.0)
        elif kind == "progress":
            node = data.get("node")
            value, maximum = data.get("value"), data.get("max")
            if isinstance(value, int | float) and isinstance(maximum, int | float):
                self._emit(
                    watch, str(node) if node is not None else watch.current, float(value), float(maximum)
                )
        elif kind == "execution_success":
            watch.success_ms = timestamp(data)
        elif kind in ("execution_error", "execution_interrupted"):
            watch.failure = (kind, data)
        watch.changed.set()

    def _emit(self, watch: _Watch, node: str | None, value: float, maximum: float) -> None:
        if watch.attached and watch.on_progress is None:
            return  # a waiter without a callback: nobody will ever read these
        in_node = min(1.0, max(0.0, value / maximum)) if maximum > 0 else 0.0
        to_run = max(1, (watch.total or len(watch.executed)) - len(watch.cached), len(watch.executed))
        done_nodes = max(0, len(watch.executed) - 1)
        fraction = min(1.0, (done_nodes + in_node) / to_run)
        # Never report 1.0 before the prompt is really done; never go backwards.
        fraction = max(watch.fraction, min(fraction, 0.999))
        watch.fraction = fraction
        started = watch.started_at
        elapsed = asyncio.get_running_loop().time() - started if started is not None else 0.0
        progress = Progress(
            prompt_id=watch.prompt_id,
            worker=self.name,
            node=node,
            value=value,
            max=maximum,
            fraction=fraction,
            elapsed_s=elapsed,
        )
        if not watch.attached:
            watch.backlog.append(progress)  # events before the POST answer / before wait(): replayed there
            return
        self._call_progress(watch, progress)

    def _call_progress(self, watch: _Watch, progress: Progress) -> None:
        callback = watch.on_progress
        if callback is None:
            return
        try:
            result = callback(progress)
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                self._callback_tasks.add(task)
                task.add_done_callback(self._callback_tasks.discard)
        except Exception:
            log.exception("progress callback failed for prompt %s", watch.prompt_id)

    # ------------------------------------------------------------------------------------------ wait

    async def wait(
        self,
        prompt_id: str,
        *,
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> JobResult:
        """Wait for a submitted prompt and return its result; see the module docstring for the errors."""
        loop = asyncio.get_running_loop()
        begin = loop.time()
        deadline = begin + timeout if timeout is not None else None
        watch = self._watch(prompt_id)
        watch.on_progress = on_progress
        watch.attached = True
        backlog = list(watch.backlog)
        watch.backlog.clear()
        for progress in backlog if on_progress is not None else ():
            self._call_progress(watch, progress)
        if self.use_websocket and not self._closed:
            self._stream.start()
        unreachable_since: float | None = None
        failures = 0
        # Events reach us only while the socket that was up at submit time is still up; otherwise (no socket,
        # or it reconnected under a fresh id) look at /history at once. The watch was registered before the
        # POST, so no event was missed in between.
        ws_live = (
            watch.client_id is not None and self._stream.connected and self._stream.client_id == watch.client_id
        )
        next_poll = begin + self.poll_interval if ws_live else begin
        done_checked = False
        try:
            while True:
                now = loop.time()
                if (watch.done and not done_checked) or watch.poll_now or now >= next_poll:
                    watch.poll_now = False
                    ws_done = watch.done and not done_checked
                    done_checked = done_checked or watch.done
                    try:
                        entry = await self._poll(watch, ws_done=ws_done)
                    except (WorkerUnavailable, WorkerTimeout, WorkerServerError) as exc:
                        now = loop.time()
                        unreachable_since = unreachable_since or now
                        failures += 1
                        if now - unreachable_since >= self.unreachable_grace:
                            raise WorkerUnavailable(
                                f"worker unreachable for {now - unreachable_since:.1f}s while waiting "
                                f"({exc.message})",
                                worker=self.name,
                                prompt_id=prompt_id,
                            ) from exc
                        next_poll = now + min(0.25 * 2 ** (failures - 1), 2.0, self.unreachable_grace / 4)
                    else:
                        if unreachable_since is not None:
                            log.info("worker %s answers again", self.name)
                        unreachable_since, failures = None, 0
                        if entry is not None:
                            return self._result(entry, watch, begin)
                        next_poll = loop.time() + self.poll_interval
                now = loop.time()
                if deadline is not None and now >= deadline:
                    return self._result(await self._on_deadline(watch, timeout or 0.0), watch, begin)
                delay = next_poll - now
                if deadline is not None:
                    delay = min(delay, deadline - now)
                watch.changed.clear()
                if (watch.done and not done_checked) or watch.poll_now or delay <= 0:
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(watch.changed.wait(), delay)
        finally:
            self._watches.pop(prompt_id, None)

    async def _poll(self, watch: _Watch, *, ws_done: bool) -> dict[str, Any] | None:
        """A finished history entry, or None while the prompt is pending/running. Raises PromptLost."""
        pid = watch.prompt_id
        entry = await self.get_history(pid)
        if ws_done and (entry is None or not entry.get("status")):
            # The entry can lag the event (ordering hazard): retry briefly.
            loop = asyncio.get_running_loop()
            until = loop.time() + self.history_lag
            delay = 0.05
            while (entry is None or not entry.get("status")) and loop.time() < until:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
                entry = await self.get_history(pid)
            if (entry is None or not entry.get("status")) and watch.failure is not None:
                event, data = watch.failure
                raise failure_from_event(event, data, worker=self.name, prompt_id=pid)
        if entry is not None and entry.get("status"):
            return entry
        if entry is not None:
            return None  # stored without status yet: still finishing
        raw = await self._queue_raw(pid)
        if self._note_queue(watch, raw):
            return None
        entry = await self.get_history(pid)
        if entry is not None:
            return entry if entry.get("status") else None
        if self._note_queue(watch, await self._queue_raw(pid)):
            return None
        evidence = await self._no_restart_evidence(watch)
        if evidence is not None:
            raise PromptDeleted(
                f"the prompt is in neither the worker's queue nor its history, yet the worker did not restart "
                f"({evidence}): somebody removed it",
                evidence=evidence,
                worker=self.name,
                prompt_id=pid,
            )
        raise PromptLost(
            "the worker has the prompt in neither its queue nor its history (restarted?)",
            worker=self.name,
            prompt_id=pid,
        )

    async def _no_restart_evidence(self, watch: _Watch) -> str | None:
        """Why we know the worker process is the one that accepted the prompt, or None if we cannot tell."""
        if watch.ws_generation is not None and await self._stream.alive(
            watch.ws_generation, min(2.0, self.request_timeout)
        ):
            return "the WebSocket opened before the submit is still open and answers"
        if watch.witness is not None and await self.get_history(watch.witness) is not None:
            return f"prompt {watch.witness}, seen in its history before the submit, is still there"
        return None

    def _note_queue(self, watch: _Watch, raw: Mapping[str, Any]) -> bool:
        """Whether the prompt is in the queue; learns the graph and its executed outputs for progress."""
        for key in ("queue_running", "queue_pending"):
            for item in raw.get(key) or []:
                if isinstance(item, list) and len(item) >= 2 and str(item[1]) == watch.prompt_id:
                    graph = item[2] if len(item) > 2 and isinstance(item[2], dict) else None
                    outs = item[4] if len(item) > 4 and isinstance(item[4], list) else None
                    if graph is not None:
                        watch.graph = graph
                        watch.total = len(ancestors(graph, [str(o) for o in outs])) if outs else len(graph)
                    return True
        return False

    async def _on_deadline(self, watch: _Watch, limit: float) -> dict[str, Any]:
        """At the deadline: the entry if it just finished, else remove the prompt; JobDeadlineExceeded."""
        pid = watch.prompt_id
        with contextlib.suppress(ComfyError):
            entry = await self.get_history(pid)
            if entry is not None and entry.get("status"):
                return entry
        removal, entry = await self._take_back(pid, 0.0)
        if removal.found == "finished" and entry is not None and entry.get("status"):
            return entry  # it finished between the two looks: that is its result
        raise JobDeadlineExceeded(
            f"prompt did not finish within {limit:g}s; {removal.describe()}",
            removal=removal,
            worker=self.name,
            prompt_id=pid,
        )

    def _result(self, entry: Mapping[str, Any], watch: _Watch, begin: float) -> JobResult:
        pid = watch.prompt_id
        failure = history_failure(entry, worker=self.name, prompt_id=pid)
        if failure is not None:
            raise failure
        files, texts = parse_outputs(entry.get("outputs") or {})
        cached_data = message_data(entry, "execution_cached")
        cached_nodes = cached_data.get("nodes") if cached_data else None
        cached = [str(n) for n in cached_nodes] if isinstance(cached_nodes, list) else list(watch.cached)
        prompt = entry.get("prompt")
        graph = (
            prompt[2]
            if isinstance(prompt, list) and len(prompt) > 2 and isinstance(prompt[2], dict)
            else None
        )
        outs = (
            prompt[4]
            if isinstance(prompt, list) and len(prompt) > 4 and isinstance(prompt[4], list)
            else None
        )
        executed = [n for n in watch.executed if n not in cached]
        saved = saved_models(graph, outs) if graph is not None else []
        if graph is not None and outs is not None:
            ran = ancestors(graph, [str(o) for o in outs]) - set(cached)
            executed += numeric_order(ran - set(executed))
        started = timestamp(message_data(entry, "execution_start")) or watch.started_ms
        finished = timestamp(message_data(entry, "execution_success")) or watch.success_ms
        now = asyncio.get_running_loop().time()
        since = watch.submitted_at if watch.submitted_at is not None else begin
        result = JobResult(
            prompt_id=pid,
            worker=self.name,
            outputs=files,
            saved_models=saved,
            texts=texts,
            cached_nodes=cached,
            executed_nodes=executed,
            started_ms=started,
            finished_ms=finished,
            wall_s=max(0.0, now - since),
        )
        if watch.started_at is not None and watch.submitted_at is not None:
            result.queued_s = max(0.0, watch.started_at - watch.submitted_at)
        else:
            result.queued_s = max(0.0, result.wall_s - result.gpu_seconds)
        if watch.on_progress is not None:
            watch.fraction = 1.0
            self._call_progress(
                watch,
                Progress(
                    prompt_id=pid,
                    worker=self.name,
                    node=None,
                    value=1.0,
                    max=1.0,
                    fraction=1.0,
                    elapsed_s=result.gpu_seconds,
                ),
            )
        return result

    # ------------------------------------------------------------------------------------------ files

    async def upload(
        self,
        source: Path | bytes,
        *,
        filename: str,
        subfolder: str = "",
        kind: str = "input",
        name: str | None = None,
    ) -> UploadedFile:
        """Upload a file under ``<sha256[:16]><ext>`` (``ext`` from ``filename``); a repeat is a no-op.

        ``name`` overrides the content-hash name (e.g. a caption that must share its image's stem); the worker
        keeps an identical existing file and renames a different one, so nothing is overwritten.
        """
        if isinstance(source, bytes):
            digest = sha256_bytes(source)
            size = len(source)
        else:
            digest, size = await asyncio.to_thread(sha256_file, Path(source))
        ext = PurePosixPath(filename).suffix.lower()
        if name is None:
            name = digest[:16] + (ext if _SAFE_EXT.match(ext) else "")
        elif "/" in name or "\\" in name or name.startswith(".") or not name:
            raise ValueError(f"upload name {name!r} must be a plain file name")
        key = (digest, name, subfolder, kind)
        known = self._uploaded.get(key)
        if known is not None:
            return known
        data = {"subfolder": subfolder, "type": kind}
        handle: BinaryIO | None = None
        try:
            if isinstance(source, bytes):
                content: bytes | BinaryIO = source
            else:
                handle = await asyncio.to_thread(Path(source).open, "rb")
                content = handle
            resp = await self._request(
                "POST",
                "/upload/image",
                files={"image": (name, content, "application/octet-stream")},
                data=data,
                timeout=max(self.request_timeout, size / 2_000_000),
            )
        finally:
            if handle is not None:
                handle.close()
        body = self._json(resp, "POST /upload/image")
        if not isinstance(body, dict) or not body.get("name"):
            raise RequestRejected("upload answered without a name", status=resp.status_code, worker=self.name)
        uploaded = UploadedFile(
            name=str(body["name"]),
            subfolder=str(body.get("subfolder") or ""),
            type=str(body.get("type") or kind),
        )
        self._uploaded[key] = uploaded
        return uploaded

    async def download(self, output: OutputFile, dest_dir: Path, *, max_bytes: int | None = None) -> Path:
        """Stream ``/view`` into ``dest_dir/<filename>``; see :meth:`download_file`."""
        return (await self.download_file(output, dest_dir, max_bytes=max_bytes)).path

    async def download_file(
        self, output: OutputFile, dest_dir: Path, *, max_bytes: int | None = None
    ) -> DownloadedFile:
        """Stream ``/view`` into ``dest_dir/<filename>`` (temp file, then rename); size-checked, sha256 computed.

        An existing file with the same bytes is kept and returned; an existing *different* file is never
        overwritten: the download is stored as ``<stem>.<sha256[:8]><ext>`` beside it instead.
        """
        basename = PurePosixPath(output.filename.replace("\\", "/")).name
        if not basename or basename in (".", ".."):
            raise OutputError(f"unsafe output file name {output.filename!r}", worker=self.name)
        dest_dir = Path(dest_dir)
        await asyncio.to_thread(dest_dir.mkdir, parents=True, exist_ok=True)
        what = f"GET /view {basename}"
        tmp = dest_dir / f".{basename}.{uuid.uuid4().hex[:8]}.part"
        digest = hashlib.sha256()
        received = 0
        try:
            async with self._http.stream(
                "GET",
                self.url + "/view",
                params=output.view_params(),
                headers=self._headers,
                timeout=self.request_timeout,
            ) as resp:
                if resp.status_code >= 400:
                    await resp.aread()
                    error = self._status_error(resp, what, None)
                    if resp.status_code == 404:
                        raise OutputError(f"{what}: the worker has no such file", worker=self.name) from error
                    raise error
                length_header = resp.headers.get("content-length")
                expected = int(length_header) if length_header and length_header.isdigit() else None
                if max_bytes is not None and expected is not None and expected > max_bytes:
                    raise OutputError(
                        f"{what}: {expected} bytes exceed the limit of {max_bytes}", worker=self.name
                    )
                fh = await asyncio.to_thread(tmp.open, "wb")
                try:
                    async for chunk in resp.aiter_bytes(_CHUNK):
                        received += len(chunk)
                        if max_bytes is not None and received > max_bytes:
                            raise OutputError(f"{what}: more than {max_bytes} bytes", worker=self.name)
                        digest.update(chunk)
                        fh.write(chunk)
                finally:
                    fh.close()
                raw_received = resp.num_bytes_downloaded  # Content-Length counts encoded bytes
                if expected is not None and raw_received != expected:
                    raise OutputError(
                        f"{what}: received {raw_received} bytes, Content-Length said {expected}",
                        worker=self.name,
                    )
        except httpx.TransportError as exc:
            await asyncio.to_thread(tmp.unlink, missing_ok=True)
            raise self._transport_error(exc, what, None) from exc
        except BaseException:
            await asyncio.to_thread(tmp.unlink, missing_ok=True)
            raise
        sha256 = digest.hexdigest()
        path = await asyncio.to_thread(_place, tmp, dest_dir / basename, sha256)
        return DownloadedFile(
            node_id=output.node_id, kind=output.kind, path=path, sha256=sha256, size=received
        )


def _json_kind(data: Any) -> str:
    """How JSON would call the type of ``data``, for messages."""
    if data is None:
        return "null"
    if isinstance(data, bool):
        return "a boolean"
    if isinstance(data, int | float):
        return "a number"
    if isinstance(data, str):
        return "a string"
    return "a list" if isinstance(data, list) else "an object"


def _place(tmp: Path, dest: Path, sha256: str) -> Path:
    """Move ``tmp`` to ``dest`` without ever replacing a different existing file."""
    for candidate in (dest, dest.with_name(f"{dest.stem}.{sha256[:8]}{dest.suffix}")):
        try:
            os.link(tmp, candidate)  # atomic, fails if candidate exists
        except FileExistsError:
            if sha256_file(candidate)[0] == sha256:
                tmp.unlink(missing_ok=True)
                return candidate
            continue
        except OSError:  # no hard links on this filesystem
            if candidate.exists():
                if sha256_file(candidate)[0] == sha256:
                    tmp.unlink(missing_ok=True)
                    return candidate
                continue
            os.replace(tmp, candidate)
            return candidate
        tmp.unlink(missing_ok=True)
        return candidate
    tmp.unlink(missing_ok=True)
    raise OutputError(f"{dest} and its hashed alternative both exist with different contents")
