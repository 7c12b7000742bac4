"""Shared fixtures: preview workers on 127.0.0.1 with a temporary root."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from reelforge.preview.server import PreviewWorker

MakeWorker = Callable[..., Awaitable[PreviewWorker]]


@pytest.fixture
async def preview_worker(tmp_path: Path) -> AsyncIterator[PreviewWorker]:
    """A started preview worker (instant latency, no faults) rooted in a temp dir."""
    worker = PreviewWorker(tmp_path / "preview-worker")
    await worker.start()
    try:
        yield worker
    finally:
        await worker.stop()


@pytest.fixture
async def make_worker(tmp_path: Path) -> AsyncIterator[MakeWorker]:
    """Factory for several started workers: ``await make_worker(latency="fixed:1", faults="...")``."""
    workers: list[PreviewWorker] = []

    async def factory(**kw: Any) -> PreviewWorker:
        root = kw.pop("root", None) or tmp_path / f"preview-worker-{len(workers)}"
        worker = PreviewWorker(root, **kw)
        await worker.start()
        workers.append(worker)
        return worker

    try:
        yield factory
    finally:
        for worker in workers:
            await worker.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain aiohttp session, for speaking the ComfyUI protocol without our client."""
    async with aiohttp.ClientSession() as session:
        yield session
