"""The composition root: settings read once, then the store, the worker fleet and the CPU runner built from them.

Flows, the cancellation hooks and the benchmarks all get their connections here (ARCHITECTURE.md: one
composition root), so a documented setting reaches every user of it::

    async with open_engine() as engine:          # Settings.load() unless settings are given
        engine.store, engine.pool, engine.cpu, engine.settings

Opening checks what would otherwise fail late: debris of killed runs is swept (``/tmp/reelforge-job-<pid>-*``
folders whose process is gone), the store is probed for writing (``StoreNotWritable`` names it), and the fleet
needs at least one healthy worker within ``REELFORGE_WORKER_GRACE_S`` (``NoHealthyWorkers`` names each one).

A batch opens one engine and runs its characters inside ``share_engine(engine)``: every ``open_engine()`` in
that context (the character flows, as subflows) gets the same engine back, ``borrowed=True``, and does not
close it, so routing, model affinity and admission see every character's jobs on one worker pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import logging
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

from reelforge.comfy.pool import WorkerPool
from reelforge.cpu import CpuRunner
from reelforge.delivery import Delivery, DeliveryError, SharedFolder, WorkerFetch
from reelforge.fleet import EMBEDDED_SHARED_LORAS, open_fleet
from reelforge.liveness import JOB_DIR_PREFIX, sweep_stale_dirs
from reelforge.media.ffmpeg import ffmpeg_exe
from reelforge.settings import Settings
from reelforge.storage import ArtifactRef, ArtifactStore, open_store

__all__ = ["Engine", "open_engine", "open_store_checked", "share_engine"]

log = logging.getLogger(__name__)


@dataclass
class Engine:
    """The live objects of one process: handed to flows and stages, never built anywhere else."""

    settings: Settings
    store: ArtifactStore
    pool: WorkerPool
    cpu: CpuRunner
    lora_folder: SharedFolder | None = None  # the shared LoRA folder, when delivery is by folder
    borrowed: bool = False  # handed out by share_engine: other runs use it too, its owner closes it

    def lora_delivery(self, ref: ArtifactRef) -> Delivery:
        """How the stored LoRA ``ref`` reaches the workers: the shared folder, else a fetch by signed URL."""
        if self.lora_folder is not None:
            return self.lora_folder
        if not self.settings.store.is_s3:
            raise DeliveryError(
                "workers cannot fetch from a local store: set REELFORGE_LORA_SHARED_DIR to a folder they mount, "
                "or use an S3 store (REELFORGE_STORE=s3://...)",
                name=ref.key,
            )
        return WorkerFetch(self.store.url(ref.key), size=ref.size)

    @property
    def ffmpeg(self) -> str:
        """The ffmpeg binary the media tools run."""
        return ffmpeg_exe()


async def open_store_checked(settings: Settings) -> ArtifactStore:
    """The configured store, after a probe write (fails before any work with the store named)."""
    store = await asyncio.to_thread(open_store, settings.store)
    await asyncio.to_thread(store.check_writable)
    return store


def sweep_job_dirs() -> list[Path]:
    """Remove temporary job folders left by processes that died (SIGKILL) on this machine."""
    swept = sweep_stale_dirs(Path(tempfile.gettempdir()), JOB_DIR_PREFIX)
    if swept:
        log.info("removed %d job folder(s) left by killed runs: %s", len(swept), ", ".join(p.name for p in swept))
    return swept


_SHARED: contextvars.ContextVar[Engine | None] = contextvars.ContextVar("reelforge_shared_engine", default=None)


@contextlib.contextmanager
def share_engine(engine: Engine) -> Iterator[None]:
    """Within this context, ``open_engine()`` hands out ``engine`` (borrowed) instead of building one."""
    token = _SHARED.set(dataclasses.replace(engine, borrowed=True))
    try:
        yield
    finally:
        _SHARED.reset(token)


@contextlib.asynccontextmanager
async def open_engine(settings: Settings | None = None, *, preview_root: Path | None = None) -> AsyncIterator[Engine]:
    """Build everything from ``settings`` (read from the environment when omitted); close it all on exit.

    Inside ``share_engine`` the shared engine is handed out instead (its settings win: one batch, one fleet).
    """
    borrowed = _SHARED.get()
    if borrowed is not None:
        yield borrowed
        return
    settings = settings or Settings.load()
    await asyncio.to_thread(sweep_job_dirs)
    store = await open_store_checked(settings)
    cpu = CpuRunner()
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(cpu.aclose)
        lora_folder = _lora_folder(settings, stack)  # quick: a folder and a sweep of its leases
        shared = lora_folder.root if lora_folder is not None else None
        pool = await stack.enter_async_context(
            open_fleet(settings.workers, preview_root=preview_root, shared_loras=shared)
        )
        yield Engine(settings=settings, store=store, pool=pool, cpu=cpu, lora_folder=lora_folder)


def _lora_folder(settings: Settings, stack: contextlib.AsyncExitStack) -> SharedFolder | None:
    """The shared LoRA folder: the configured one, or a temporary one the embedded preview workers list."""
    character = settings.character
    if character.lora_delivery == "fetch":
        return None
    if character.lora_shared_dir is not None:
        folder = SharedFolder(character.lora_shared_dir, prefix=character.lora_shared_prefix)
    elif settings.workers.embedded:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="reelforge-loras-")))
        folder = SharedFolder(root, prefix=f"{EMBEDDED_SHARED_LORAS}/")
    elif character.lora_delivery == "shared":
        raise DeliveryError(
            "REELFORGE_LORA_DELIVERY=shared needs REELFORGE_LORA_SHARED_DIR (a folder the workers mount)"
        )
    else:
        return None
    folder.sweep()  # files left by runs that crashed
    return folder
