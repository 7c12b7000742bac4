"""Every template binds, validates against a worker's schemas and models, and runs on the preview worker with
its declared outputs coming back; the media are checked for what they claim. Routing honours model files."""

from __future__ import annotations

import math
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import load_file, save_file

from reelforge.comfy.client import ComfyClient
from reelforge.comfy.datasets import upload_captioned_folder
from reelforge.comfy.errors import NoEligibleWorker
from reelforge.comfy.pool import WorkerPool
from reelforge.jobs import run_template
from reelforge.media.probe import probe
from reelforge.preview.server import PreviewWorker
from reelforge.templates.template import Template, load_all, validate_on_worker

pytestmark = pytest.mark.timeout(240)

TEMPLATES = load_all()
INPUT_SIZE = (96, 64)


def test_every_pipeline_stage_has_a_template() -> None:
    assert set(TEMPLATES) == {
        "character_base_realistic", "character_base_stylized", "character_variation_realistic",
        "character_variation_stylized", "lora_train", "lora_test", "keyframe_ipadapter", "keyframe_pose",
        "keyframe_two_shot",
        "image_to_video", "first_last_frame", "talking_video", "voice_design", "voice_clone", "music", "upscale",
    }


def _png(path: Path, color: tuple[int, int, int]) -> Path:
    Image.new("RGB", INPUT_SIZE, color).save(path)
    return path


def _wav(path: Path, seconds: float = 1.5, rate: int = 16000) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    samples = (0.3 * np.sin(2 * math.pi * 220 * t) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())
    return path


def _small(template: Template) -> dict[str, Any]:
    """Parameters that keep CPU placeholders cheap: the smallest sizes allowed, 9 frames, 3 s of audio."""
    params: dict[str, Any] = {}
    for name, p in template.parameters.items():
        if name in ("width", "height") and p.type == "int" and (p.default or 0) > 0:  # -1 = keep the size
            params[name] = int(max(p.min or 64, 64))
        elif name == "length":
            params[name] = 9
        elif name == "seconds":
            params[name] = max(3, int(p.min or 0)) if p.type == "int" else max(3.0, float(p.min or 0))
        elif name == "steps":
            params[name] = int(max(p.min or 1, 2))
        elif p.type == "string" and p.default is None:
            params[name] = f"a test {name} for {template.name}"
    return params


async def _inputs(template: Template, client: ComfyClient, root: Path, tmp: Path) -> dict[str, Any]:
    """Upload what the template's file parameters need and return their bound values."""
    values: dict[str, Any] = {}
    colours = iter([(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40)])
    for name, p in template.parameters.items():
        if p.type == "image":
            source = _png(tmp / f"{template.name}-{name}.png", next(colours))
            values[name] = (await client.upload(source, filename=source.name)).ref
        elif p.type == "audio":
            source = _wav(tmp / f"{template.name}-{name}.wav")
            values[name] = (await client.upload(source, filename=source.name)).ref
        elif p.type == "folder":
            items = [(_png(tmp / f"set{i}.png", next(colours)), f"rfperson, pose {i}") for i in range(3)]
            values[name] = await upload_captioned_folder(client, items)
        elif p.type == "model" and p.default is None:
            folder = root / "models" / (p.folder or "loras")
            folder.mkdir(parents=True, exist_ok=True)
            save_file({"w.lora_down.weight": np.zeros((4, 8), np.float32)}, str(folder / "test_lora.safetensors"))
            values[name] = "test_lora.safetensors"
    return values


@pytest.mark.parametrize("name", sorted(TEMPLATES))
async def test_template_runs_on_the_preview_worker(name: str, tmp_path: Path) -> None:
    template = TEMPLATES[name]
    root = tmp_path / "worker"
    async with PreviewWorker(root) as worker, ComfyClient(worker.url) as client:
        params = {**_small(template), **await _inputs(template, client, root, tmp_path)}
        graph = await validate_on_worker(template, client, params)
        assert {n["class_type"] for n in graph.values()} == template.node_classes
        async with WorkerPool([client]) as pool:
            record = await run_template(pool, template, params, job_id=name, dest_dir=tmp_path / "out")
        bound = template.bind(params)
        for output in template.outputs:
            files = [f.path for f in record.files if f.node_id == output.node_id]
            assert files, f"{name}: no {output.kind} output from node {output.node_id} ({output.title})"
            if output.kind == "lora":
                _check_lora(root, bound, files)
                continue
            _check_media(output.kind, files[0], params, template)


def _check_lora(root: Path, bound: dict[str, Any], downloaded: list[Path]) -> None:
    """SaveLoRANode lists nothing in history: the job found the file through /models/loras and downloaded it."""
    rank = next(n["inputs"]["rank"] for n in bound.values() if n["class_type"] == "TrainLoraNode")
    (path,) = (root / "output" / "loras").glob("*.safetensors")
    assert [p.read_bytes() for p in downloaded] == [path.read_bytes()]
    tensors = load_file(str(downloaded[0]))
    downs = {k: v for k, v in tensors.items() if k.endswith("lora_down.weight")}
    assert downs and all(v.shape[0] == rank for v in downs.values())
    assert all(np.isfinite(v).all() for v in tensors.values())


def _check_media(kind: str, path: Path, params: dict[str, Any], template: Template) -> None:
    if kind == "image":
        with Image.open(path) as image:
            if "width" in params:
                assert image.size == (params["width"], params["height"])
            elif template.name == "upscale":
                scale = 4 * template.parameters["scale"].default
                assert image.size == (int(INPUT_SIZE[0] * scale), int(INPUT_SIZE[1] * scale))
            else:  # image-to-image keeps the input's size
                assert image.size == INPUT_SIZE
    elif kind == "video":
        info = probe(path)
        (video,) = info.video
        assert video.frame_count == params["length"]
        fps = params.get("fps", template.parameters["fps"].default)
        assert video.fps == pytest.approx(fps, rel=1e-3)
        if template.name == "talking_video":
            assert info.audio, "a talking video carries its speech"
    elif kind == "audio":
        duration = probe(path).duration_s
        if "seconds" in params:
            assert duration == pytest.approx(params["seconds"], abs=0.1)
        else:
            assert duration > 0.3
    else:
        raise AssertionError(f"unexpected output kind {kind}")


async def test_routing_skips_a_worker_without_the_model_file(tmp_path: Path) -> None:
    template = TEMPLATES["character_base_realistic"]
    missing = "diffusion_models/flux1-dev.safetensors"
    params = {"prompt": "routing test", "width": 256, "height": 256, "steps": 2}
    async with (
        PreviewWorker(tmp_path / "full", name="full") as full,
        PreviewWorker(tmp_path / "lacking", name="lacking", missing_models=[missing]) as lacking,
        ComfyClient(full.url, name="full") as a,
        ComfyClient(lacking.url, name="lacking") as b,
    ):
        async with WorkerPool([a, b]) as pool:
            records = [
                await run_template(pool, template, {**params, "seed": i}, job_id=f"j{i}", dest_dir=tmp_path / "o")
                for i in range(3)
            ]
        assert {r.result.worker for r in records} == {"full"}
        async with WorkerPool([b]) as only_lacking:
            with pytest.raises(NoEligibleWorker) as info:
                await run_template(only_lacking, template, params, job_id="x", dest_dir=tmp_path / "o")
        assert "flux1-dev.safetensors" in str(info.value)
