"""Graphs of the main model families, written as a studio exports them from ComfyUI, validate against the real
0.3.64 catalogue and run on the preview worker: Flux with the custom-sampler chain, SD 3.5 with
TripleCLIPLoader, SDXL with ControlNet, Wan 2.1 image-to-video, Stable Audio; plus the output nodes of those
families (animated WebP/PNG, WEBM, MP3/Opus, latents, websocket previews) and list mapping."""

from __future__ import annotations

import json
import struct
import time
from io import BytesIO
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from helpers import get_json, post_prompt
from PIL import Image

from reelforge.comfy.schema import validate_graph
from reelforge.media.probe import probe
from reelforge.preview.server import PreviewWorker
from reelforge.templates.catalogue import core_catalogue
from reelforge.templates.lock import ComfyLock, ComfyUIPin, ModelFile

Json = dict[str, Any]
pytestmark = pytest.mark.timeout(120)

MODELS: dict[str, list[str]] = {
    "diffusion_models": ["flux1-dev.safetensors", "wan2.1_i2v_480p_14B_fp16.safetensors"],
    "checkpoints": ["sd3.5_large.safetensors", "sd_xl_base_1.0.safetensors", "stable_audio_open_1.0.safetensors"],
    "text_encoders": [
        "clip_l.safetensors", "clip_g.safetensors", "t5xxl_fp16.safetensors",
        "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "t5_base.safetensors",
    ],
    "vae": ["ae.safetensors", "wan_2.1_vae.safetensors"],
    "controlnet": ["controlnet-canny-sdxl-1.0.safetensors"],
    "clip_vision": ["clip_vision_h.safetensors"],
}
LOCK = ComfyLock(
    comfyui=ComfyUIPin(repo="https://github.com/comfyanonymous/ComfyUI", commit="a125cd84", version="0.3.64"),
    models=[
        ModelFile(folder=folder, name=name, url=f"https://example.invalid/{name}")
        for folder, names in MODELS.items()
        for name in names
    ],
)
NEGATIVE = "blurry, lowres"


def flux_graph(prompt: str, seed: int = 42) -> Json:
    """Flux.1-dev with the custom-sampler chain, as ComfyUI's own Flux example builds it."""
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "flux1-dev.safetensors", "weight_dtype": "default"}},
        "2": {"class_type": "DualCLIPLoader", "inputs": {
            "clip_name1": "clip_l.safetensors", "clip_name2": "t5xxl_fp16.safetensors", "type": "flux"}},
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": prompt, "clip": ["2", 0]}},
        "5": {"class_type": "FluxGuidance", "inputs": {"guidance": 3.5, "conditioning": ["4", 0]}},
        "6": {"class_type": "ModelSamplingFlux", "inputs": {
            "model": ["1", 0], "max_shift": 1.15, "base_shift": 0.5, "width": 256, "height": 192}},
        "7": {"class_type": "BasicGuider", "inputs": {"model": ["6", 0], "conditioning": ["5", 0]}},
        "8": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "9": {"class_type": "BasicScheduler", "inputs": {
            "model": ["6", 0], "scheduler": "simple", "steps": 4, "denoise": 1.0}},
        "10": {"class_type": "RandomNoise", "inputs": {"noise_seed": seed}},
        "11": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 256, "height": 192, "batch_size": 2}},
        "12": {"class_type": "SamplerCustomAdvanced", "inputs": {
            "noise": ["10", 0], "guider": ["7", 0], "sampler": ["8", 0], "sigmas": ["9", 0],
            "latent_image": ["11", 0]}},
        "13": {"class_type": "VAEDecode", "inputs": {"samples": ["12", 0], "vae": ["3", 0]}},
        "14": {"class_type": "SaveImage", "inputs": {"filename_prefix": "flux", "images": ["13", 0]}},
    }


