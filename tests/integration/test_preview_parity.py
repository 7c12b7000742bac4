"""Details where the preview worker follows ComfyUI 0.3.64 beyond the captured payloads (docs/preview-worker.md).

Embedded ``is_changed``, which nodes report ``progress``, and the order of ``executed`` on an interrupt.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from helpers import get_json, post_prompt
from PIL import Image

from reelforge.hashing import sha256_file
from reelforge.media.ffmpeg import run_ffmpeg
from reelforge.preview.server import PreviewWorker

Json = dict[str, Any]


async def frames_until_done(ws: aiohttp.ClientWebSocketResponse, prompt_id: str, within: float = 20) -> list[Json]:
    """JSON frames up to and including ``executing {node: null, prompt_id}``."""
    frames: list[Json] = []
    deadline = time.monotonic() + within
    while True:
        msg = await ws.receive(timeout=max(0.01, deadline - time.monotonic()))
        if msg.type != aiohttp.WSMsgType.TEXT:
            continue
        frame = json.loads(msg.data)
        frames.append(frame)
        data = frame["data"]
        if frame["type"] == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
            return frames


async def run(
    http: aiohttp.ClientSession, worker: PreviewWorker, graph: Json, client_id: str
) -> tuple[str, list[Json]]:
    """Submit ``graph`` as ``client_id`` and return its prompt id and every frame that client received."""
    ws = await http.ws_connect(f"{worker.url}/ws?clientId={client_id}")
    try:
        await ws.receive_json()  # the greeting status
        status, body = await post_prompt(http, worker.url, {"prompt": graph, "client_id": client_id})
        assert status == 200 and body["node_errors"] == {}, body
        frames = await frames_until_done(ws, body["prompt_id"])
    finally:
        await ws.close()
    return body["prompt_id"], frames


def container_tags(path: Path) -> dict[str, str]:
    """Every container tag in full (``ffmpeg -i`` abbreviates long ones): ffmpeg's ffmetadata dump, unescaped."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "tags.txt"
        run_ffmpeg(["-y", "-i", str(path), "-f", "ffmetadata", str(out)])
        lines = out.read_text(encoding="utf-8").splitlines()[1:]  # the first is ";FFMETADATA1"
    tags: dict[str, str] = {}
    for line in lines:
        key, _, value = line.partition("=")
        tags[key.lower()] = re.sub(r"\\(.)", r"\1", value)  # ffmetadata escapes = ; # \ with a backslash
    return tags


def write_wav(path: Path, seconds: float = 0.25, rate: int = 16000) -> None:
    t = np.arange(int(seconds * rate)) / rate
    samples = (0.3 * np.sin(2 * np.pi * 220 * t) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())


LOADERS_GRAPH: Json = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "face.png"}, "_meta": {"title": "Face"}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "meta"}},
    "3": {"class_type": "LoadAudio", "inputs": {"audio": "voice.wav"}},
    "4": {"class_type": "SaveAudio", "inputs": {"audio": ["3", 0], "filename_prefix": "audio/meta"}},
}


