"""Getting a model file (a trained LoRA) onto the workers that need it: never by hand.

Two modes, one interface (``Delivery.mounted``: an async context manager that yields the name workers list the
file under, in the ``loras`` folder, and holds it there while the caller uses it):

* ``SharedFolder``: a folder every worker mounts (NFS, a volume) and lists as a LoRA path, e.g. through
  ComfyUI's ``extra_model_paths.yaml`` (``reelforge: {loras: /mnt/shared/reelforge-loras}``). The file is placed
  atomically (temp file in the same folder, fsync, rename) under its content-hash name, so a worker never lists
  a half-written file and two runs placing the same LoRA agree. Each user holds a lease file
  (``.leases/<name>/<holder id>.json``, a ``reelforge.liveness.Holder``); leaving ``mounted`` drops the lease and
  removes the file when no lease is left. ``sweep()`` (run at start-up) drops leases whose holder is gone (a
  crash) and removes files nobody holds.
* ``WorkerFetch``: each worker fetches the file itself from a URL the store signs (S3 presigned GET), through the
  model fetcher endpoint (``POST /reelforge/models/fetch``, see ``reelforge.modelfetch``), which checks size and
  sha256 before it renames the file into ``models/loras``. Needs a store that can sign URLs the workers reach.

After placing, ``wait_listed`` polls each worker's ``GET /models/loras`` until the name appears (ComfyUI
rescans a folder when its mtime changes) and refreshes the pool's view, so routing sends the job only to
workers that list the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Protocol

from reelforge.comfy import ComfyClient, ComfyError, WorkerPool
from reelforge.hashing import sha256_file
from reelforge.liveness import Holder
from reelforge.modelfetch import FETCH_PATH

__all__ = ["Delivery", "DeliveryError", "SharedFolder", "WorkerFetch", "lora_file_name", "wait_listed"]

log = logging.getLogger(__name__)

LEASES = ".leases"


class DeliveryError(Exception):
    """A model file could not be put where the workers see it; names the file and the worker."""

    def __init__(self, message: str, *, name: str | None = None, worker: str | None = None) -> None:
        self.name = name
        self.worker = worker
        where = ", ".join(x for x in (f"file {name}" if name else "", f"worker {worker}" if worker else "") if x)
        super().__init__(f"{message} ({where})" if where else message)


def lora_file_name(sha256: str) -> str:
    """The content-hash name a delivered LoRA gets: ``rf-<sha256[:16]>.safetensors``."""
    return f"rf-{sha256[:16]}.safetensors"


class Delivery(Protocol):
    """How a file reaches the workers; ``mounted`` yields the name under which they list it."""

    def mounted(
        self, path: Path, sha256: str, holder: Holder, *, pool: WorkerPool, folder: str = "loras"
    ) -> contextlib.AbstractAsyncContextManager[str]: ...


async def wait_listed(
    pool: WorkerPool, name: str, *, folder: str = "loras", timeout_s: float = 30.0, workers: Sequence[str] = ()
) -> list[str]:
    """Wait until the healthy workers (or ``workers``) list ``name`` in ``folder``; returns those that do.

    Raises ``DeliveryError`` when none does within ``timeout_s``; refreshes the pool's model lists so routing
    knows which workers have it.
    """
    wanted = list(workers) or [w.name for w in pool.status() if w.healthy]
    deadline = time.monotonic() + timeout_s
    seen: list[str] = []
    delay = 0.05
    while True:
        seen = []
        for worker in wanted:
            with contextlib.suppress(ComfyError):
                if name in await pool.client_for(worker).models(folder):
                    seen.append(worker)
        if len(seen) == len(wanted) or (seen and time.monotonic() >= deadline):
            break
        if time.monotonic() >= deadline:
            raise DeliveryError(f"no worker lists {folder}/{name} after {timeout_s:g} s", name=name)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)
    await pool.refresh()
    return seen


# ---------------------------------------------------------------------------------------------- shared folder


class SharedFolder:
    """Mode (a): a folder all workers mount; ``prefix`` is how they list it inside ``loras`` ("" or "sub/")."""

    def __init__(self, root: Path, *, prefix: str = "", lease_max_age_s: float | None = 24 * 3600.0) -> None:
        self.root = Path(root)
        self.prefix = prefix
        self.lease_max_age_s = lease_max_age_s

    def __repr__(self) -> str:
        return f"SharedFolder({str(self.root)!r}, prefix={self.prefix!r})"

    # -- files and leases (blocking; called through asyncio.to_thread) -------------------------------------

    def place(self, path: Path, sha256: str) -> str:
        """Put the file under its content-hash name (atomically; kept if already there); returns the file name."""
        name = lora_file_name(sha256)
        target = self.root / name
        self.root.mkdir(parents=True, exist_ok=True)
        if target.is_file() and sha256_file(target)[0] == sha256:
            return name
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out, open(path, "rb") as source:
                while chunk := source.read(1 << 20):
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if sha256_file(tmp)[0] != sha256:
                raise DeliveryError(f"{path} does not have the sha256 it was delivered with", name=name)
            os.replace(tmp, target)  # a worker lists the name only once the bytes are complete
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return name

    def _lease_dir(self, name: str) -> Path:
        return self.root / LEASES / name

    def lease(self, name: str, holder: Holder) -> Path:
        folder = self._lease_dir(name)
        folder.mkdir(parents=True, exist_ok=True)
        lease = folder / f"{holder.pid}-{uuid.uuid4().hex[:8]}.json"
        lease.write_text(holder.model_dump_json(), encoding="utf-8")
        return lease

    def release(self, name: str, lease: Path) -> bool:
        """Drop one lease; remove the file when no live lease is left. True when the file was removed."""
        with contextlib.suppress(FileNotFoundError):
            lease.unlink()
        return self._remove_if_unheld(name)

    def _live_leases(self, name: str) -> list[Path]:
        live = []
        for lease in sorted(self._lease_dir(name).glob("*.json")):
            try:
                holder = Holder.model_validate_json(lease.read_bytes())
            except (OSError, ValueError):
                holder = None
            if holder is None or holder.gone(self.lease_max_age_s):
                with contextlib.suppress(FileNotFoundError):
                    lease.unlink()
                continue
            live.append(lease)
        return live

    def _remove_if_unheld(self, name: str) -> bool:
        if self._live_leases(name):
            return False
        with contextlib.suppress(FileNotFoundError):
            (self.root / name).unlink()
        with contextlib.suppress(OSError):
            self._lease_dir(name).rmdir()
        return True

    def sweep(self) -> list[str]:
        """At start-up: drop leases of holders that are gone; remove delivered files that nobody holds."""
        if not self.root.is_dir():
            return []
        removed = []
        for path in sorted(self.root.glob("rf-*.safetensors")):
            if self._remove_if_unheld(path.name):
                removed.append(path.name)
        for stale in self.root.glob(".rf-*.tmp"):  # a placement killed mid-copy
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
        if removed:
            log.info("shared LoRA folder %s: removed %d file(s) nobody holds", self.root, len(removed))
        return removed

    # -- the interface -------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def mounted(
        self, path: Path, sha256: str, holder: Holder, *, pool: WorkerPool, folder: str = "loras"
    ) -> AsyncIterator[str]:
        name = await asyncio.to_thread(self.place, path, sha256)
        lease = await asyncio.to_thread(self.lease, name, holder)
        try:
            listed = f"{self.prefix}{name}"
            await wait_listed(pool, listed, folder=folder)
            yield listed
        finally:
            await asyncio.to_thread(self.release, name, lease)


# ---------------------------------------------------------------------------------------------- worker fetch


class WorkerFetch:
    """Mode (b): every healthy worker fetches the file from a signed URL (``url``) and checks its sha256."""

    def __init__(self, url: str, *, size: int, timeout_s: float = 600.0) -> None:
        self.url = url
        self.size = size
        self.timeout_s = timeout_s

    def __repr__(self) -> str:  # the URL is signed: never shown
        return f"WorkerFetch(size={self.size})"

    @contextlib.asynccontextmanager
    async def mounted(
        self, path: Path, sha256: str, holder: Holder, *, pool: WorkerPool, folder: str = "loras"
    ) -> AsyncIterator[str]:
        name = lora_file_name(sha256)
        workers = [w.name for w in pool.status() if w.healthy]
        results = await asyncio.gather(
            *(self._fetch(pool.client_for(w), folder, name, sha256) for w in workers), return_exceptions=True
        )
        fetched = [w for w, r in zip(workers, results, strict=True) if not isinstance(r, BaseException)]
        if not fetched:
            first = next(r for r in results if isinstance(r, BaseException))
            raise DeliveryError(f"no worker could fetch the file: {first}", name=name) from first
        for worker, result in zip(workers, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("worker %s could not fetch %s: %s", worker, name, result)
        await wait_listed(pool, name, folder=folder, workers=fetched)
        yield name  # content-named files stay in the worker's cache: the next run of this LoRA needs no fetch

    async def _fetch(self, client: ComfyClient, folder: str, name: str, sha256: str) -> None:
        body = {"folder": folder, "name": name, "url": self.url, "sha256": sha256, "size": self.size}
        try:
            answer = await client.post_extension(FETCH_PATH, body, timeout=self.timeout_s)
        except ComfyError as err:
            failed = f"the model fetcher refused or failed: {err.message}"
            raise DeliveryError(failed, name=name, worker=client.name) from err
        if not isinstance(answer, dict) or answer.get("sha256") != sha256:
            raise DeliveryError(f"the model fetcher answered {str(answer)[:200]}", name=name, worker=client.name)