def sd35_graph(prompt: str) -> Json:
    """SD 3.5 Large: checkpoint without text encoders, the three encoders through TripleCLIPLoader."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd3.5_large.safetensors"}},
        "2": {"class_type": "TripleCLIPLoader", "inputs": {
            "clip_name1": "clip_g.safetensors", "clip_name2": "clip_l.safetensors",
            "clip_name3": "t5xxl_fp16.safetensors"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": prompt, "clip": ["2", 0]}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": NEGATIVE, "clip": ["2", 0]}},
        "5": {"class_type": "ModelSamplingSD3", "inputs": {"model": ["1", 0], "shift": 3.0}},
        "6": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 320, "height": 256, "batch_size": 1}},
        "7": {"class_type": "KSampler", "inputs": {
            "seed": 7, "steps": 3, "cfg": 4.5, "sampler_name": "dpmpp_2m", "scheduler": "sgm_uniform",
            "denoise": 1.0, "model": ["5", 0], "positive": ["3", 0], "negative": ["4", 0], "latent_image": ["6", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": ["1", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "sd35", "images": ["8", 0]}},
        "10": {"class_type": "SaveLatent", "inputs": {"filename_prefix": "latents/sd35", "samples": ["7", 0]}},
    }


def sdxl_controlnet_graph(prompt: str, hint: str) -> Json:
    """SDXL with a Canny ControlNet on an uploaded picture; the hint is saved too."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd_xl_base_1.0.safetensors"}},
        "2": {"class_type": "CLIPTextEncodeSDXL", "inputs": {
            "clip": ["1", 1], "width": 1024, "height": 1024, "crop_w": 0, "crop_h": 0, "target_width": 1024,
            "target_height": 1024, "text_g": prompt, "text_l": prompt}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": NEGATIVE, "clip": ["1", 1]}},
        "4": {"class_type": "LoadImage", "inputs": {"image": hint}},
        "5": {"class_type": "Canny", "inputs": {"image": ["4", 0], "low_threshold": 0.4, "high_threshold": 0.8}},
        "6": {"class_type": "ControlNetLoader", "inputs": {
            "control_net_name": "controlnet-canny-sdxl-1.0.safetensors"}},
        "7": {"class_type": "ControlNetApplyAdvanced", "inputs": {
            "positive": ["2", 0], "negative": ["3", 0], "control_net": ["6", 0], "image": ["5", 0],
            "strength": 0.8, "start_percent": 0.0, "end_percent": 1.0}},
        "8": {"class_type": "EmptyLatentImage", "inputs": {"width": 384, "height": 256, "batch_size": 1}},
        "9": {"class_type": "KSampler", "inputs": {
            "seed": 3, "steps": 3, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
            "model": ["1", 0], "positive": ["7", 0], "negative": ["7", 1], "latent_image": ["8", 0]}},
        "10": {"class_type": "VAEDecode", "inputs": {"samples": ["9", 0], "vae": ["1", 2]}},
        "11": {"class_type": "SaveImage", "inputs": {"filename_prefix": "sdxl_cn", "images": ["10", 0]}},
        "12": {"class_type": "SaveImage", "inputs": {"filename_prefix": "hint", "images": ["5", 0]}},
    }


