"""Open the configured worker fleet: real ComfyUI servers from settings, or embedded preview workers."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from reelforge.comfy.client import ComfyClient
from reelforge.comfy.pool import WorkerPool
from reelforge.preview.server import PreviewWorker
from reelforge.settings import WorkerSettings


@contextlib.asynccontextmanager
async def open_fleet(settings: WorkerSettings, *, preview_root: Path | None = None) -> AsyncIterator[WorkerPool]:
    """Yield a started pool over the configured workers.

    With ``REELFORGE_COMFY_URLS`` unset, ``settings.preview_workers`` preview workers are started on free
    loopback ports (folders under ``preview_root``, a temporary folder by default) and stopped on exit.
    """
    token = settings.comfy_token.get_secret_value() if settings.comfy_token else None
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=32)
    async with contextlib.AsyncExitStack() as stack:
        http = await stack.enter_async_context(
            httpx.AsyncClient(timeout=settings.request_timeout_s, limits=limits)
        )
        labels: dict[str, set[str]] = {}
        urls: list[str] = []
        if settings.embedded:
            root = preview_root or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="reelforge-")))
            for index in range(settings.preview_workers):
                worker = PreviewWorker(root / f"preview-{index}", latency=settings.preview_latency)
                urls.append(await worker.start())
                stack.push_async_callback(worker.stop)
        else:
            for endpoint in settings.comfy_urls:
                urls.append(endpoint.url)
                labels[endpoint.url] = set(endpoint.labels)
        clients = [ComfyClient(url, http=http, token=token) for url in urls]
        for client in clients:
            stack.push_async_callback(client.aclose)
        pool = WorkerPool(
            clients,
            labels=labels or None,
            queue_depth=settings.queue_depth,
            health_interval=settings.health_interval_s,
        )
        await stack.enter_async_context(pool)
        yield pool
