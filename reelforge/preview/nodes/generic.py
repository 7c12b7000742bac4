"""Every catalogue class without an implementation of its own, run from its declared types (the generic class).

ComfyUI 0.3.64 has 496 core classes; ``nodes/*.py`` implement the ones graphs lean on and
:func:`register_remaining` registers every other class of the catalogue with its real schema, so any graph a
real server accepts is accepted and executed here. Each output is made by type:

* **derived** when an input has the output's type (the input named like the output, else the k-th input of
  that type for the k-th output of it): an IMAGE is the picture that came in (resized when the node has a
  ``width`` and ``height``, marked with the class name), a MASK the mask, a LATENT keeps its recipe (the class is
  noted in it), a MODEL gets a patch named after the class, CONDITIONING gets the node's widget values attached,
  anything else passes through;
* otherwise a **typed placeholder**: IMAGE/MASK of the size the inputs say (``width``/``height``, a ``WxH`` size,
  an aspect ratio, an image input), an IMAGE from a LATENT and a VAE decoded like VAEDecode, a LATENT of the
  shape the class makes (video latents hold ``length`` frames; from an IMAGE and a VAE, encoded like
  VAEEncode), CONDITIONING carrying the prompt texts, MODEL/CLIP/VAE/CONTROL_NET/... records named after the
  model file, AUDIO and VIDEO of the requested duration, numbers, strings and ``values.Token`` records.

Model-file combos list the worker's files (``comfy.graph.MODEL_INPUTS``) and are resolved at run time like the
specific loaders; the time a generic class takes comes from the latency profile (``latency.py``).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from reelforge.comfy.graph import MODEL_INPUTS
from reelforge.preview.modelfiles import listed, resolve
from reelforge.preview.nodes._common import to_uint8
from reelforge.preview.nodes.image import resize_images
from reelforge.preview.nodes.loaders import model_family, upscale_factor
from reelforge.preview.nodes.sampling import decode, patch_model, vae_channels
from reelforge.preview.registry import (
    DEFAULT_REGISTRY,
    CombosFn,
    ExecContext,
    NodeClass,
    NodeRegistry,
    NodeResult,
    RunFn,
    ValidateFn,
    Video,
    WorkerDirs,
    catalogue,
)
from reelforge.preview.render.audio import render_music
from reelforge.preview.render.image import font, render_image
from reelforge.preview.render.video import fit_image
from reelforge.preview.values import (
    AudioEmbedding,
    AudioEncoder,
    Clip,
    ClipVision,
    Cond,
    ControlNet,
    Guider,
    Mesh,
    Model,
    Noise,
    Recipe,
    Sampler,
    Svg,
    Token,
    UpscaleModel,
    Vae,
    VisionEmbedding,
    latent,
    recipe_of,
)

PLAIN_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
MODEL_EXTENSIONS = (".safetensors", ".ckpt", ".pt", ".pt2", ".pth", ".bin", ".sft", ".gguf", ".pkl")
DEFAULT_SIZE = (512, 512)
RENDER_PIXELS = 256 * 256  # placeholders are drawn at most this big, then scaled (text stays legible)
STILL_VIDEO_VALUES = 4 * 1024 * 1024  # above this many floats a placeholder video repeats one frame (a view)

# Model-file inputs of classes without their own loader (besides comfy.graph.MODEL_INPUTS).
EXTRA_MODEL_INPUTS: dict[tuple[str, str], str] = {("DiffusersLoader", "model_path"): "diffusers"}

# Latent layout made by a class: (channels, spatial downscale, temporal compression or 0 for an image latent).
LATENT_FORMATS: dict[str, tuple[int, int, int]] = {
    "EmptyHunyuanLatentVideo": (16, 8, 4),
    "EmptyMochiLatentVideo": (12, 8, 6),
    "EmptyLTXVLatentVideo": (128, 32, 8),
    "EmptyCosmosLatentVideo": (16, 8, 8),
    "EmptyHunyuanImageLatent": (64, 32, 0),
    "EmptyChromaRadianceLatentImage": (3, 1, 0),
    "EmptyLatentHunyuan3Dv2": (64, 1, 0),
}
# Classes whose video latent keeps one image latent per frame in the batch dimension: the frame-count input.
FRAMES_AS_BATCH = {"SVD_img2vid_Conditioning": "video_frames"}
DEFAULT_IMAGE_LATENT = (4, 8, 0)
DEFAULT_VIDEO_LATENT = (16, 8, 4)  # Wan / Hunyuan video, the common case

_PROMPT_WORDS = ("text", "prompt", "clip_l", "clip_g", "t5xxl", "llama", "tags", "lyrics", "caption", "string")
_SIZE_RE = re.compile(r"(\d{2,5})\s*[x×*]\s*(\d{2,5})")
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*s\b")
_RATIO_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*:\s*(\d+(?:\.\d+)?)")


def declared_type(spec: Any) -> str:
    """The type of an input spec: its type name, ``COMBO`` for a list of options."""
    if isinstance(spec, (list, tuple)) and spec:
        head = spec[0]
        return "COMBO" if isinstance(head, list) else str(head)
    return "*"


def _input_specs(schema: dict[str, Any]) -> dict[str, Any]:
    specs: dict[str, Any] = {}
    for section in ("required", "optional"):
        specs.update(schema.get("input", {}).get(section, {}) or {})
    return specs


def _plain(value: Any) -> bool:
    return isinstance(value, (int, float, str, bool)) or value is None


def _digest(*parts: Any) -> int:
    data = json.dumps(parts, sort_keys=True, default=repr).encode()
    return int.from_bytes(hashlib.sha256(data).digest()[:4], "little")


class NodeView:
    """A generic node's inputs, read through its schema: values by declared type, sizes, texts, seeds."""

    def __init__(self, name: str, schema: dict[str, Any], inputs: dict[str, Any]) -> None:
        self.name = name
        self.schema = schema
        self.inputs = inputs
        self.specs = _input_specs(schema)

    def type_of(self, input_name: str) -> str:
        return declared_type(self.specs.get(input_name))

    def of_type(self, type_name: str) -> list[tuple[str, Any]]:
        """Present inputs declared with ``type_name``, in schema order."""
        return [
            (n, self.inputs[n])
            for n in self.specs
            if self.inputs.get(n) is not None and type_name in self.type_of(n).split(",")
        ]

    def first(self, type_name: str) -> Any:
        found = self.of_type(type_name)
        return found[0][1] if found else None

    def literals(self) -> tuple[tuple[str, Any], ...]:
        """The widget values (plain inputs), sorted by name: what a token or a patch records."""
        return tuple(
            (n, v) for n, v in sorted(self.inputs.items()) if self.type_of(n) in PLAIN_TYPES and _plain(v)
        )

    def number(self, *names: str) -> float | None:
        for n in names:
            v = self.inputs.get(n)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                return float(v)
            if isinstance(v, str):  # duration combos such as "5" or "10s"
                m = re.match(r"^\s*(\d+(?:\.\d+)?)", v)
                if m:
                    return float(m.group(1))
        return None

    def texts(self) -> tuple[str, str]:
        """(positive, negative) prompt texts of the node's string widgets; repeated texts count once."""
        positive: list[str] = []
        negative: list[str] = []
        for n, v in self.inputs.items():
            if not isinstance(v, str) or not v.strip() or self.type_of(n) != "STRING":
                continue
            lower = n.lower()
            if "negative" in lower:
                target = negative
            elif any(w in lower for w in _PROMPT_WORDS):
                target = positive
            else:
                continue
            if v.strip() not in target:
                target.append(v.strip())
        return " | ".join(positive), " | ".join(negative)

    def seed(self) -> int:
        value = self.number("seed", "noise_seed")
        return int(value) if value is not None else _digest(self.name, self.literals()) % 1_000_000

    def images(self) -> np.ndarray | None:
        value = self.first("IMAGE")
        return np.asarray(value, dtype=np.float32) if value is not None else None

    def size(self) -> tuple[int, int] | None:
        """(width, height) the node asks for: width/height widgets, a 'WxH' value, an aspect ratio."""
        width, height = self.number("width"), self.number("height")
        if width and height and width > 0 and height > 0:
            return int(width), int(height)
        for n, v in self.inputs.items():
            if isinstance(v, str) and any(k in n.lower() for k in ("size", "resolution", "dimension")):
                m = _SIZE_RE.search(v)
                if m:
                    return int(m.group(1)), int(m.group(2))
        for n, v in self.inputs.items():
            if isinstance(v, str) and "aspect" in n.lower():
                m = _RATIO_RE.match(v)
                if m and float(m.group(1)) > 0 and float(m.group(2)) > 0:
                    ratio = float(m.group(1)) / float(m.group(2))
                    long_side = 1024
                    if ratio >= 1:
                        return long_side, max(8, round(long_side / ratio / 8) * 8)
                    return max(8, round(long_side * ratio / 8) * 8), long_side
        return None

    def input_size(self) -> tuple[int, int] | None:
        """(width, height) of the first image, mask or latent input."""
        image = self.images()
        if image is not None and image.ndim == 4:
            return int(image.shape[2]), int(image.shape[1])
        if image is not None and image.ndim == 3:
            return int(image.shape[1]), int(image.shape[0])
        mask = self.first("MASK")
        if mask is not None:
            m = np.asarray(mask)
            return int(m.shape[-1]), int(m.shape[-2])
        lat = self.first("LATENT")
        if isinstance(lat, dict):
            r = recipe_of(lat)
            if r.width and r.height:
                return r.width, r.height
        return None

    def batch(self) -> int:
        value = self.number("batch_size", "n", "num_images", "number_of_images", "image_count", "amount")
        return max(1, min(64, int(value))) if value is not None else 1

    def model_file(self) -> str | None:
        """The model file a loader names: a model-file input, else a literal that looks like a file name."""
        for (_cls, input_name), _folder in _model_inputs(self.name).items():
            value = self.inputs.get(input_name)
            if isinstance(value, str) and value:
                return value
        for _n, v in self.literals():
            if isinstance(v, str) and v.lower().endswith(MODEL_EXTENSIONS):
                return v
        return None


