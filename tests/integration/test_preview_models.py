"""Model-based graphs on a real preview worker: SDXL text-to-image, LoRA training and reuse, missing models."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from io import BytesIO
from typing import Any

import aiohttp
import numpy as np
from helpers import get_json, post_prompt
from PIL import Image
from safetensors.numpy import load_file

from reelforge.preview.server import PreviewWorker
from reelforge.templates.lock import ComfyLock, ComfyUIPin, ModelFile

Json = dict[str, Any]
MakeWorker = Callable[..., Awaitable[PreviewWorker]]  # the ``make_worker`` fixture of conftest.py
SDXL = "sd_xl_base_1.0.safetensors"

LOCK = ComfyLock(
    comfyui=ComfyUIPin(repo="https://github.com/comfyanonymous/ComfyUI", commit="a125cd84", version="0.3.64"),
    models=[
        ModelFile(folder="checkpoints", name=SDXL, url="https://example.invalid/sdxl"),
        ModelFile(folder="loras", name="style_ink.safetensors", url="https://example.invalid/ink"),
        ModelFile(folder="upscale_models", name="4x-UltraSharp.pth", url="https://example.invalid/up"),
    ],
)




async def frames_until_done(ws: aiohttp.ClientWebSocketResponse, prompt_id: str, within: float = 30) -> list[Json]:
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


def sdxl_graph(prompt: str, *, lora: str | None = None, seed: int = 42, steps: int = 6, prefix: str = "t2i") -> Json:
    model: list[Any] = ["1", 0]
    clip: list[Any] = ["1", 1]
    graph: Json = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": SDXL},
              "_meta": {"title": "Load Checkpoint"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": prompt, "clip": clip},
              "_meta": {"title": "Positive Prompt"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry, lowres", "clip": clip},
              "_meta": {"title": "Negative Prompt"}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 384, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {
            "seed": seed, "steps": steps, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal",
            "denoise": 1.0, "model": model, "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0]}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"filename_prefix": prefix, "images": ["6", 0]}},
    }
    if lora is not None:
        graph["8"] = {"class_type": "LoraLoader", "inputs": {
            "model": ["1", 0], "clip": ["1", 1], "lora_name": lora, "strength_model": 0.9, "strength_clip": 1.0}}
        graph["2"]["inputs"]["clip"] = graph["3"]["inputs"]["clip"] = ["8", 1]
        graph["5"]["inputs"]["model"] = ["8", 0]
    return graph


def train_graph(folder: str, steps: int = 12) -> Json:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": SDXL}},
        "2": {"class_type": "LoadImageTextSetFromFolderNode", "inputs": {
            "folder": folder, "clip": ["1", 1], "resize_method": "Stretch", "width": 64, "height": 64}},
        "3": {"class_type": "VAEEncode", "inputs": {"pixels": ["2", 0], "vae": ["1", 2]}},
        "4": {"class_type": "TrainLoraNode", "inputs": {
            "model": ["1", 0], "latents": ["3", 0], "positive": ["2", 1], "batch_size": 1,
            "grad_accumulation_steps": 1, "steps": steps, "learning_rate": 0.0005, "rank": 4, "optimizer": "AdamW",
            "loss_function": "MSE", "seed": 3, "training_dtype": "bf16", "lora_dtype": "bf16", "algorithm": "LoRA",
            "gradient_checkpointing": True, "existing_lora": "[None]"}},
        "5": {"class_type": "SaveLoRANode", "inputs": {
            "lora": ["4", 1], "prefix": "loras/ComfyUI_trained_lora", "steps": ["4", 3]}},
    }


async def run_graph(
    http: aiohttp.ClientSession, worker: PreviewWorker, graph: Json, client: str
) -> tuple[str, list[Json]]:
    ws = await http.ws_connect(f"{worker.url}/ws?clientId={client}")
    try:
        await ws.receive_json()  # status
        status, body = await post_prompt(http, worker.url, {"prompt": graph, "client_id": client})
        assert status == 200, body
        return body["prompt_id"], await frames_until_done(ws, body["prompt_id"])
    finally:
        await ws.close()


async def view_image(http: aiohttp.ClientSession, url: str, entry: Json) -> np.ndarray:
    params = {"filename": entry["filename"], "subfolder": entry["subfolder"], "type": entry["type"]}
    async with http.get(url + "/view", params=params) as r:
        assert r.status == 200
        data = await r.read()
    with Image.open(BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


async def test_sdxl_text_to_image_graph_with_progress(make_worker: MakeWorker, http: aiohttp.ClientSession) -> None:
    worker = await make_worker(lock=LOCK)
    info = await get_json(http, worker.url + "/object_info/CheckpointLoaderSimple")
    assert info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] == [SDXL]
    assert await get_json(http, worker.url + "/models/checkpoints") == [SDXL]

    prompt_id, frames = await run_graph(http, worker, sdxl_graph("a lighthouse on a cliff at dusk"), "sdxl")
    assert not [f for f in frames if f["type"] == "execution_error"], frames
    progress = [f["data"] for f in frames if f["type"] == "progress"]
    assert [(p["value"], p["max"], p["node"]) for p in progress] == [(float(v), 6.0, "5") for v in range(1, 7)]
    executed = [f["data"] for f in frames if f["type"] == "executed"]
    assert [e["node"] for e in executed] == ["7"]
    history = await get_json(http, f"{worker.url}/history/{prompt_id}")
    (entry,) = history[prompt_id]["outputs"]["7"]["images"]
    pixels = await view_image(http, worker.url, entry)
    assert pixels.shape == (384, 512, 3)

    # Same graph, other prompt: another picture; the same graph again is fully cached.
    _, frames2 = await run_graph(http, worker, sdxl_graph("a submarine under ice", prefix="t2i_b"), "sdxl")
    (entry2,) = next(f["data"] for f in frames2 if f["type"] == "executed")["output"]["images"]
    assert not np.array_equal(pixels, await view_image(http, worker.url, entry2))
    # With a lock-listed LoRA.
    _, frames3 = await run_graph(http, worker, sdxl_graph("a lighthouse", lora="style_ink.safetensors"), "sdxl")
    assert any(f["type"] == "execution_success" for f in frames3)


async def test_trained_lora_is_listed_and_loadable(make_worker: MakeWorker, http: aiohttp.ClientSession) -> None:
    worker = await make_worker(lock=LOCK)
    folder = worker.dirs.input / "faces"
    folder.mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (64, 64), (60 * i, 120, 200)).save(folder / f"face_{i}.png")
        (folder / f"face_{i}.txt").write_text(f"photo of sks person, angle {i}", encoding="utf-8")
    info = await get_json(http, worker.url + "/object_info/LoadImageTextSetFromFolderNode")
    assert info["LoadImageTextSetFromFolderNode"]["input"]["required"]["folder"][0] == ["faces"]

    prompt_id, frames = await run_graph(http, worker, train_graph("faces"), "train")
    assert any(f["type"] == "execution_success" for f in frames), frames
    assert not [f for f in frames if f["type"] == "executed"]  # SaveLoRANode reports no UI
    history = await get_json(http, f"{worker.url}/history/{prompt_id}")
    assert history[prompt_id]["outputs"] == {}
    name = "ComfyUI_trained_lora_12_steps_00001_.safetensors"
    tensors = load_file(str(worker.dirs.output / "loras" / name))
    assert any(k.endswith("lora_down.weight") and v.shape[0] == 4 for k, v in tensors.items())

    assert name in await get_json(http, worker.url + "/models/loras")
    lora_info = await get_json(http, worker.url + "/object_info/LoraLoader")
    assert name in lora_info["LoraLoader"]["input"]["required"]["lora_name"][0]
    _, frames = await run_graph(http, worker, sdxl_graph("sks person portrait", lora=name), "train")
    assert any(f["type"] == "execution_success" for f in frames), frames


async def test_missing_model_is_refused(make_worker: MakeWorker, http: aiohttp.ClientSession) -> None:
    worker = await make_worker(lock=LOCK, missing_models=[f"checkpoints/{SDXL}"])
    assert await get_json(http, worker.url + "/models/checkpoints") == []
    status, body = await post_prompt(http, worker.url, {"prompt": sdxl_graph("anything")})
    assert status == 400
    errors = body["node_errors"]["1"]["errors"]
    assert errors[0]["type"] == "value_not_in_list" and errors[0]["extra_info"]["input_name"] == "ckpt_name"
    # Another worker with the full lock accepts the same graph.
    other = await make_worker(lock=LOCK)
    status, body = await post_prompt(http, other.url, {"prompt": sdxl_graph("anything")})
    assert status == 200, body


async def test_default_lock_worker_starts(http: aiohttp.ClientSession, make_worker: MakeWorker) -> None:
    """Without ``lock=`` the checkout's lock is used (possibly empty); /models still answers."""
    worker = await make_worker()
    folders = await get_json(http, worker.url + "/models")
    assert folders[:3] == ["checkpoints", "configs", "loras"]
    assert isinstance(await get_json(http, worker.url + "/models/checkpoints"), list)