async def test_saved_files_embed_is_changed_of_file_loaders_but_history_does_not(
    preview_worker: PreviewWorker, http: aiohttp.ClientSession
) -> None:
    worker = preview_worker
    face, voice = worker.dirs.input / "face.png", worker.dirs.input / "voice.wav"
    Image.new("RGB", (8, 8), (10, 20, 30)).save(face)
    write_wav(voice)
    prompt_id, _ = await run(http, worker, LOADERS_GRAPH, "meta")
    entry = (await get_json(http, f"{worker.url}/history/{prompt_id}"))[prompt_id]

    with Image.open(worker.dirs.output / "meta_00001_.png") as png:
        in_png = json.loads(png.info["prompt"])
    in_flac = json.loads(container_tags(worker.dirs.output / "audio" / "meta_00001_.flac")["prompt"])
    expected = json.loads(json.dumps(LOADERS_GRAPH))
    expected["1"]["is_changed"] = [sha256_file(face)[0]]  # appended after the node's own keys
    expected["3"]["is_changed"] = [sha256_file(voice)[0]]
    for embedded in (in_png, in_flac):
        assert embedded == expected
        assert list(embedded["1"]) == ["class_type", "inputs", "_meta", "is_changed"]
    assert entry["prompt"][2] == LOADERS_GRAPH  # history: the graph as queued, without is_changed

    # ComfyUI takes an is_changed that arrives with the prompt as it is: resubmitting the embedded prompt
    # after the file changed hits the cache (stale hash); the plain graph runs again.
    Image.new("RGB", (8, 8), (200, 0, 0)).save(face)
    again_id, _ = await run(http, worker, in_png, "meta")
    again = (await get_json(http, f"{worker.url}/history/{again_id}"))[again_id]
    cached = dict(again["status"]["messages"])["execution_cached"]["nodes"]
    assert sorted(cached) == ["1", "2", "3", "4"]
    assert again["outputs"]["2"]["images"][0]["filename"] == "meta_00001_.png"
    fresh_id, _ = await run(http, worker, LOADERS_GRAPH, "meta")
    fresh = (await get_json(http, f"{worker.url}/history/{fresh_id}"))[fresh_id]
    assert fresh["outputs"]["2"]["images"][0]["filename"] == "meta_00002_.png"
    with Image.open(worker.dirs.output / "meta_00002_.png") as png:
        assert json.loads(png.info["prompt"])["1"]["is_changed"] == [sha256_file(face)[0]]


async def test_progress_comes_from_upscale_tiles_not_from_save_nodes(
    preview_worker: PreviewWorker, http: aiohttp.ClientSession
) -> None:
    graph: Json = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 520, "height": 64, "batch_size": 2, "color": 0}},
        "2": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "RealESRGAN_x4plus.pth"}},
        "3": {"class_type": "ImageUpscaleWithModel", "inputs": {"upscale_model": ["2", 0], "image": ["1", 0]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "tiles"}},
        "5": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 3, "color": 0}},
        "6": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "batch"}},
    }
    _, frames = await run(http, preview_worker, graph, "progress")
    progress = [(f["data"]["node"], f["data"]["value"], f["data"]["max"]) for f in frames if f["type"] == "progress"]
    # 520 px wide: two 512-px tiles (overlap 32) per image, two images; nothing from either SaveImage.
    assert progress == [("3", 1, 4), ("3", 2, 4), ("3", 3, 4), ("3", 4, 4)]
    assert len(list(preview_worker.dirs.output.glob("batch_*.png"))) == 3


async def test_interrupted_executed_list_is_not_the_execution_order(
    make_worker: Any, http: aiohttp.ClientSession
) -> None:
    worker: PreviewWorker = await make_worker(latency="fixed:2.4")  # 0.3 s per node of an 8-node chain
    graph: Json = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}}}
    for i in range(2, 8):
        graph[str(i)] = {"class_type": "ImageInvert", "inputs": {"image": [str(i - 1), 0]}}
    graph["8"] = {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": "order"}}
    ws = await http.ws_connect(f"{worker.url}/ws?clientId=order")
    await ws.receive_json()
    status, body = await post_prompt(http, worker.url, {"prompt": graph, "client_id": "order"})
    assert status == 200
    frames: list[Json] = []
    while not any(f["type"] == "executing" and f["data"].get("node") == "5" for f in frames):
        frames.append(await ws.receive_json(timeout=10))
    async with http.post(worker.url + "/interrupt", json={}) as r:
        assert r.status == 200
    frames += await frames_until_done(ws, body["prompt_id"])
    await ws.close()
    executing = [f["data"]["node"] for f in frames if f["type"] == "executing" and f["data"].get("node")]
    (interrupted,) = [f["data"] for f in frames if f["type"] == "execution_interrupted"]
    ran = executing[: executing.index(interrupted["node_id"])]
    assert len(ran) >= 4 and sorted(interrupted["executed"]) == sorted(ran)
    assert interrupted["executed"] != ran  # ComfyUI lists a set: clients must not rely on the order
    entry = (await get_json(http, f"{worker.url}/history/{body['prompt_id']}"))[body["prompt_id"]]
    assert dict(entry["status"]["messages"])["execution_interrupted"]["executed"] == interrupted["executed"]
