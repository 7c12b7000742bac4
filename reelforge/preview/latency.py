"""Latency profiles: how long the preview worker pretends each node takes.

Spec strings:

* ``instant``: no added delay (only the real CPU time of the node).
* ``gpu``: per-class seconds modelled on a real GPU worker (table below); classes missing from the table
  cost ``DEFAULT_SECONDS``. A model loader costs ``load`` seconds the first time a model file is loaded
  and ``reuse`` seconds while the same file stays loaded (tracked per class, like ComfyUI keeping the last
  loaded model in memory). Sampler-like nodes cost a per-step time times their ``steps`` input.
* ``gpu:SCALE``: ``gpu`` with every time multiplied by SCALE (e.g. ``gpu:0.1`` for fast tests).
* ``fixed:SECONDS``: every executed prompt takes SECONDS in total, split evenly over the nodes that actually
  execute (a fully cached prompt takes no time); used by the utilization benchmark.

The node's own CPU time counts towards its modelled time: the executor pads only the remainder.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from reelforge.preview.registry import NodeClass

DEFAULT_SECONDS = 0.01

# Seconds per execution on a mid-range GPU worker (measured orders of magnitude, rounded).
GPU_SECONDS: dict[str, float] = {
    "EmptyImage": 0.001,
    "LoadImage": 0.01,
    "ImageScale": 0.02,
    "ImageInvert": 0.001,
    "ImageToMask": 0.001,
    "MaskToImage": 0.001,
    "SolidMask": 0.001,
    "SaveImage": 0.05,
    "PreviewImage": 0.03,
    "LoadAudio": 0.05,
    "SaveAudio": 0.08,
    "CreateVideo": 0.005,
    "SaveVideo": 0.4,
    "EmptyLatentImage": 0.001,
    "CLIPTextEncode": 0.03,
    "VAEDecode": 0.3,  # one 1024x1024 image; video latents: VIDEO_DECODE_SECONDS per latent frame
    "VAEEncode": 0.15,
    "SaveLoRANode": 0.2,
    "FluxGuidance": 0.001,
    "ConditioningZeroOut": 0.001,
    "ControlNetApplyAdvanced": 0.01,
    "CLIPVisionEncode": 0.08,
    "ModelSamplingSD3": 0.001,
    "ModelSamplingAuraFlow": 0.001,
    "EmptySD3LatentImage": 0.001,
    "ImageUpscaleWithModel": 1.2,  # 4x ESRGAN on a 1024x1024 image
    "ImageScaleBy": 0.05,
    "LoadImageTextSetFromFolderNode": 0.3,
    "SaveAnimatedWEBP": 0.3,
    "SaveAnimatedPNG": 0.3,
    "SaveWEBM": 0.6,
    "SaveAudioMP3": 0.1,
    "SaveAudioOpus": 0.1,
    "PreviewAudio": 0.08,
    "SaveLatent": 0.02,
    "VAEDecodeTiled": 0.4,
    "VAEEncodeTiled": 0.2,
    "EmptyLatentAudio": 0.001,
}
VIDEO_DECODE_SECONDS = 0.5
GPU_SECONDS.update(
    {
        "EmptyAceStepLatentAudio": 0.001,
        "TextEncodeAceStepAudio": 0.05,
        "WanSoundImageToVideo": 0.6,  # VAE-encodes the reference image (+ motion frames)
        "AudioEncoderEncode": 0.3,  # wav2vec2 over the clip
        "IPAdapterAdvanced": 0.12,  # CLIP vision encode of the reference + attention patch
    }
)


def _num(inputs: dict[str, Any], key: str, default: float) -> float:
    value = inputs.get(key, default)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default


def _wan22_latent_seconds(inputs: dict[str, Any]) -> float:
    """One start frame through the Wan 2.2 VAE; nothing to encode without a start image."""
    return 0.3 if inputs.get("start_image") is not None else 0.001


def _wan_flf_seconds(inputs: dict[str, Any]) -> float:
    """The whole gray video with first/last frame goes through the Wan 2.1 VAE: ~2.5 s at 832x480x81."""
    size = _num(inputs, "width", 832) * _num(inputs, "height", 480) * _num(inputs, "length", 81)
    return 2.5 * size / (832 * 480 * 81)


def _ace_decode_seconds(inputs: dict[str, Any]) -> float:
    """ACE-Step DCAE + vocoder: ~0.5 s per minute of music (4096 samples per latent step)."""
    shape = _latent_shape(inputs.get("samples"))
    return 0.05 + (0.5 / 60 * shape[-1] * 4096 / 44100 if shape else 0.0)


def _tts_seconds(text_key: str) -> Callable[[dict[str, Any]], float]:
    """Qwen3-TTS 1.7B at ~0.3x realtime; speech is ~0.07 s per character (150 wpm)."""
    return lambda inputs: 0.3 + 0.3 * 0.07 * len(str(inputs.get(text_key, "")))


# Classes whose time depends on their inputs (video size and length, audio length): name -> seconds.
GPU_INPUT_SECONDS: dict[str, Callable[[dict[str, Any]], float]] = {
    "Wan22ImageToVideoLatent": _wan22_latent_seconds,
    "WanFirstLastFrameToVideo": _wan_flf_seconds,
    "VAEDecodeAudio": _ace_decode_seconds,
    "FB_Qwen3TTSVoiceDesign": _tts_seconds("text"),
    "FB_Qwen3TTSVoiceClone": _tts_seconds("target_text"),
}

# Model loaders: (first load of a file, reuse of the file already loaded).
GPU_MODEL_SECONDS: dict[str, tuple[float, float]] = {
    "CheckpointLoaderSimple": (6.0, 0.001),  # SDXL 6.9 GB
    "UNETLoader": (15.0, 0.001),  # Flux.1-dev / Wan 14B
    "CLIPLoader": (5.0, 0.001),  # umt5-xxl
    "DualCLIPLoader": (6.0, 0.001),  # t5xxl + clip_l
    "CLIPVisionLoader": (1.0, 0.001),
    "VAELoader": (0.5, 0.001),
    "LoraLoader": (0.4, 0.001),
    "LoraLoaderModelOnly": (0.3, 0.001),
    "ControlNetLoader": (0.8, 0.001),
    "UpscaleModelLoader": (0.3, 0.001),
    "AudioEncoderLoader": (1.5, 0.001),  # wav2vec2-large, ~1.2 GB
    "IPAdapterUnifiedLoader": (2.5, 0.001),  # CLIP-ViT-H + IP-Adapter weights
    "TripleCLIPLoader": (7.0, 0.001),  # clip_g + clip_l + t5xxl
    "QuadrupleCLIPLoader": (9.0, 0.001),
}
DEFAULT_MODEL_SECONDS = (1.0, 0.001)

# Sampler-like classes: seconds per step, read from their ``steps`` input.
GPU_STEP_SECONDS: dict[str, float] = {
    "KSampler": 0.06,
    "KSamplerAdvanced": 0.06,
    "SamplerCustom": 0.06,
    "SamplerCustomAdvanced": 0.06,
    "TrainLoraNode": 0.5,
}
# KSampler / KSamplerAdvanced per step by model family (``Model.family`` of the ``model`` input):
# (seconds, pixels of the reference size or 0 = no size scaling); time scales with the latent's area.
GPU_FAMILY_STEP_SECONDS: dict[str, tuple[float, int]] = {
    "sd15": (0.05, 512 * 512),
    "sdxl": (0.15, 1024 * 1024),
    "sd3": (0.3, 1024 * 1024),
    "flux": (0.4, 1024 * 1024),
    "wan22_5b": (2.5, 0),
    "wan": (6.0, 0),
    "wan21_flf2v": (9.0, 0),
    "wan22_s2v": (9.0, 0),
    "ace_step": (0.05, 0),
}

FAMILY_STEP_CLASSES = frozenset({"KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced"})

# Classes that report ProgressBar updates (and so can be interrupted between steps). TrainLoraNode has
# steps but no progress hook in ComfyUI, so it is left out on purpose.
PROGRESS_CLASSES = frozenset({"KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced"})


@dataclass(frozen=True)
class NodeTiming:
    """Modelled time of one node execution; ``steps`` > 0 means progress events and interrupt checks."""

    seconds: float
    steps: int = 0


def _steps_input(inputs: dict[str, Any]) -> int:
    """A sampler's steps: its ``steps`` input, or ``len(sigmas) - 1`` for the custom samplers."""
    value = inputs.get("steps")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        sigmas = inputs.get("sigmas")
        shape = getattr(sigmas, "shape", None)
        return max(0, int(shape[0]) - 1) if shape else 0
    return max(0, int(value))


