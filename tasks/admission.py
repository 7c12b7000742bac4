"""Optional GPU admission through Prefect: a global concurrency limit per worker label.

Several orchestrator processes (or machines) sharing workers are admitted by the pool itself, from each worker's
own queue (``REELFORGE_ADMISSION=shared``, reelforge/comfy/pool.py): +13 ms per job. With
``REELFORGE_GLOBAL_LIMITS=true`` every GPU job also holds one slot of ``reelforge-gpu-<label>`` (slots = workers
serving that label x (1 + queue_depth)), created on first use, for setups that want the slots visible in Prefect.
Each acquire + release is a round trip to the Prefect server (~170 ms alone, ~2 s per back-to-back job), so it is
off by default.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from prefect.client.orchestration import get_client
from prefect.concurrency.asyncio import concurrency
from prefect.exceptions import ObjectAlreadyExists

from reelforge.comfy import WorkerPool
from reelforge.jobs import label_for_kind

LIMIT_PREFIX = "reelforge-gpu-"


def limit_name(label: str) -> str:
    return f"{LIMIT_PREFIX}{label}"


def slots_for(pool: WorkerPool, label: str) -> int:
    """Workers that can take jobs of ``label`` (labelled so, or unlabelled = any) x (1 + queue_depth)."""
    workers = sum(1 for w in pool.status() if not w.labels or label in w.labels)
    return max(1, workers) * pool.capacity


class GpuAdmission:
    """Holds a global concurrency slot per GPU job when enabled; a no-op otherwise."""

    def __init__(self, pool: WorkerPool, *, enabled: bool, timeout_s: float | None = None) -> None:
        self.pool = pool
        self.enabled = enabled
        self.timeout_s = timeout_s
        self._ensured: dict[str, int] = {}
        self._lock = asyncio.Lock()

    async def ensure_limit(self, label: str) -> str:
        """Create (or resize) the label's limit once per process; returns its name."""
        name = limit_name(label)
        slots = slots_for(self.pool, label)
        if self._ensured.get(name) == slots:
            return name
        async with self._lock:
            if self._ensured.get(name) != slots:
                async with get_client() as client:
                    try:
                        await client.upsert_global_concurrency_limit_by_name(name, slots)
                    except ObjectAlreadyExists:  # another process created it between read and create
                        await client.upsert_global_concurrency_limit_by_name(name, slots)
                self._ensured[name] = slots
        return name

    @contextlib.asynccontextmanager
    async def slot(self, kind: str) -> AsyncIterator[None]:
        if not self.enabled:
            yield
            return
        name = await self.ensure_limit(label_for_kind(kind))
        # strict: a limit that vanished under us must not silently admit everything.
        async with concurrency(name, occupy=1, timeout_seconds=self.timeout_s, strict=True):
            yield
