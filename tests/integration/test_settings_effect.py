"""Every documented setting changes what the composition root builds, read from the environment as users set it.

Each test sets one ``REELFORGE_*`` variable, builds through the one composition root (``Settings.load()``,
``reelforge.fleet``, ``reelforge.engine``, ``open_store``) and shows the effect: the built object's behaviour
where it is cheap to provoke (timeouts, tokens, workers, latency), its configuration otherwise. Stage-level
settings (job timeout, CPU timeout, prices, download retries) are shown in tests/flows/test_stage.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from aiohttp import web

from reelforge.comfy import WorkerTimeout
from reelforge.engine import open_engine
from reelforge.fleet import open_fleet, worker_clients
from reelforge.preview.server import PreviewWorker
from reelforge.settings import Settings
from reelforge.storage import LocalStore, StoreError, open_store

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def slow_server() -> AsyncIterator[str]:
    """A server whose /system_stats answers after 1 s and echoes the Authorization header it got."""

    async def stats(request: web.Request) -> web.Response:
        await asyncio.sleep(1.0)
        return web.json_response({"system": {}, "auth": request.headers.get("Authorization")})

    app = web.Application()
    app.router.add_get("/system_stats", stats)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def _stats(settings: Settings) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        (client,) = worker_clients(settings.workers, http)
        return await client.system_stats()


async def test_request_timeout_reaches_the_client(slow_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REELFORGE_COMFY_URLS", slow_server)
    monkeypatch.setenv("REELFORGE_REQUEST_TIMEOUT_S", "0.3")
    begin = time.monotonic()
    with pytest.raises(WorkerTimeout):
        await _stats(Settings.load())
    assert time.monotonic() - begin < 0.9
    monkeypatch.setenv("REELFORGE_REQUEST_TIMEOUT_S", "5")
    assert (await _stats(Settings.load()))["system"] == {}


async def test_comfy_token_is_sent_to_every_worker(slow_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REELFORGE_COMFY_URLS", slow_server)
    assert (await _stats(Settings.load()))["auth"] is None
    monkeypatch.setenv("REELFORGE_COMFY_TOKEN", "s3cret-token")
    assert (await _stats(Settings.load()))["auth"] == "Bearer s3cret-token"


async def test_worker_urls_labels_queue_depth_and_health_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with PreviewWorker(tmp_path / "a") as a, PreviewWorker(tmp_path / "b") as b:
        monkeypatch.setenv("REELFORGE_COMFY_URLS", f"image={a.url},video+audio={b.url}")
        monkeypatch.setenv("REELFORGE_QUEUE_DEPTH", "3")
        monkeypatch.setenv("REELFORGE_HEALTH_INTERVAL_S", "7.5")
        async with open_fleet(Settings.load().workers) as pool:
            status = {s.url: s for s in pool.status()}
            assert sorted(status) == sorted([a.url, b.url])
            assert status[a.url].labels == ["image"] and status[b.url].labels == ["audio", "video"]
            assert all(s.healthy and s.capacity == 4 for s in status.values())
            assert pool.health_interval == 7.5


async def test_preview_workers_and_their_latency(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REELFORGE_COMFY_URLS", raising=False)
    monkeypatch.setenv("REELFORGE_PREVIEW_WORKERS", "3")
    monkeypatch.setenv("REELFORGE_PREVIEW_LATENCY", "fixed:0.4")
    graph = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 7}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "lat"}},
    }
    async with open_fleet(Settings.load().workers) as pool:
        assert len(pool.status()) == 3 and all(s.url.startswith("http://127.0.0.1:") for s in pool.status())
        result = await pool.run(graph, job_id="latency")
        assert result.gpu_seconds >= 0.35


async def test_store_setting_chooses_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REELFORGE_STORE", str(tmp_path / "here"))
    store = open_store(Settings.load().store)
    assert isinstance(store, LocalStore) and store.root == (tmp_path / "here").resolve()


def test_s3_settings_reach_the_client(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REELFORGE_STORE", "s3://bucket-x/some/prefix")
    monkeypatch.setenv("REELFORGE_S3_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("REELFORGE_S3_REGION", "eu-west-3")
    monkeypatch.setenv("REELFORGE_S3_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("REELFORGE_S3_SECRET_ACCESS_KEY", "secret-example")
    monkeypatch.setenv("REELFORGE_PRESIGN_EXPIRY_S", "123")
    store: Any = open_store(Settings.load().store)
    assert (store.bucket, store.prefix) == ("bucket-x", "some/prefix")
    assert store.client.meta.endpoint_url == s3_server and store.client.meta.region_name == "eu-west-3"
    url = store.url("a/b.png")
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Expires"] == ["123"] and query["X-Amz-Credential"][0].startswith("AKIDEXAMPLE/")
    assert "secret-example" not in url


def test_aws_profile_is_used(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("REELFORGE_STORE", "s3://bucket-y")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("REELFORGE_AWS_PROFILE", "studio-media")
    with pytest.raises(StoreError, match="studio-media"):
        open_store(Settings.load().store)


async def test_limits_reach_the_stage_runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.stage import Stage, StageRuntime

    monkeypatch.delenv("REELFORGE_COMFY_URLS", raising=False)
    monkeypatch.setenv("REELFORGE_PREVIEW_WORKERS", "1")
    monkeypatch.setenv("REELFORGE_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("REELFORGE_GLOBAL_LIMITS", "true")
    for kind, value in (("IMAGE", 11), ("VIDEO", 12), ("AUDIO", 13), ("LORA", 14), ("CPU", 15)):
        monkeypatch.setenv(f"REELFORGE_TIMEOUT_{kind}_S", str(value))
    monkeypatch.setenv("REELFORGE_GPU_PRICE_PER_HOUR", "image=1.5,default=0.5")
    async with open_engine() as engine:
        runtime = StageRuntime(engine)
        assert runtime.admission.enabled
        timeouts = {t: runtime.timeout_for(Stage(name="s", version="1", kind="thread", timeout=t)) for t in
                    ("image", "video", "audio", "lora", "cpu")}
        assert timeouts == {"image": 11, "video": 12, "audio": 13, "lora": 14, "cpu": 15}
        assert runtime.limits.price_per_hour(frozenset({"image"})) == 1.5
        assert runtime.limits.price_per_hour(frozenset()) == 0.5