def _sampler_model(inputs: dict[str, Any]) -> Any:
    """The model a sampler runs: its ``model`` input, or the guider's (SamplerCustomAdvanced)."""
    model = inputs.get("model")
    return model if model is not None else getattr(inputs.get("guider"), "model", None)


@dataclass
class LatencyProfile:
    """A parsed latency profile; ``plan`` gives the modelled time of one node execution."""

    kind: str  # instant | gpu | fixed
    scale: float = 1.0
    prompt_seconds: float = 0.0  # for ``fixed``
    _last_model: dict[str, str] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def spec(self) -> str:
        if self.kind == "gpu" and self.scale != 1.0:
            return f"gpu:{self.scale:g}"
        if self.kind == "fixed":
            return f"fixed:{self.prompt_seconds:g}"
        return self.kind

    def reset(self) -> None:
        """Forget loaded models (a restarted worker starts with empty VRAM)."""
        with self._lock:
            self._last_model.clear()

    def plan(self, node_class: NodeClass, inputs: dict[str, Any], executed_nodes: int) -> NodeTiming:
        """Time for ``node_class`` run on ``inputs``; ``executed_nodes`` = nodes that run in this prompt."""
        name = node_class.latency_key or node_class.name
        steps = _steps_input(inputs) if name in PROGRESS_CLASSES else 0
        if self.kind == "instant":
            return NodeTiming(0.0, steps)
        if self.kind == "fixed":
            return NodeTiming(self.prompt_seconds / max(1, executed_nodes), steps)
        return NodeTiming(self._gpu_seconds(node_class, name, inputs) * self.scale, steps)

    def _gpu_seconds(self, node_class: NodeClass, name: str, inputs: dict[str, Any]) -> float:
        if name in GPU_STEP_SECONDS:
            return _step_seconds(name, inputs) * max(1, _steps_input(inputs))
        if name == "VAEDecode":
            shape = _latent_shape(inputs.get("samples"))
            if len(shape) == 5:
                return VIDEO_DECODE_SECONDS * shape[2]
        if name in GPU_INPUT_SECONDS:
            return GPU_INPUT_SECONDS[name](inputs)
        if node_class.loads_model is not None or name in GPU_MODEL_SECONDS:
            load, reuse = GPU_MODEL_SECONDS.get(name, DEFAULT_MODEL_SECONDS)
            model = ""
            if node_class.loads_model is not None:
                model = str(inputs.get(node_class.loads_model[1], ""))
            with self._lock:
                fresh = self._last_model.get(name) != model
                self._last_model[name] = model
            return load if fresh else reuse
        return GPU_SECONDS.get(name, _category_seconds(node_class))


