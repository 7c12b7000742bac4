"""Every class of ComfyUI 0.3.64's catalogue runs on the preview worker, once, with inputs built from its own
schema (small sizes), and returns values of its declared output types; output nodes name real files."""

from __future__ import annotations

import json
import math
import re
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import save_file

from reelforge.media.ffmpeg import encode_raw_video
from reelforge.preview.nodes.generic import NodeView, placeholder
from reelforge.preview.registry import ExecContext, NodeClass, NodeRegistry, Video, WorkerDirs, default_registry
from reelforge.preview.values import (
    AudioEmbedding,
    AudioEncoder,
    Clip,
    ClipVision,
    Cond,
    ControlNet,
    Guider,
    Model,
    Noise,
    Recipe,
    Sampler,
    UpscaleModel,
    Vae,
    VisionEmbedding,
    latent,
)

REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "comfyui-object-info-0.3.64.json"
CORE_JSON = Path(__file__).resolve().parents[2] / "reelforge" / "preview" / "catalogue" / "core.json"

# Small values for inputs that set sizes, lengths and durations (clamped to each input's own bounds).
SMALL: dict[str, float] = {
    "width": 64, "height": 64, "target_width": 64, "target_height": 64, "largest_size": 64, "resolution": 64,
    "length": 5, "frames": 5, "num_frames": 5, "video_frames": 5, "batch_size": 1, "amount": 2, "steps": 3,
    "seconds": 1.0, "duration": 1.0, "seconds_total": 1.0, "megapixels": 0.01, "tile_size": 64,
    "scale_by": 1.0, "upscale_factor": 1.0, "fps": 8.0, "frame_rate": 8.0,
}
PROMPT_WORDS = ("text", "prompt", "clip_l", "clip_g", "t5xxl", "tags", "lyrics", "string")
NAME = re.compile(r"^.+_\d{5}_\.[a-z0-9]+$")


