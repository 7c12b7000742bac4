"""The worker fleet: ComfyUI clients and the pool built from ``WorkerSettings``, or embedded preview workers.

The one place that turns settings into clients (``worker_clients``) and a started pool (``open_fleet``): flows,
cancellation hooks and benchmarks all come through here, so every documented worker setting reaches them.

At start every worker is checked; one that is not healthy gets a warning naming it and the cause, and when
none becomes healthy within ``REELFORGE_WORKER_GRACE_S`` the fleet fails at once with ``NoHealthyWorkers``
(permanent, listing every worker and why) instead of letting jobs wait minutes for a pool that never comes up.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from reelforge.comfy.client import ComfyClient
from reelforge.comfy.pool import WorkerPool
from reelforge.preview.server import PreviewWorker
from reelforge.settings import WorkerSettings

__all__ = ["open_fleet", "worker_clients"]

_LIMITS = httpx.Limits(max_connections=64, max_keepalive_connections=32)


def worker_clients(
    settings: WorkerSettings, http: httpx.AsyncClient, urls: list[str] | None = None
) -> list[ComfyClient]:
    """One client per configured worker (or per URL in ``urls``), with the token and request timeout."""
    token = settings.comfy_token.get_secret_value() if settings.comfy_token else None
    targets = urls if urls is not None else [e.url for e in settings.comfy_urls]
    return [ComfyClient(url, http=http, token=token, request_timeout=settings.request_timeout_s) for url in targets]


EMBEDDED_SHARED_LORAS = "rf-shared"  # how embedded preview workers list the shared LoRA folder inside loras


@contextlib.asynccontextmanager
async def open_fleet(
    settings: WorkerSettings,
    *,
    preview_root: Path | None = None,
    wait_healthy: bool = True,
    shared_loras: Path | None = None,
) -> AsyncIterator[WorkerPool]:
    """Yield a started pool over the configured workers, at least one of them healthy.

    With ``REELFORGE_COMFY_URLS`` unset, ``settings.preview_workers`` preview workers are started on free
    loopback ports (folders under ``preview_root``, a temporary folder by default) and stopped on exit; with
    ``shared_loras`` each of them lists that folder as ``loras/rf-shared/`` (as GPU workers would list a mounted
    folder), so LoRA delivery works on them as on a fleet.
    """
    async with contextlib.AsyncExitStack() as stack:
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=settings.request_timeout_s, limits=_LIMITS))
        labels: dict[str, set[str]] = {}
        urls: list[str] = []
        if settings.embedded:
            root = preview_root or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="reelforge-")))
            for index in range(settings.preview_workers):
                if shared_loras is not None:
                    loras = root / f"preview-{index}" / "models" / "loras"
                    await asyncio.to_thread(loras.mkdir, parents=True, exist_ok=True)
                    with contextlib.suppress(FileExistsError):
                        await asyncio.to_thread((loras / EMBEDDED_SHARED_LORAS).symlink_to, shared_loras, True)
                worker = PreviewWorker(root / f"preview-{index}", latency=settings.preview_latency)
                urls.append(await worker.start())
                stack.push_async_callback(worker.stop)
        else:
            urls = [e.url for e in settings.comfy_urls]
            labels = {e.url: set(e.labels) for e in settings.comfy_urls}
        clients = worker_clients(settings, http, urls)
        for client in clients:
            stack.push_async_callback(client.aclose)
        pool = WorkerPool(
            clients,
            labels=labels or None,
            queue_depth=settings.queue_depth,
            health_interval=settings.health_interval_s,
            ephemeral=settings.embedded,
            admission=settings.admission_mode,
        )
        await stack.enter_async_context(pool)
        if wait_healthy:
            await pool.wait_healthy(settings.worker_grace_s)
        yield pool
