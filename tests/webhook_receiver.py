"""A webhook receiver on 127.0.0.1 for tests: verifies signatures the way the README tells receivers to.

It runs its own event loop in a daemon thread (so sync and async tests, and flows, can all post to it), refuses
a bad signature or an old timestamp with 401 and an event id it has accepted before with 409, can answer 503 to
the first ``fail_first`` requests, or hang for ``hang_s`` before answering.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from reelforge.webhooks import EVENT_ID_HEADER, WebhookVerificationError, verify


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    status: int
    reason: str = ""


@dataclass
class WebhookReceiver:
    secret: str
    tolerance_s: float = 300
    fail_first: int = 0
    hang_s: float = 0.0
    received: list[Received] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    url: str = ""

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="webhook-receiver", daemon=True)
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = dict(request.headers)
        if self.hang_s:
            await asyncio.sleep(self.hang_s)
        if len(self.received) < self.fail_first:
            self.received.append(Received(headers, body, 503, "injected"))
            return web.Response(status=503, text="try again")
        try:
            event_id = verify(self.secret, body, request.headers, tolerance_s=self.tolerance_s)
        except WebhookVerificationError as exc:
            self.received.append(Received(headers, body, 401, str(exc)))
            return web.Response(status=401, text=str(exc))
        if event_id in self.seen:
            self.received.append(Received(headers, body, 409, "replayed event id"))
            return web.Response(status=409, text="already processed")
        self.seen.add(event_id)
        self.received.append(Received(headers, body, 200))
        return web.json_response({"ok": True})

    async def _start(self) -> str:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{port}/hooks/reelforge"

    def start(self) -> WebhookReceiver:
        self._thread.start()
        self.url = self._call(self._start())
        return self

    def _call(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(30)

    def stop(self) -> None:
        if self._runner is not None:
            self._call(self._runner.cleanup())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    @property
    def accepted(self) -> list[Received]:
        return [r for r in self.received if r.status == 200]

    def event_ids(self) -> list[str]:
        return [r.headers.get(EVENT_ID_HEADER, "") for r in self.received]
