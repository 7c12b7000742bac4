"""One ComfyUI WebSocket per client: a background reader that hands every JSON event to a callback.

After a drop it reconnects with backoff under a **fresh** ``clientId``: a socket re-opened under the old id
gets no messages at all once the server drops the old one (comfyui-api.md (e)4). Prompts submitted under
the old id keep their events on the server side, so their waiters finish through /history polling.
``generation`` counts successful connections; ``alive(generation)`` tells whether that same connection is
still open and answering (evidence that the worker did not restart since).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

log = logging.getLogger("reelforge.comfy.ws")


class _NoCredentials(logging.Filter):
    """websockets logs every handshake header at DEBUG: the bearer token must not reach any log."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "authorization" in message.lower():
            record.msg, record.args = re.sub(r"(?i)(authorization:\s*)\S.*", r"\1***", message), None
        return True


# The protocol logger handed to websockets (its handshake lines), with the token masked.
_protocol_log = logging.getLogger("reelforge.comfy.ws.protocol")
_protocol_log.addFilter(_NoCredentials())

_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def ws_base(http_url: str) -> str:
    """``http(s)://host[:port][/path]`` -> ``ws(s)://host[:port][/path]/ws``."""
    parts = urlsplit(http_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}/ws"


class EventStream:
    """Keeps one WebSocket open to a worker and dispatches its text events; binary frames are ignored."""

    def __init__(
        self,
        http_url: str,
        *,
        on_event: Callable[[dict[str, Any]], None],
        on_connect: Callable[[], None] | None = None,
        headers: Mapping[str, str] | None = None,
        open_timeout: float = 10.0,
        name: str = "",
        max_backoff: float = 5.0,
    ) -> None:
        self._base = ws_base(http_url)
        self._on_event = on_event
        self._on_connect = on_connect
        self._headers = dict(headers or {})
        self._open_timeout = open_timeout
        self._name = name
        self._max_backoff = max_backoff
        self._client_id = uuid.uuid4().hex
        self._task: asyncio.Task[None] | None = None
        self._ws: ClientConnection | None = None
        self._connected = asyncio.Event()
        self._attempted = asyncio.Event()  # set after each connection attempt, whatever its outcome
        self._failing = False  # the last connection attempt failed
        self._closed = False
        self.generation = 0  # incremented on every successful connection
        host = urlsplit(http_url).hostname or ""
        self._proxy: Literal[True] | None = None if host in _LOOPBACK else True

    @property
    def client_id(self) -> str:
        """The clientId of the current (or next) connection; prompts submitted with it get our events."""
        return self._client_id

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> None:
        """Start the reader task if it is not running."""
        if self._closed:
            return
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"comfy-ws-{self._name}")

    async def wait_connected(self, timeout: float) -> bool:
        """Start the reader and wait up to ``timeout`` seconds for an open socket."""
        self.start()
        if self._connected.is_set():
            return True
        if self._failing:
            return False  # the worker refused the last attempt: do not delay the caller
        try:
            await asyncio.wait_for(self._attempted.wait(), timeout)
        except TimeoutError:
            return False
        return self._connected.is_set()

    async def alive(self, generation: int, timeout: float) -> bool:
        """Whether the connection numbered ``generation`` is still the open one and answers a ping now.

        A pong on the same TCP connection proves the server process that held it at ``generation`` is still
        up (a restart closes every socket). Checking the counter alone is not enough: the reader may not have
        noticed a dead connection yet.
        """
        ws = self._ws
        if ws is None or self.generation != generation or not self._connected.is_set():
            return False
        try:
            pong = await ws.ping()
            await asyncio.wait_for(pong, timeout)
        except (OSError, WebSocketException, TimeoutError):
            return False
        return self.generation == generation and self._ws is ws

    async def drop(self) -> None:
        """Close the current socket (the reader reconnects under a fresh id). For tests and fault handling."""
        ws = self._ws
        if ws is not None:
            await ws.close()

    async def close(self) -> None:
        self._closed = True
        task, self._task = self._task, None
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._connected.clear()

    async def _run(self) -> None:
        backoff = 0.1
        first = True
        while not self._closed:
            if not first:
                # Never reuse an id: the server would drop the new socket along with the old one's entry.
                self._client_id = uuid.uuid4().hex
            first = False
            url = f"{self._base}?clientId={self._client_id}"
            try:
                async with connect(
                    url,
                    additional_headers=self._headers or None,
                    open_timeout=self._open_timeout,
                    max_size=None,
                    proxy=self._proxy,
                    ping_interval=20,
                    ping_timeout=20,
                    close_timeout=2,
                    logger=_protocol_log,
                ) as ws:
                    self._ws = ws
                    self.generation += 1
                    self._failing = False
                    self._connected.set()
                    self._attempted.set()
                    backoff = 0.1
                    if self._on_connect is not None:
                        self._on_connect()
                    log.debug("websocket to %s open as %s", self._name, self._client_id)
                    async for frame in ws:
                        if isinstance(frame, str):
                            self._dispatch(frame)
            except asyncio.CancelledError:
                raise
            except (OSError, WebSocketException, TimeoutError) as exc:
                log.debug("websocket to %s failed: %s", self._name, type(exc).__name__)
                if self._ws is None:
                    self._failing = True
            except Exception:  # a bug in a callback must not kill the reader
                log.exception("websocket reader for %s crashed; reconnecting", self._name)
            finally:
                self._ws = None
                self._connected.clear()
                self._attempted.set()
                self._attempted = asyncio.Event()
            if self._closed:
                break
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._max_backoff)

    def _dispatch(self, frame: str) -> None:
        try:
            msg = json.loads(frame)
        except ValueError:
            return
        if isinstance(msg, dict) and isinstance(msg.get("type"), str):
            try:
                self._on_event(msg)
            except Exception:
                log.exception("websocket event handler failed for %s", msg.get("type"))