def _model_inputs(class_name: str) -> dict[tuple[str, str], str]:
    return {k: f for k, f in {**MODEL_INPUTS, **EXTRA_MODEL_INPUTS}.items() if k[0] == class_name}


# -- marking derived pictures -------------------------------------------------------------------------------


@cache
def _label(text: str, size: int, min_width: int) -> tuple[np.ndarray, np.ndarray]:
    """(alpha [h,w], white-on-dark RGB [h,w,3]) of a label ``size`` pixels high, drawn once per text and size.

    At least ``min_width`` wide and opaque, so a later filter's label covers an earlier one cleanly."""
    f = font(max(8, size - 4))
    width = max(min_width, int(f.getlength(text)) + 2 * (size // 4 + 2))
    alpha = Image.new("L", (width, size), 255)
    rgb = Image.new("RGB", (width, size), (16, 16, 16))
    ImageDraw.Draw(rgb).text((size // 4 + 2, size // 2), text, fill=(255, 255, 255), font=f, anchor="lm")
    return np.asarray(alpha, dtype=np.float32) / 255.0, np.asarray(rgb, dtype=np.float32) / 255.0


def mark(images: np.ndarray, text: str) -> np.ndarray:
    """A copy of an IMAGE batch ``[B,H,W,C]`` with ``text`` in its top-right corner (what a filter did).

    Top right, because the placeholder pictures keep the prompt top left and their footer bottom left; a later
    filter's mark replaces an earlier one.
    """
    data = np.asarray(images, dtype=np.float32)
    if data.ndim != 4 or data.shape[1] < 4 or data.shape[2] < 4:
        return np.array(data, dtype=np.float32, copy=True)
    if data.shape[0] > 1 and data.strides[0] == 0:  # a still video (one frame repeated): mark it once
        return np.broadcast_to(mark(data[:1], text), data.shape)
    out = np.array(data, dtype=np.float32, copy=True)
    alpha, rgb = _label(text, max(12, min(out.shape[1], out.shape[2]) // 24), out.shape[2] // 3)
    h, w = min(alpha.shape[0], out.shape[1]), min(alpha.shape[1], out.shape[2])
    a = alpha[:h, alpha.shape[1] - w :, None]
    region = out[:, :h, out.shape[2] - w :, :]
    channels = min(3, region.shape[-1])
    colour = rgb[:h, rgb.shape[1] - w :, :channels] if channels == 3 else rgb[:h, rgb.shape[1] - w :, :1]
    region[..., :channels] = region[..., :channels] * (1 - a) + colour * a
    return out


# -- placeholders -------------------------------------------------------------------------------------------


def placeholder_image(width: int, height: int, *, prompt: str, negative: str, seed: int, batch: int) -> np.ndarray:
    """A rendered placeholder picture ``[batch, height, width, 3]`` (drawn small, then scaled when large)."""
    scale = min(1.0, math.sqrt(RENDER_PIXELS / max(1, width * height)))
    rw, rh = max(8, round(width * scale)), max(8, round(height * scale))
    recipe = Recipe(kind="image", width=rw, height=rh, prompt=prompt, negative=negative, seed=seed)
    frames: list[np.ndarray] = [render_image(recipe, b) for b in range(batch)]
    if (rw, rh) != (width, height):  # through 8-bit RGB: Pillow scales that an order faster than float planes
        big = [Image.fromarray(to_uint8(f)).resize((width, height), Image.Resampling.BILINEAR) for f in frames]
        scaled: np.ndarray = np.stack([np.asarray(b) for b in big]).astype(np.float32) / np.float32(255.0)
        return scaled
    out: np.ndarray = np.clip(np.stack(frames), 0.0, 1.0).astype(np.float32)
    return out


def _image_size(view: NodeView) -> tuple[int, int]:
    size = view.size() or view.input_size() or DEFAULT_SIZE
    return max(1, min(16384, size[0])), max(1, min(16384, size[1]))


def _latent_placeholder(view: NodeView, ctx: ExecContext) -> dict[str, Any]:
    pixels = view.images()
    vae = view.first("VAE")
    if view.name in FRAMES_AS_BATCH:  # SVD: one image latent per frame, in the batch dimension
        frames = int(view.number(FRAMES_AS_BATCH[view.name]) or 1)
        width, height = view.size() or view.input_size() or DEFAULT_SIZE
        start = fit_image(pixels[0], int(width), int(height)) if pixels is not None else None
        samples = np.zeros((frames, 4, int(height) // 8, int(width) // 8), dtype=np.float32)
        return latent(samples, Recipe(kind="image", width=int(width) // 8 * 8, height=int(height) // 8 * 8,
                                      start_image=start))
    length = view.number("length", "frames", "num_frames", "video_frames", "frame_count")
    if pixels is not None and isinstance(vae, Vae) and length is None and view.size() is None:
        # an image encoder (VAEEncodeTiled, InpaintModelConditioning...): what VAEEncode makes
        from reelforge.preview.nodes.sampling import vae_encode

        encoded: dict[str, Any] = vae_encode(ctx, {"pixels": pixels, "vae": vae}).outputs[0]
        return encoded
    width, height = view.size() or view.input_size() or DEFAULT_SIZE
    batch = view.batch()
    channels, down, temporal = LATENT_FORMATS.get(
        view.name, DEFAULT_VIDEO_LATENT if length is not None else DEFAULT_IMAGE_LATENT
    )
    if isinstance(vae, Vae) and view.name not in LATENT_FORMATS:
        channels, down = vae_channels(vae)  # the VAE decides the layout (Wan 2.2: 48 channels, 16x)
    conds = view.first("CONDITIONING")
    prompt = " | ".join(c.text for c in conds or [] if isinstance(c, Cond) and c.text)
    h, w = max(1, int(height) // down), max(1, int(width) // down)
    start = fit_image(pixels[0], int(width), int(height)) if pixels is not None else None
    if temporal and length is not None:
        steps = (max(1, int(length)) - 1) // temporal + 1
        samples = np.zeros((batch, channels, steps, h, w), dtype=np.float32)
        recipe = Recipe(
            kind="video",
            width=int(width),
            height=int(height),
            frames=(steps - 1) * temporal + 1,
            prompt=prompt,
            start_image=start,
            extras={"mode": view.name, "batch_size": batch},
        )
    else:
        samples = np.zeros((batch, channels, h, w), dtype=np.float32)
        recipe = Recipe(kind="image", width=w * down, height=h * down, prompt=prompt, start_image=start)
    return latent(samples, recipe)


def _audio_placeholder(view: NodeView) -> dict[str, Any]:
    seconds = view.number("seconds", "duration", "seconds_total", "duration_seconds", "length")
    seconds = min(600.0, max(0.1, seconds if seconds is not None else 1.0))
    rate = int(view.number("sample_rate") or 44100)
    channels = int(view.number("channels") or 2)
    prompt = view.texts()[0]
    music = render_music(seconds, prompt, view.seed(), rate)["waveform"][0]
    waveform = np.stack([music[min(c, music.shape[0] - 1)] for c in range(max(1, channels))])
    return {"waveform": np.repeat(waveform[None], view.batch(), axis=0).astype(np.float32), "sample_rate": rate}


def _video_placeholder(view: NodeView) -> Video:
    fps = view.number("fps", "frame_rate") or 24.0
    frames = view.number("length", "frames", "num_frames", "frame_count")
    if frames is None:
        seconds = view.number("duration", "duration_seconds", "seconds")
        if seconds is None:  # a mode such as Kling's "standard mode / 5s duration / kling-v1-6"
            found = (_DURATION_RE.search(v) for _n, v in view.literals() if isinstance(v, str) and "duration" in v)
            seconds = next((float(m.group(1)) for m in found if m), None)
        frames = (seconds if seconds is not None else 2.0) * fps
    total = max(1, min(100_000, round(frames)))
    width, height = view.size() or view.input_size() or (640, 360)
    pixels = view.images()
    prompt, negative = view.texts()
    if pixels is not None:
        still = fit_image(pixels[0], int(width), int(height))[None]
    else:
        still = placeholder_image(int(width), int(height), prompt=prompt, negative=negative, seed=view.seed(), batch=1)
    still = mark(still, view.name)
    audio = view.first("AUDIO")
    if total * still[0].size > STILL_VIDEO_VALUES:
        clip: np.ndarray = np.broadcast_to(still, (total, *still.shape[1:]))
    else:
        clip = np.repeat(still, total, axis=0)
    return Video(frames=clip, fps=float(fps), audio=audio if isinstance(audio, dict) else None)


def _svg(view: NodeView) -> Svg:
    width, height = view.size() or (512, 512)
    text = (view.texts()[0] or view.name).replace("&", "&amp;").replace("<", "&lt;")[:120]
    hue = view.seed() % 360
    doc = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
        f'<rect width="100%" height="100%" fill="hsl({hue},45%,55%)"/>'
        f'<text x="8" y="24" font-family="sans-serif" font-size="16">{text}</text></svg>'
    )
    return Svg(tuple(doc.encode("utf-8") for _ in range(view.batch())))


def tetrahedron() -> Mesh:
    """A one-item MESH: the smallest closed triangle mesh."""
    vertices = np.array([[[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]]], dtype=np.float32)
    faces = np.array([[[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]]], dtype=np.int32)
    return Mesh(vertices=vertices, faces=faces)


def _number_placeholder(view: NodeView, type_name: str, output_name: str) -> Any:
    size = view.input_size()
    lower = output_name.lower()
    if size is not None and type_name == "INT":
        image = view.images()
        if lower == "width":
            return size[0]
        if lower == "height":
            return size[1]
        if lower in ("batch_size", "count", "length", "frames") and image is not None:
            return int(image.shape[0])
    if type_name == "INT":
        return 0
    if type_name == "FLOAT":
        return 0.0
    return False


def _string_placeholder(view: NodeView, source: Any) -> str:
    api = bool(view.schema.get("api_node"))
    if isinstance(source, str) and not api:
        return source
    prompt = view.texts()[0] or (source if isinstance(source, str) else "")
    if api:
        return f"[preview of {view.name}] {prompt}".strip()
    for _n, v in view.literals():
        if isinstance(v, str) and v:
            return v
    return ""


def placeholder(view: NodeView, ctx: ExecContext, type_name: str, output_name: str) -> Any:
    """A value of ``type_name`` made from the node's inputs, when no input has that type."""
    name = view.model_file() or view.name
    prompt, negative = view.texts()
    if type_name == "IMAGE":
        samples, vae = view.first("LATENT"), view.first("VAE")
        if isinstance(samples, dict) and vae is not None and recipe_of(samples).kind != "audio":
            return decode(samples)  # a decoder (VAEDecodeTiled...) shows what the latent stands for
        video = view.first("VIDEO")
        if isinstance(video, Video):
            return video.frames
        width, height = _image_size(view)
        mask = view.first("MASK")
        if mask is not None and not prompt:
            m = np.asarray(mask, dtype=np.float32).reshape((-1, *np.asarray(mask).shape[-2:]))
            return np.repeat(m[..., None], 3, axis=-1)
        return mark(
            placeholder_image(width, height, prompt=prompt, negative=negative, seed=view.seed(), batch=view.batch()),
            view.name,
        )
    if type_name == "MASK":
        width, height = _image_size(view)
        image = view.images()
        batch = int(image.shape[0]) if image is not None and image.ndim == 4 else view.batch()
        return np.zeros((batch, height, width), dtype=np.float32)
    if type_name == "LATENT":
        return _latent_placeholder(view, ctx)
    if type_name == "CONDITIONING":
        extras: list[tuple[str, Any]] = []
        clip = view.first("CLIP")
        if clip is not None:
            extras.append(("clip", clip))
        guidance = view.number("guidance")
        if guidance is not None:
            extras.append(("guidance", guidance))
        extras.append((view.name, view.literals()))
        return [Cond(prompt, extras=tuple(extras))]
    if type_name == "MODEL":
        return Model(name, model_family(name))
    if type_name == "CLIP":
        files = tuple(v for _n, v in view.literals() if isinstance(v, str) and v.lower().endswith(MODEL_EXTENSIONS))
        clip_type = view.inputs.get("type")
        return Clip(files or (name,), type=str(clip_type) if isinstance(clip_type, str) else model_family(name))
    if type_name == "VAE":
        return Vae(name)
    if type_name == "CONTROL_NET":
        return ControlNet(name)
    if type_name == "CLIP_VISION":
        return ClipVision(name)
    if type_name == "UPSCALE_MODEL":
        return UpscaleModel(name, upscale_factor(name))
    if type_name == "AUDIO_ENCODER":
        return AudioEncoder(name)
    if type_name == "CLIP_VISION_OUTPUT":
        image = view.images()
        return VisionEmbedding(image if image is not None else np.zeros((1, 224, 224, 3), dtype=np.float32))
    if type_name == "AUDIO_ENCODER_OUTPUT":
        audio = view.first("AUDIO") or _audio_placeholder(view)
        return AudioEmbedding(np.asarray(audio["waveform"], dtype=np.float32), int(audio["sample_rate"]))
    if type_name == "AUDIO":
        video = view.first("VIDEO")
        if isinstance(video, Video) and video.audio is not None:
            return video.audio
        return _audio_placeholder(view)
    if type_name == "VIDEO":
        return _video_placeholder(view)
    if type_name in ("INT", "FLOAT", "BOOLEAN"):
        if type_name == "FLOAT" and output_name.lower() in ("fps", "frame_rate"):
            video = view.first("VIDEO")
            return float(video.fps) if isinstance(video, Video) else 24.0
        return _number_placeholder(view, type_name, output_name)
    if type_name == "STRING":
        return _string_placeholder(view, None)
    if type_name == "SIGMAS":
        steps = max(0, int(view.number("steps") or 20))
        denoise = view.number("denoise")
        top = float(denoise) if denoise is not None else 1.0
        return np.linspace(top, 0.0, steps + 1, dtype=np.float32) if steps and top > 0 else np.zeros(0, np.float32)
    if type_name == "NOISE":
        return Noise(seed=view.seed())
    if type_name == "SAMPLER":
        sampler_name = view.inputs.get("sampler_name")
        return Sampler(str(sampler_name) if isinstance(sampler_name, str) else view.name, view.literals())
    if type_name == "GUIDER":
        conds = view.of_type("CONDITIONING")
        pos_conds: list[Cond] = next((v for n, v in conds if "neg" not in n), [])
        neg_conds: list[Cond] = next((v for n, v in conds if "neg" in n), [])
        cfg = view.number("cfg")
        return Guider(
            model=view.first("MODEL"),
            positive=tuple(pos_conds),
            negative=tuple(neg_conds),
            cfg=cfg if cfg is not None else 1.0,
            kind=view.name,
        )
    if type_name == "SVG":
        return _svg(view)
    if type_name == "MESH":
        return tetrahedron()
    if type_name == "LOSS_MAP":
        steps = max(2, int(view.number("steps") or 16))
        return {"loss": [float(1.0 / (1 + 0.2 * i)) for i in range(steps)]}
    if type_name.endswith("_TASK_ID"):
        return f"preview-{_digest(view.name, view.literals()):08x}"
    return Token(type_name, view.name, view.literals())


# -- derived outputs ----------------------------------------------------------------------------------------


def derive(view: NodeView, type_name: str, value: Any) -> Any:
    """An output of ``type_name`` made from an input of the same type (see the module docstring)."""
    if type_name == "IMAGE":
        images = np.asarray(value, dtype=np.float32)
        size = view.size()
        if size is not None and images.ndim == 4 and (images.shape[2], images.shape[1]) != size:
            images = resize_images(np.ascontiguousarray(images), size[0], size[1], "bilinear")
        return mark(images, view.name)
    if type_name == "MASK":
        mask = np.array(value, dtype=np.float32, copy=True)
        size = view.size()
        if size is not None and mask.ndim >= 2 and (mask.shape[-1], mask.shape[-2]) != size:
            flat = mask.reshape((-1, mask.shape[-2], mask.shape[-1]))[..., None]
            mask = resize_images(np.ascontiguousarray(flat), size[0], size[1], "bilinear")[..., 0]
        return mask
    if type_name == "LATENT" and isinstance(value, dict):
        out = dict(value)
        recipe = recipe_of(value)
        nodes = (*recipe.extras.get("nodes", ()), view.name)
        out["recipe"] = replace(recipe, extras={**recipe.extras, "nodes": nodes})
        return out
    if type_name == "MODEL" and isinstance(value, Model):
        return patch_model(value, view.name, view.literals())
    if type_name == "CONDITIONING" and isinstance(value, list):
        return [c.with_extra(view.name, view.literals()) if isinstance(c, Cond) else c for c in value]
    if type_name == "AUDIO" and isinstance(value, dict):
        return dict(value)
    if type_name == "STRING":
        return _string_placeholder(view, value)
    if type_name == "SIGMAS":
        return np.array(value, dtype=np.float32, copy=True)
    return value


def _source(view: NodeView, outputs: list[str], names: list[str], slot: int) -> tuple[bool, Any]:
    type_name = outputs[slot]
    candidates = view.of_type(type_name)
    if not candidates or type_name == "*":
        return False, None
    by_name = dict(candidates)
    if names[slot] in by_name:
        return True, by_name[names[slot]]
    k = sum(1 for t in outputs[:slot] if t == type_name)
    return True, candidates[k][1] if k < len(candidates) else candidates[0][1]


def generic_outputs(name: str, schema: dict[str, Any], ctx: ExecContext, inputs: dict[str, Any]) -> tuple[Any, ...]:
    """Every output of a generic class for these inputs (derived or placeholder, by declared type)."""
    view = NodeView(name, schema, inputs)
    for (_cls, input_name), folder in _model_inputs(name).items():
        value = inputs.get(input_name)
        if isinstance(value, str):
            resolve(ctx.dirs, folder, value)  # a file that went away since validation fails like ComfyUI
    outputs = [str(t) for t in schema.get("output", [])]
    names = [str(n) for n in schema.get("output_name", outputs)]
    names += outputs[len(names) :]
    results: list[Any] = []
    for slot, type_name in enumerate(outputs):
        found, value = _source(view, outputs, names, slot)
        results.append(derive(view, type_name, value) if found else placeholder(view, ctx, type_name, names[slot]))
    return tuple(results)


def generic_run(name: str, schema: dict[str, Any]) -> RunFn:
    def run(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
        return NodeResult(outputs=generic_outputs(name, schema, ctx, inputs))

    run.__name__ = f"generic_{name}"
    return run


# -- registration -------------------------------------------------------------------------------------------


def _input_files(
    folder: str, suffixes: tuple[str, ...], *, recursive: bool = False
) -> Callable[[WorkerDirs], list[str]]:
    def files(dirs: WorkerDirs) -> list[str]:
        base = dirs.input / folder if folder else dirs.input
        if not base.is_dir():
            return []
        found: Iterable[Path] = base.rglob("*") if recursive else base.iterdir()
        return sorted(
            p.relative_to(dirs.input).as_posix() for p in found if p.is_file() and p.suffix.lower() in suffixes
        )

    return files


# Input-folder combos of generic classes (ComfyUI lists them per request, like the model folders).
INPUT_FILE_COMBOS: dict[tuple[str, str], Callable[[WorkerDirs], list[str]]] = {
    ("Load3D", "model_file"): _input_files("3d", (".gltf", ".glb", ".obj", ".fbx", ".stl"), recursive=True),
    ("Load3DAnimation", "model_file"): _input_files("3d", (".gltf", ".glb", ".fbx"), recursive=True),
    ("OpenAIInputFiles", "file"): _input_files("", (".txt", ".pdf")),
    ("GeminiInputFiles", "file"): _input_files("", (".txt", ".pdf")),
}


def _combos_for(name: str) -> CombosFn | None:
    model_inputs = {input_name: folder for (_c, input_name), folder in _model_inputs(name).items()}
    file_inputs = {input_name: fn for (c, input_name), fn in INPUT_FILE_COMBOS.items() if c == name}
    if not model_inputs and not file_inputs:
        return None

    def combos(dirs: WorkerDirs) -> dict[str, list[str]]:
        lists = {input_name: listed(dirs, folder) for input_name, folder in model_inputs.items()}
        lists.update({input_name: fn(dirs) for input_name, fn in file_inputs.items()})
        return lists

    return combos


def _aspect_ratio(dirs: WorkerDirs, inputs: dict[str, Any]) -> str | bool:
    """FluxProUltraImageNode's validate_inputs (``validate_aspect_ratio`` between 1:4 and 4:1)."""
    value = str(inputs.get("aspect_ratio"))
    numbers = value.split(":")
    if len(numbers) != 2:
        return f"Aspect ratio must be in the format X:Y, such as 16:9, but was {value}."
    try:
        ratio = int(numbers[0]) / int(numbers[1])
    except ValueError:
        return f"Aspect ratio must contain numbers separated by ':', such as 16:9, but was {value}."
    except ZeroDivisionError:
        return "division by zero"
    if ratio < 1 / 4:
        return f"Aspect ratio cannot reduce to any less than 1:4 ({1 / 4}), but was {value} ({ratio})."
    if ratio > 4:
        return f"Aspect ratio cannot reduce to any greater than 4:1 ({4.0}), but was {value} ({ratio})."
    return True


_CAMERA_INPUTS = ("horizontal_movement", "vertical_movement", "pan", "tilt", "roll", "zoom")


def _camera_controls(dirs: WorkerDirs, inputs: dict[str, Any]) -> str | bool:
    """KlingCameraControls' validate_inputs: at least one movement must be non-zero."""
    if any(not math.isclose(float(inputs.get(n) or 0.0), 0.0) for n in _CAMERA_INPUTS):
        return True
    return "Invalid camera control configs: at least one of the values must be non-zero"


# Generic classes with a validate_inputs of their own in ComfyUI 0.3.64 (their inputs skip the built-in checks).
VALIDATORS: dict[str, tuple[frozenset[str], ValidateFn]] = {
    "FluxProUltraImageNode": (frozenset({"aspect_ratio"}), _aspect_ratio),
    "KlingCameraControls": (frozenset(_CAMERA_INPUTS), _camera_controls),
}


def generic_class(name: str, schema: dict[str, Any]) -> NodeClass:
    """The generic implementation of one catalogue class."""
    model_inputs = sorted(_model_inputs(name).items())
    loads = (model_inputs[0][1], model_inputs[0][0][1]) if model_inputs else None
    validated, validate = VALIDATORS.get(name, (frozenset(), None))
    return NodeClass(
        name=name,
        schema=schema,
        run=generic_run(name, schema),
        combos=_combos_for(name),
        loads_model=loads,
        validate_inputs=validate,
        validated_inputs=validated,
        generic=True,
    )


def register_remaining(registry: NodeRegistry | None = None) -> int:
    """Register every catalogue class the registry lacks as a generic class; returns how many were added."""
    target = registry if registry is not None else DEFAULT_REGISTRY
    added = 0
    for name, schema in catalogue().items():
        if name in target:
            continue
        if schema.get("output_node"):
            # Output nodes write files and report them; each has its own implementation (nodes/outputs.py).
            raise RuntimeError(f"output node class {name!r} has no implementation")
        target.register(generic_class(name, schema))
        added += 1
    return added
