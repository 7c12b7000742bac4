"""LoRA delivery to preview workers: a shared folder with leases, and a fetch by signed URL checked by sha256."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from aiohttp import web
from safetensors.numpy import save_file

from reelforge.comfy import WorkerPool
from reelforge.delivery import DeliveryError, SharedFolder, WorkerFetch, lora_file_name
from reelforge.hashing import sha256_file
from reelforge.liveness import Holder
from reelforge.modelfetch import FETCH_PATH, make_fetch_handler
from reelforge.preview import PreviewWorker
from reelforge.settings import StoreSettings
from reelforge.storage import open_store


def lora(path: Path, seed: int = 0) -> tuple[Path, str]:
    rng = np.random.default_rng(seed)
    save_file({"lora_unet_x.lora_down.weight": rng.standard_normal((4, 8)).astype(np.float32)}, str(path))
    return path, sha256_file(path)[0]


@pytest.fixture
async def two_workers(tmp_path: Path) -> AsyncIterator[tuple[list[PreviewWorker], WorkerPool, Path]]:
    """Two preview workers that both list one shared folder as ``loras/shared`` (as an NFS mount would be)."""
    shared = tmp_path / "shared"
    shared.mkdir()
    workers = [PreviewWorker(tmp_path / f"w{i}") for i in range(2)]
    for worker in workers:
        await worker.start()
        (worker.root / "models" / "loras").mkdir(parents=True, exist_ok=True)
        (worker.root / "models" / "loras" / "shared").symlink_to(shared, target_is_directory=True)
    pool = WorkerPool.from_urls([w.url for w in workers])
    await pool.start()
    try:
        yield workers, pool, shared
    finally:
        await pool.aclose()
        for worker in workers:
            await worker.stop()


async def listed(pool: WorkerPool) -> list[list[str]]:
    return [await c.models("loras") for c in pool.clients]


async def test_shared_folder_places_atomically_and_removes_after_the_last_user(
    tmp_path: Path, two_workers: tuple[list[PreviewWorker], WorkerPool, Path]
) -> None:
    _, pool, shared = two_workers
    path, sha = lora(tmp_path / "trained.safetensors")
    folder = SharedFolder(shared, prefix="shared/")
    name = f"shared/{lora_file_name(sha)}"
    async with folder.mounted(path, sha, Holder.current(flow_run_id="run-1"), pool=pool) as seen:
        assert seen == name
        assert all(name in names for names in await listed(pool))
        assert sha256_file(shared / lora_file_name(sha))[0] == sha
        async with folder.mounted(path, sha, Holder.current(flow_run_id="run-2"), pool=pool) as again:
            assert again == name
        assert (shared / lora_file_name(sha)).exists(), "run-1 still holds it"
    assert not (shared / lora_file_name(sha)).exists(), "removed when the last user is done"
    assert all(name not in names for names in await listed(pool))
    assert not list(shared.glob(".*.tmp"))


async def test_sweep_removes_files_whose_holders_died(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    path, sha = lora(tmp_path / "x.safetensors")
    folder = SharedFolder(shared)
    name = await asyncio.to_thread(folder.place, path, sha)
    dead = await asyncio.to_thread(
        lambda: int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                                   capture_output=True, text=True, check=True).stdout)
    )
    folder.lease(name, Holder.current().model_copy(update={"pid": dead, "pid_started": None}))
    kept_path, kept_sha = lora(tmp_path / "y.safetensors", seed=1)
    kept = folder.place(kept_path, kept_sha)
    folder.lease(kept, Holder.current())  # this process: alive
    (shared / f".{lora_file_name('0' * 64)}.abc.tmp").write_bytes(b"half")  # a placement killed mid-copy
    assert folder.sweep() == [name]
    assert not (shared / name).exists() and (shared / kept).exists()
    assert not list(shared.glob(".*.tmp"))


async def test_workers_fetch_a_presigned_url_and_check_its_sha256(
    tmp_path: Path, s3_settings: StoreSettings, two_workers: tuple[list[PreviewWorker], WorkerPool, Path]
) -> None:
    workers, pool, _ = two_workers
    store = open_store(s3_settings)
    path, sha = lora(tmp_path / "trained.safetensors", seed=3)
    ref = store.put_file(path, f"loras/mina/v1/{sha[:16]}.safetensors", kind="lora")
    fetch = WorkerFetch(store.url(ref.key), size=ref.size)
    assert "X-Amz" not in repr(fetch), "the signed URL is never shown"
    async with fetch.mounted(path, sha, Holder.current(), pool=pool) as name:
        assert name == lora_file_name(sha)
        for worker in workers:
            assert sha256_file(worker.root / "models" / "loras" / name)[0] == sha
        assert all(name in names for names in await listed(pool))
    # Wrong digest: every worker refuses it, nothing is placed.
    other, other_sha = lora(tmp_path / "other.safetensors", seed=4)
    bad = WorkerFetch(store.url(ref.key), size=ref.size)
    with pytest.raises(DeliveryError, match="422"):
        async with bad.mounted(other, other_sha, Holder.current(), pool=pool):
            pass
    assert not any((w.root / "models" / "loras" / lora_file_name(other_sha)).exists() for w in workers)


@pytest.fixture
async def fetcher(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    """The sidecar's handler alone, with a token, and a file server it can fetch from."""
    blob = tmp_path / "blob.safetensors"
    lora(blob, seed=5)

    async def serve(_: web.Request) -> web.StreamResponse:
        return web.FileResponse(blob)

    app = web.Application()
    app.router.add_post(FETCH_PATH, make_fetch_handler(tmp_path / "models", token="t0ken"))
    app.router.add_get("/blob", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", blob
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("change", "token", "status"),
    [
        ({}, "t0ken", 200),
        ({}, "wrong", 401),
        ({"name": "../escape.safetensors"}, "t0ken", 400),
        ({"folder": "checkpoints"}, "t0ken", 400),
        ({"size": 7}, "t0ken", 422),
        ({"url": "/blob-missing"}, "t0ken", 502),
    ],
)
async def test_the_fetcher_checks_token_name_size_and_source(
    fetcher: tuple[str, Path], change: dict[str, Any], token: str, status: int
) -> None:
    base, blob = fetcher
    body: dict[str, Any] = {
        "folder": "loras", "name": "rf-x.safetensors", "url": f"{base}/blob",
        "sha256": sha256_file(blob)[0], "size": blob.stat().st_size,
    }
    body |= {k: (f"{base}{v}" if k == "url" else v) for k, v in change.items()}
    async with httpx.AsyncClient() as http:
        resp = await http.post(f"{base}{FETCH_PATH}", json=body, headers={"Authorization": f"Bearer {token}"})
        assert resp.status_code == status, resp.text
        if status == 200:
            assert resp.json()["status"] == "fetched"
            again = await http.post(f"{base}{FETCH_PATH}", json=body, headers={"Authorization": f"Bearer {token}"})
            assert again.json()["status"] == "present"
        else:
            assert "error" in resp.json() or status == 401