def _reference() -> dict[str, Any]:
    """The real /object_info answer (the shared reference; the preview's own copy where it is absent)."""
    path = REFERENCE if REFERENCE.is_file() else CORE_JSON
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="module")
def reg() -> NodeRegistry:
    return default_registry()


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> WorkerDirs:
    d = WorkerDirs(tmp_path_factory.mktemp("all-classes"))
    d.create()
    Image.new("RGBA", (48, 40), (200, 30, 30, 255)).save(d.input / "test.png")
    Image.new("RGB", (48, 40), (30, 200, 30)).save(d.output / "test.png")
    (d.input / "set").mkdir()
    for i in range(2):
        Image.new("RGB", (40, 40), (i * 100, 50, 50)).save(d.input / "set" / f"{i}.png")
    (d.input / "3d").mkdir()
    (d.input / "3d" / "cube.glb").write_bytes(b"glTF")
    (d.input / "notes.txt").write_text("context", encoding="utf-8")
    with wave.open(str(d.input / "test.wav"), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        t = np.arange(8000) / 16000
        out.writeframes((0.3 * np.sin(2 * math.pi * 220 * t) * 32767).astype("<i2").tobytes())
    # Files for loaders of folders the lock has no model in.
    for folder, name in [
        ("style_models", "style.safetensors"), ("gligen", "gligen.safetensors"), ("hypernetworks", "h.pt"),
        ("photomaker", "pm.bin"), ("model_patches", "patch.safetensors"), ("controlnet", "cn.safetensors"),
        ("text_encoders", "clip_g.safetensors"), ("checkpoints", "sd3.5_medium.safetensors"),
        ("loras", "style.safetensors"),
    ]:
        (d.models / folder).mkdir(parents=True, exist_ok=True)
        (d.models / folder / name).write_bytes(b"x")
    save_file({"latent_tensor": np.zeros((1, 4, 4, 4), dtype=np.float32)}, str(d.input / "old.latent"))
    frames = [np.full((32, 32, 3), 40 * i, dtype=np.uint8) for i in range(4)]
    encode_raw_video(iter(frames), width=32, height=32, fps=8.0, output=d.input / "clip.mp4",
                     output_args=["-c:v", "libx264", "-pix_fmt", "yuv420p"])
    return d


def _ctx(dirs: WorkerDirs, node_id: str) -> ExecContext:
    prompt = {node_id: {"class_type": "Test", "inputs": {}}}
    return ExecContext(prompt_id="p", node_id=node_id, prompt=prompt, extra_pnginfo={"workflow": {}}, dirs=dirs)


def sample_value(type_name: str, dirs: WorkerDirs) -> Any:
    """A small value of a link type, as an upstream node would hand it over."""
    t = type_name.split(",")[0]
    model = Model("flux1-dev.safetensors", "flux")
    cond = [Cond("a red fox in the snow", extras=(("clip", Clip(("clip_l.safetensors",))),))]
    simple: dict[str, Any] = {
        "IMAGE": np.random.default_rng(0).random((1, 32, 32, 3), dtype=np.float32),
        "MASK": np.zeros((1, 32, 32), dtype=np.float32),
        "LATENT": latent(np.zeros((1, 4, 4, 4), dtype=np.float32), Recipe(kind="image", width=32, height=32)),
        "MODEL": model,
        "CLIP": Clip(("clip_l.safetensors",), type="flux"),
        "VAE": Vae("ae.safetensors"),
        "CONDITIONING": cond,
        "AUDIO": {"waveform": np.zeros((1, 2, 4410), dtype=np.float32), "sample_rate": 44100},
        "VIDEO": Video(
            frames=np.zeros((4, 32, 32, 3), dtype=np.float32),
            fps=8.0,
            audio={"waveform": np.zeros((1, 2, 22050), dtype=np.float32), "sample_rate": 44100},
        ),
        "CONTROL_NET": ControlNet("cn.safetensors"),
        "CLIP_VISION": ClipVision("clip_vision_h.safetensors"),
        "CLIP_VISION_OUTPUT": VisionEmbedding(np.zeros((1, 32, 32, 3), dtype=np.float32)),
        "UPSCALE_MODEL": UpscaleModel("2x.pth", 2),
        "AUDIO_ENCODER": AudioEncoder("wav2vec2.safetensors"),
        "AUDIO_ENCODER_OUTPUT": AudioEmbedding(np.zeros((1, 1, 1600), dtype=np.float32), 16000),
        "SIGMAS": np.linspace(1.0, 0.0, 4, dtype=np.float32),
        "NOISE": Noise(7),
        "SAMPLER": Sampler("euler"),
        "GUIDER": Guider(model, tuple(cond), (), 3.5),
        "INT": 1, "FLOAT": 1.0, "STRING": "a red fox", "BOOLEAN": True, "*": "anything",
    }
    if t in simple:
        return simple[t]
    if t == "LORA_MODEL":  # what TrainLoraNode hands to SaveLoRANode
        train = default_registry().classes["TrainLoraNode"]
        inputs = {"model": model, "latents": simple["LATENT"], "positive": cond, "steps": 2, "rank": 2}
        return train.run(_ctx(dirs, "0"), inputs).outputs[1]
    return placeholder(NodeView("Upstream", {}, {}), _ctx(dirs, "0"), t, t.lower())


def _bounded(spec: dict[str, Any], value: float) -> float:
    low, high = spec.get("min", -math.inf), spec.get("max", math.inf)
    return min(max(value, low), high)


def widget_value(cls: NodeClass, name: str, spec: list[Any], options: list[Any] | None, dirs: WorkerDirs) -> Any:
    kind = spec[0] if not isinstance(spec[0], list) else "COMBO"
    extra: dict[str, Any] = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if kind == "COMBO":
        values = options if options is not None else []
        if cls.name == "LoadImageOutput":
            return "test.png [output]"
        default = extra.get("default")
        return default if default in values else (values[0] if values else default)
    if kind in ("INT", "FLOAT"):
        value = extra.get("default", extra.get("min", 0))
        if name in SMALL and float(value) > SMALL[name]:  # only shrink (-1 often means "keep the size")
            value = SMALL[name]
        value = _bounded(extra, float(value))
        return int(value) if kind == "INT" else float(value)
    if kind == "BOOLEAN":
        return bool(extra.get("default", False))
    if kind == "STRING":
        default = extra.get("default")
        if isinstance(default, str) and default:
            return default
        return "a red fox in the snow" if any(w in name.lower() for w in PROMPT_WORDS) else "x"
    return None


def build_inputs(cls: NodeClass, dirs: WorkerDirs) -> dict[str, Any]:
    """Required inputs and optional widgets, from the class's /object_info entry on this worker."""
    info = cls.object_info(dirs)["input"]
    inputs: dict[str, Any] = {}
    literal_types = {"WEBCAM": "test.png", "AUDIO_RECORD": "test.wav"}
    for section in ("required", "optional"):
        for name, spec in (info.get(section) or {}).items():
            kind = spec[0]
            options = kind if isinstance(kind, list) else (spec[1].get("options") if kind == "COMBO" else None)
            if isinstance(kind, list) or kind in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"):
                if section == "optional" and isinstance(spec[1] if len(spec) > 1 else None, dict) and spec[1].get(
                    "forceInput"
                ):
                    continue
                inputs[name] = widget_value(cls, name, spec, options, dirs)
            elif kind in literal_types:
                inputs[name] = literal_types[kind]
            elif kind in ("LOAD_3D", "LOAD_3D_ANIMATION"):
                inputs[name] = {"image": "test.png", "mask": "test.png", "normal": "test.png", "camera_info": {},
                                "recording": ""}
            elif section == "required":
                inputs[name] = sample_value(str(kind), dirs)
    if cls.name == "StringSubstring":
        inputs.update(start=0, end=3)
    if cls.name in ("LoadImageSetFromFolderNode", "LoadImageTextSetFromFolderNode"):
        inputs["folder"] = "set"
    if cls.name == "LoadAudio":
        inputs["audio"] = "test.wav"
    if cls.name == "VAEDecodeAudio":  # an audio VAE decodes audio latents (Stable Audio's [B, 64, L])
        inputs["samples"] = latent(np.zeros((1, 64, 8), dtype=np.float32), Recipe(kind="audio", seconds=0.4))
    return inputs


def conforms(type_name: str, value: Any) -> bool:
    checks: dict[str, Any] = {
        "IMAGE": lambda v: isinstance(v, np.ndarray) and v.ndim == 4 and v.dtype == np.float32,
        "MASK": lambda v: isinstance(v, np.ndarray) and v.ndim in (2, 3),
        "LATENT": lambda v: isinstance(v, dict) and isinstance(v.get("samples"), np.ndarray),
        "CONDITIONING": lambda v: isinstance(v, list) and all(isinstance(c, Cond) for c in v),
        "MODEL": lambda v: isinstance(v, Model),
        "CLIP": lambda v: isinstance(v, Clip),
        "VAE": lambda v: isinstance(v, Vae),
        "INT": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "FLOAT": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "STRING": lambda v: isinstance(v, str),
        "BOOLEAN": lambda v: isinstance(v, bool),
        "AUDIO": lambda v: isinstance(v, dict) and np.asarray(v["waveform"]).ndim == 3 and v["sample_rate"] > 0,
        "VIDEO": lambda v: isinstance(v, Video) and np.asarray(v.frames).ndim == 4,
        "SIGMAS": lambda v: isinstance(v, np.ndarray) and v.ndim == 1,
        "NOISE": lambda v: isinstance(v, Noise),
        "SAMPLER": lambda v: isinstance(v, Sampler),
        "GUIDER": lambda v: isinstance(v, Guider),
        "CONTROL_NET": lambda v: isinstance(v, ControlNet),
    }
    check = checks.get(type_name)
    return value is not None if check is None else bool(check(value))


def test_the_catalogue_is_comfyui_0_3_64_whole(reg: NodeRegistry) -> None:
    reference = _reference()
    assert json.loads(CORE_JSON.read_text(encoding="utf-8")) == reference
    assert len(reference) == 496
    for name, entry in reference.items():
        cls = reg.get(name)
        assert cls is not None, name
        assert cls.schema == entry, name
    specific = [n for n in reference if not reg.classes[n].generic]
    assert len(specific) >= 130 and "SamplerCustomAdvanced" in specific and "SaveAnimatedWEBP" in specific


def test_every_class_runs_once_with_inputs_from_its_schema(reg: NodeRegistry, dirs: WorkerDirs) -> None:
    started = time.monotonic()
    failures: list[str] = []
    for i, name in enumerate(sorted(_reference())):
        cls = reg.classes[name]
        inputs = build_inputs(cls, dirs)
        if cls.input_is_list:
            inputs = {k: [v] for k, v in inputs.items()}
        try:
            result = cls.run(_ctx(dirs, str(i)), inputs)
        except Exception as exc:  # collect every failure, not only the first
            failures.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        types = cls.output_types
        if not cls.output_node or result.outputs:
            if len(result.outputs) != len(types):
                failures.append(f"{name}: {len(result.outputs)} outputs for {types}")
                continue
        for slot, (type_name, value) in enumerate(zip(types, result.outputs, strict=False)):
            items = value if cls.output_is_list[slot] else [value]
            bad = [v for v in items if not conforms(type_name, v)]
            if bad or not isinstance(items, list):
                failures.append(f"{name}: output {slot} is not a {type_name}: {type(bad[0]).__name__}")
        if result.ui is not None:
            json.dumps(result.ui)  # history must be able to carry it
            for key in ("images", "audio", "latents", "3d"):
                for entry in result.ui.get(key, []):
                    base = dirs.for_type(entry["type"])
                    assert base is not None
                    assert (base / entry["subfolder"] / entry["filename"]).is_file(), (name, entry)
                    if name != "LossGraphNode":  # ComfyUI names its plot <prefix>_<date>.png
                        assert NAME.match(entry["filename"]), (name, entry)
    assert not failures, "\n".join(failures)
    assert time.monotonic() - started < 30  # keep the whole catalogue a few seconds
    # The model save nodes wrote where ComfyUI writes (and lists: output/checkpoints, output/loras...).
    saved = sorted(p.relative_to(dirs.output).as_posix() for p in dirs.output.rglob("*.safetensors"))
    assert "checkpoints/ComfyUI_00001_.safetensors" in saved
    assert "diffusion_models/ComfyUI_00001_.safetensors" in saved
    assert "vae/ComfyUI_vae_00001_.safetensors" in saved
    assert any(p.startswith("clip/ComfyUI_clip_l_") for p in saved)
    assert (dirs.output / "latents").is_dir()
    assert list(dirs.output.glob("tripo_model_*.glb"))