def wan_graph(prompt: str, start: str, length: int = 17) -> Json:
    """Wan 2.1 image-to-video (WanImageToVideo + CLIP vision), saved as mp4, animated WebP and WEBM."""
    return {
        "1": {"class_type": "UNETLoader", "inputs": {
            "unet_name": "wan2.1_i2v_480p_14B_fp16.safetensors", "weight_dtype": "default"}},
        "2": {"class_type": "CLIPLoader", "inputs": {
            "clip_name": "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "type": "wan"}},
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": "wan_2.1_vae.safetensors"}},
        "4": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": "clip_vision_h.safetensors"}},
        "5": {"class_type": "LoadImage", "inputs": {"image": start}},
        "6": {"class_type": "CLIPVisionEncode", "inputs": {"clip_vision": ["4", 0], "image": ["5", 0], "crop": "none"}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": prompt, "clip": ["2", 0]}},
        "8": {"class_type": "CLIPTextEncode", "inputs": {"text": NEGATIVE, "clip": ["2", 0]}},
        "9": {"class_type": "WanImageToVideo", "inputs": {
            "positive": ["7", 0], "negative": ["8", 0], "vae": ["3", 0], "width": 160, "height": 96,
            "length": length, "batch_size": 1, "clip_vision_output": ["6", 0], "start_image": ["5", 0]}},
        "10": {"class_type": "ModelSamplingSD3", "inputs": {"model": ["1", 0], "shift": 8.0}},
        "11": {"class_type": "KSampler", "inputs": {
            "seed": 11, "steps": 3, "cfg": 6.0, "sampler_name": "uni_pc", "scheduler": "simple", "denoise": 1.0,
            "model": ["10", 0], "positive": ["9", 0], "negative": ["9", 1], "latent_image": ["9", 2]}},
        "12": {"class_type": "VAEDecode", "inputs": {"samples": ["11", 0], "vae": ["3", 0]}},
        "13": {"class_type": "CreateVideo", "inputs": {"images": ["12", 0], "fps": 16.0}},
        "14": {"class_type": "SaveVideo", "inputs": {
            "video": ["13", 0], "filename_prefix": "video/wan", "format": "auto", "codec": "auto"}},
        "15": {"class_type": "SaveAnimatedWEBP", "inputs": {
            "images": ["12", 0], "filename_prefix": "wan", "fps": 16.0, "lossless": False, "quality": 80,
            "method": "fastest"}},
        "16": {"class_type": "SaveWEBM", "inputs": {
            "images": ["12", 0], "filename_prefix": "wan", "codec": "vp9", "fps": 16.0, "crf": 32.0}},
    }


def stable_audio_graph(prompt: str, seconds: float = 3.0) -> Json:
    """Stable Audio Open: T5 text encoder, ConditioningStableAudio, MP3 + Opus, a trimmed preview."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "stable_audio_open_1.0.safetensors"}},
        "2": {"class_type": "CLIPLoader", "inputs": {"clip_name": "t5_base.safetensors", "type": "stable_audio"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": prompt, "clip": ["2", 0]}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "noise", "clip": ["2", 0]}},
        "5": {"class_type": "ConditioningStableAudio", "inputs": {
            "positive": ["3", 0], "negative": ["4", 0], "seconds_start": 0.0, "seconds_total": seconds}},
        "6": {"class_type": "EmptyLatentAudio", "inputs": {"seconds": seconds, "batch_size": 1}},
        "7": {"class_type": "KSampler", "inputs": {
            "seed": 5, "steps": 3, "cfg": 7.0, "sampler_name": "dpmpp_3m_sde_gpu", "scheduler": "exponential",
            "denoise": 1.0, "model": ["1", 0], "positive": ["5", 0], "negative": ["5", 1], "latent_image": ["6", 0]}},
        "8": {"class_type": "VAEDecodeAudio", "inputs": {"samples": ["7", 0], "vae": ["1", 2]}},
        "9": {"class_type": "SaveAudioMP3", "inputs": {
            "audio": ["8", 0], "filename_prefix": "audio/sa", "quality": "V0"}},
        "10": {"class_type": "SaveAudioOpus", "inputs": {
            "audio": ["8", 0], "filename_prefix": "audio/sa", "quality": "128k"}},
        "11": {"class_type": "TrimAudioDuration", "inputs": {"audio": ["8", 0], "start_index": 0.5, "duration": 1.0}},
        "12": {"class_type": "PreviewAudio", "inputs": {"audio": ["11", 0]}},
    }


# -- helpers ------------------------------------------------------------------------------------------------


@pytest.fixture
async def worker(tmp_path: Path) -> Any:
    w = PreviewWorker(tmp_path / "families", lock=LOCK)
    await w.start()
    try:
        yield w
    finally:
        await w.stop()


def validates_on_real_comfyui(graph: Json) -> None:
    """The graph passes ComfyUI 0.3.64's validation against its real catalogue and these model files."""
    outcome = validate_graph(graph, core_catalogue().object_info(), MODELS)
    assert outcome.ok and not outcome.node_errors, (outcome.error, outcome.node_errors)


async def upload(http: aiohttp.ClientSession, worker: PreviewWorker, name: str, size: tuple[int, int]) -> str:
    buffer = BytesIO()
    img = Image.new("RGB", size, (30, 90, 160))
    img.paste((230, 200, 40), (size[0] // 4, size[1] // 4, size[0] * 3 // 4, size[1] * 3 // 4))
    img.save(buffer, format="PNG")
    form = aiohttp.FormData()
    form.add_field("image", buffer.getvalue(), filename=name, content_type="image/png")
    async with http.post(worker.url + "/upload/image", data=form) as r:
        assert r.status == 200
        return str((await r.json())["name"])


async def run(
    http: aiohttp.ClientSession, worker: PreviewWorker, graph: Json, *, features: bool | None = None
) -> tuple[Json, list[Any]]:
    """Queue ``graph`` from a WebSocket client; return its history entry and every frame it received."""
    client = f"c{time.monotonic_ns()}"
    ws = await http.ws_connect(f"{worker.url}/ws?clientId={client}")
    frames: list[Any] = []
    try:
        await ws.receive_json()  # status
        if features is not None:
            await ws.send_json({"type": "feature_flags", "data": {"supports_preview_metadata": features}})
            frames.append(await ws.receive_json())
        status, body = await post_prompt(http, worker.url, {"prompt": graph, "client_id": client})
        assert status == 200 and body["node_errors"] == {}, body
        deadline = time.monotonic() + 60
        while True:
            msg = await ws.receive(timeout=max(0.01, deadline - time.monotonic()))
            if msg.type == aiohttp.WSMsgType.BINARY:
                frames.append(msg.data)
                continue
            frame = json.loads(msg.data)
            frames.append(frame)
            data = frame["data"]
            if frame["type"] == "executing" and data.get("node") is None and data.get("prompt_id") == body["prompt_id"]:
                break
    finally:
        await ws.close()
    history = await get_json(http, f"{worker.url}/history/{body['prompt_id']}")
    entry: Json = history[body["prompt_id"]]
    assert entry["status"]["status_str"] == "success", entry["status"]
    return entry, frames


def path_of(worker: PreviewWorker, item: Json) -> Path:
    base = worker.dirs.for_type(item["type"])
    assert base is not None
    return base / item["subfolder"] / item["filename"]


def progress_of(frames: list[Any], node: str) -> list[tuple[float, float]]:
    return [(f["data"]["value"], f["data"]["max"]) for f in frames
            if isinstance(f, dict) and f["type"] == "progress" and f["data"]["node"] == node]


# -- the families -------------------------------------------------------------------------------------------


async def test_flux_custom_sampler_chain(worker: PreviewWorker, http: aiohttp.ClientSession) -> None:
    graph = flux_graph("a lighthouse at dusk, volumetric fog")
    validates_on_real_comfyui(graph)
    entry, frames = await run(http, worker, graph)
    images = entry["outputs"]["14"]["images"]
    assert [i["filename"] for i in images] == ["flux_00001_.png", "flux_00002_.png"]
    pictures = [Image.open(path_of(worker, i)) for i in images]
    assert all(p.size == (256, 192) for p in pictures)
    assert json.loads(pictures[0].text["prompt"])["12"]["class_type"] == "SamplerCustomAdvanced"
    assert not np.array_equal(np.asarray(pictures[0]), np.asarray(pictures[1]))  # two batch items, two pictures
    assert progress_of(frames, "12") == [(1.0, 4.0), (2.0, 4.0), (3.0, 4.0), (4.0, 4.0)]  # steps = len(sigmas) - 1
    again, _ = await run(http, worker, flux_graph("a lighthouse at dusk, volumetric fog", seed=43))
    other = np.asarray(Image.open(path_of(worker, again["outputs"]["14"]["images"][0])))
    assert not np.array_equal(np.asarray(pictures[0]), other)  # the noise seed reaches the picture


async def test_sd35_with_triple_clip_and_a_saved_latent(worker: PreviewWorker, http: aiohttp.ClientSession) -> None:
    graph = sd35_graph("a watercolor fox")
    validates_on_real_comfyui(graph)
    entry, _ = await run(http, worker, graph)
    (image,) = entry["outputs"]["9"]["images"]
    picture = Image.open(path_of(worker, image))
    assert picture.size == (320, 256)
    assert entry["outputs"]["10"] == {"latents": [{"filename": "sd35_00001_.latent", "subfolder": "latents",
                                                    "type": "output"}]}
    # LoadLatent of the saved file decodes to the same picture (the preview keeps what the latent stands for).
    latent_file = path_of(worker, entry["outputs"]["10"]["latents"][0])
    (worker.dirs.input / "fox.latent").write_bytes(latent_file.read_bytes())
    reload = {
        "1": {"class_type": "LoadLatent", "inputs": {"latent": "fox.latent"}},
        "2": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd3.5_large.safetensors"}},
        "3": {"class_type": "VAEDecode", "inputs": {"samples": ["1", 0], "vae": ["2", 2]}},
        "4": {"class_type": "SaveImage", "inputs": {"filename_prefix": "reloaded", "images": ["3", 0]}},
    }
    again, _ = await run(http, worker, reload)
    reloaded = Image.open(path_of(worker, again["outputs"]["4"]["images"][0]))
    assert reloaded.size == (320, 256)
    assert np.array_equal(np.asarray(reloaded), np.asarray(picture))


async def test_sdxl_hires_fix_upscales_the_latent(worker: PreviewWorker, http: aiohttp.ClientSession) -> None:
    graph = sdxl_controlnet_graph("a dancer on a rooftop", "unused.png")
    for gone in ("4", "5", "6", "7", "12"):
        del graph[gone]
    graph["9"]["inputs"].update(positive=["2", 0], negative=["3", 0])
    graph["13"] = {"class_type": "LatentUpscaleBy", "inputs": {
        "samples": ["9", 0], "upscale_method": "nearest-exact", "scale_by": 1.5}}
    graph["14"] = {"class_type": "KSampler", "inputs": {
        "seed": 3, "steps": 2, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 0.5,
        "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["13", 0]}}
    graph["10"]["inputs"]["samples"] = ["14", 0]
    validates_on_real_comfyui(graph)
    entry, _ = await run(http, worker, graph)
    assert Image.open(path_of(worker, entry["outputs"]["11"]["images"][0])).size == (576, 384)


async def test_sdxl_with_controlnet(worker: PreviewWorker, http: aiohttp.ClientSession) -> None:
    hint = await upload(http, worker, "pose.png", (200, 120))
    graph = sdxl_controlnet_graph("a dancer on a rooftop", hint)
    validates_on_real_comfyui(graph)
    entry, _ = await run(http, worker, graph)
    out = Image.open(path_of(worker, entry["outputs"]["11"]["images"][0]))
    assert out.size == (384, 256)
    # The Canny hint is the uploaded picture, marked with the class that filtered it.
    canny = np.asarray(Image.open(path_of(worker, entry["outputs"]["12"]["images"][0])).convert("RGB"))
    source = np.asarray(Image.open(worker.dirs.input / hint).convert("RGB"))
    assert canny.shape == source.shape
    assert np.array_equal(canny[20:], source[20:]) and not np.array_equal(canny[:12, -40:], source[:12, -40:])
    # The same graph without the ControlNet gives another picture: the control reaches the sampler.
    plain = sdxl_controlnet_graph("a dancer on a rooftop", hint)
    plain["9"]["inputs"].update(positive=["2", 0], negative=["3", 0])
    del plain["7"], plain["6"]
    again, _ = await run(http, worker, plain)
    without = np.asarray(Image.open(path_of(worker, again["outputs"]["11"]["images"][0])))
    assert not np.array_equal(np.asarray(out), without)


async def test_wan_image_to_video(worker: PreviewWorker, http: aiohttp.ClientSession) -> None:
    start = await upload(http, worker, "start.png", (160, 96))
    graph = wan_graph("the camera pushes in slowly", start, length=17)
    validates_on_real_comfyui(graph)
    entry, _ = await run(http, worker, graph)
    outputs = entry["outputs"]
    assert outputs["14"] == {"images": [{"filename": "wan_00001_.mp4", "subfolder": "video", "type": "output"}],
                             "animated": [True]}
    assert outputs["15"]["animated"] == [True] and outputs["16"]["animated"] == [True]
    # One prompt, one prefix, one folder: the counter is shared across extensions (a.9).
    assert {outputs["15"]["images"][0]["filename"], outputs["16"]["images"][0]["filename"]} == {
        "wan_00001_.webp", "wan_00002_.webm"}
    mp4 = probe(path_of(worker, outputs["14"]["images"][0]))
    assert (mp4.width, mp4.height, mp4.frame_count) == (160, 96, 17) and mp4.fps == pytest.approx(16.0)
    webm = probe(path_of(worker, outputs["16"]["images"][0]))
    assert (webm.width, webm.height, webm.frame_count) == (160, 96, 17) and webm.video[0].codec == "vp9"
    webp = Image.open(path_of(worker, outputs["15"]["images"][0]))
    assert webp.size == (160, 96) and webp.n_frames == 17
    assert webp.getexif()[0x0110].startswith("prompt:")


async def test_stable_audio(worker: PreviewWorker, http: aiohttp.ClientSession) -> None:
    graph = stable_audio_graph("lofi hip hop, 90 bpm", seconds=3.0)
    validates_on_real_comfyui(graph)
    entry, _ = await run(http, worker, graph)
    outputs = entry["outputs"]
    assert outputs["9"] == {"audio": [{"filename": "sa_00001_.mp3", "subfolder": "audio", "type": "output"}]}
    assert outputs["10"] == {"audio": [{"filename": "sa_00002_.opus", "subfolder": "audio", "type": "output"}]}
    (preview,) = outputs["12"]["audio"]
    assert preview["type"] == "temp" and preview["subfolder"] == ""
    assert preview["filename"].startswith("ComfyUI_temp_") and preview["filename"].endswith("_00001_.flac")
    # Stable Audio's latent holds round(seconds * 44100 / 2048 / 2) * 2 steps of 2048 samples: 2.972 s here.
    decoded = 64 * 2048 / 44100
    mp3 = probe(path_of(worker, outputs["9"]["audio"][0]))
    opus = probe(path_of(worker, outputs["10"]["audio"][0]))
    flac = probe(path_of(worker, preview))
    assert mp3.audio[0].codec == "mp3" and mp3.duration_s == pytest.approx(decoded, abs=0.08)
    assert opus.audio[0].codec == "opus" and opus.audio[0].sample_rate == 48000
    assert opus.duration_s == pytest.approx(decoded, abs=0.08)
    assert flac.duration_s == pytest.approx(1.0, abs=0.01)
    assert "prompt" in {k.lower() for k in mp3.tags}


# -- output nodes and list mapping --------------------------------------------------------------------------


async def test_websocket_images_previews_and_always_rerun(worker: PreviewWorker, http: aiohttp.ClientSession) -> None:
    graph = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 24, "batch_size": 3, "color": 0xFF0000}},
        "2": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}},
    }
    entry, frames = await run(http, worker, graph, features=True)
    assert entry["outputs"] == {}  # no UI part: nothing in history (c.6)
    binary = [f for f in frames if isinstance(f, bytes)]
    assert len(binary) == 3 and progress_of(frames, "2") == [(0.0, 3.0), (1.0, 3.0), (2.0, 3.0)]
    kind, length = struct.unpack(">II", binary[0][:8])
    meta = json.loads(binary[0][8 : 8 + length])
    assert kind == 4 and meta["node_id"] == "2" and meta["image_type"] == "image/png"
    assert Image.open(BytesIO(binary[0][8 + length :])).size == (32, 24)
    # A legacy client gets type-1 frames (format 2 = PNG) after each progress, and the node runs again.
    _, legacy = await run(http, worker, graph, features=None)
    frames_1 = [f for f in legacy if isinstance(f, bytes)]
    assert [struct.unpack(">II", f[:8]) for f in frames_1] == [(1, 2)] * 3
    cached = next(f for f in legacy if isinstance(f, dict) and f["type"] == "execution_cached")
    assert cached["data"]["nodes"] == ["1"]


async def test_animated_png_preview_any_and_list_mapping(worker: PreviewWorker, http: aiohttp.ClientSession) -> None:
    graph = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 40, "height": 30, "batch_size": 5, "color": 255}},
        "2": {"class_type": "RebatchImages", "inputs": {"images": ["1", 0], "batch_size": 2}},
        "3": {"class_type": "SaveImage", "inputs": {"filename_prefix": "rebatched", "images": ["2", 0]}},
        "4": {"class_type": "GetImageSize", "inputs": {"image": ["2", 0]}},
        "5": {"class_type": "PreviewAny", "inputs": {"source": ["4", 2]}},
        "6": {"class_type": "SaveAnimatedPNG", "inputs": {
            "images": ["10", 0], "filename_prefix": "anim", "fps": 5.0, "compress_level": 1}},
        "9": {"class_type": "EmptyImage", "inputs": {"width": 40, "height": 30, "batch_size": 1, "color": 0xFF00}},
        "10": {"class_type": "ImageBatch", "inputs": {"image1": ["1", 0], "image2": ["9", 0]}},
        "7": {"class_type": "CheckpointSave", "inputs": {
            "model": ["8", 0], "clip": ["8", 1], "vae": ["8", 2], "filename_prefix": "checkpoints/merged"}},
        "8": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd_xl_base_1.0.safetensors"}},
    }
    validates_on_real_comfyui(graph)
    entry, _ = await run(http, worker, graph)
    outputs = entry["outputs"]
    # RebatchImages returns a list (batches of 2, 2, 1): SaveImage and GetImageSize run once per batch.
    assert [i["filename"] for i in outputs["3"]["images"]] == [f"rebatched_{n:05}_.png" for n in range(1, 6)]
    assert outputs["5"] == {"text": ["2", "2", "1"]}
    assert outputs["6"]["animated"] == [True]
    apng = Image.open(path_of(worker, outputs["6"]["images"][0]))
    # Pillow (ComfyUI's writer too) merges the five equal frames into one long frame: 2 frames, 6 x 200 ms.
    assert apng.n_frames == 2 and b"comf" in path_of(worker, outputs["6"]["images"][0]).read_bytes()
    durations = []
    for i in range(apng.n_frames):
        apng.seek(i)
        durations.append(apng.info["duration"])
    assert sum(durations) == 6 * 200
    assert "7" not in outputs  # model save nodes report nothing (a.9)
    assert (worker.dirs.output / "checkpoints" / "merged_00001_.safetensors").is_file()
    models = await get_json(http, worker.url + "/models/checkpoints")
    assert "merged_00001_.safetensors" in models  # output/checkpoints is a search path, as in ComfyUI