# Classes without their own figure: partner API nodes wait for a remote service (seconds to minutes).
API_IMAGE_SECONDS = 8.0
API_VIDEO_SECONDS = 60.0
API_OTHER_SECONDS = 5.0


def _category_seconds(node_class: NodeClass) -> float:
    """Time of a class without its own figure: an API node by what it returns, else ``DEFAULT_SECONDS``."""
    if not node_class.schema.get("api_node"):
        return DEFAULT_SECONDS
    outputs = set(node_class.output_types)
    if "VIDEO" in outputs:
        return API_VIDEO_SECONDS
    if "IMAGE" in outputs:
        return API_IMAGE_SECONDS
    return API_OTHER_SECONDS


def _latent_shape(value: Any) -> tuple[int, ...]:
    samples = value.get("samples") if isinstance(value, dict) else None
    return tuple(int(n) for n in getattr(samples, "shape", ()))


def _step_seconds(name: str, inputs: dict[str, Any]) -> float:
    """Per-step time; samplers use their model family's figure, scaled by batch and latent area."""
    family = getattr(_sampler_model(inputs), "family", "")
    per_family = GPU_FAMILY_STEP_SECONDS.get(family) if name in FAMILY_STEP_CLASSES else None
    if per_family is None:
        return GPU_STEP_SECONDS[name]
    seconds, reference_pixels = per_family
    shape = _latent_shape(inputs.get("latent_image"))
    if reference_pixels and len(shape) == 4:
        return seconds * shape[0] * shape[2] * shape[3] * 64 / reference_pixels
    return seconds


def parse_latency(spec: str | LatencyProfile | None) -> LatencyProfile:
    """Parse ``instant`` | ``gpu`` | ``gpu:SCALE`` | ``fixed:SECONDS``; raise ValueError otherwise."""
    if isinstance(spec, LatencyProfile):
        return spec
    text = (spec or "instant").strip().lower()
    kind, _, arg = text.partition(":")
    try:
        if kind == "instant" and not arg:
            return LatencyProfile("instant")
        if kind == "gpu":
            scale = float(arg) if arg else 1.0
            if not 0 <= scale < math.inf:  # also refuses nan
                raise ValueError
            return LatencyProfile("gpu", scale=scale)
        if kind == "fixed" and arg:
            seconds = float(arg)
            if not 0 <= seconds < math.inf:
                raise ValueError
            return LatencyProfile("fixed", prompt_seconds=seconds)
    except ValueError:
        pass
    raise ValueError(f"bad latency profile {spec!r}: use instant, gpu, gpu:SCALE or fixed:SECONDS")