async def test_partner_api_nodes_run_as_placeholders(worker: PreviewWorker, http: aiohttp.ClientSession) -> None:
    graph = {
        "1": {"class_type": "OpenAIDalle3", "inputs": {
            "prompt": "a paper boat", "seed": 1, "quality": "standard", "style": "natural", "size": "1024x1792"}},
        "2": {"class_type": "SaveImage", "inputs": {"filename_prefix": "dalle", "images": ["1", 0]}},
        "3": {"class_type": "KlingTextToVideoNode", "inputs": {
            "prompt": "a paper boat drifting", "negative_prompt": "", "cfg_scale": 0.5, "aspect_ratio": "1:1",
            "mode": "standard mode / 5s duration / kling-v1-6"}},
        "4": {"class_type": "GetVideoComponents", "inputs": {"video": ["3", 0]}},
        "5": {"class_type": "PreviewAny", "inputs": {"source": ["4", 2]}},
        "6": {"class_type": "ImageFromBatch", "inputs": {"image": ["4", 0], "batch_index": 0, "length": 3}},
        "7": {"class_type": "SaveAnimatedWEBP", "inputs": {
            "images": ["6", 0], "filename_prefix": "kling", "fps": 24.0, "lossless": False, "quality": 50,
            "method": "fastest"}},
    }
    validates_on_real_comfyui(graph)
    entry, _ = await run(http, worker, graph)
    assert Image.open(path_of(worker, entry["outputs"]["2"]["images"][0])).size == (1024, 1792)
    assert entry["outputs"]["5"] == {"text": ["24.0"]}  # 5 s at 24 fps, decoded by GetVideoComponents
    assert Image.open(path_of(worker, entry["outputs"]["7"]["images"][0])).size == (1024, 1024)
    # Their own validate_inputs, as in ComfyUI: BFL's aspect ratio, Kling's camera controls.
    bad = {
        "1": {"class_type": "FluxProUltraImageNode", "inputs": {
            "prompt": "x", "prompt_upsampling": False, "seed": 0, "aspect_ratio": "1:5", "raw": False}},
        "2": {"class_type": "SaveImage", "inputs": {"filename_prefix": "bfl", "images": ["1", 0]}},
    }
    status, body = await post_prompt(http, worker.url, {"prompt": bad})
    assert status == 400
    (error,) = body["node_errors"]["1"]["errors"]
    assert error["type"] == "custom_validation_failed"
    assert error["details"] == (
        "aspect_ratio - Aspect ratio cannot reduce to any less than 1:4 (0.25), but was 1:5 (0.2)."
    )
