"""Placeholder values that flow between the preview worker's model-based nodes.

Real ComfyUI passes torch modules and tensors; the preview worker passes these small records instead, so
that a decoder at the end of a graph knows what the graph "meant" (prompt, seed, size, frames, start image,
audio, LoRAs) and can render a placeholder that shows it. Shapes of LATENT ``samples`` follow ComfyUI's
(image ``[B,C,H/8,W/8]``, video ``[B,C,T',H/8,W/8]``, audio ``[B,8,16,L]``) so nodes that only look at shapes
behave the same.

Contract between node modules (``nodes/*.py``) and renderers (``render/*.py``):
- MODEL = ``Model``, CLIP = ``Clip``, VAE = ``Vae``, CLIP_VISION = ``ClipVision``, CONTROL_NET = ``ControlNet``,
  AUDIO_ENCODER = ``AudioEncoder``, UPSCALE_MODEL = ``UpscaleModel``, LORA_MODEL = ``LoraWeights``.
- CONDITIONING = ``list[Cond]`` (ComfyUI: list of [tensor, dict]); ``Cond.text`` is the prompt.
- LATENT = ``dict`` with ``samples`` (numpy array of the real shape) and ``recipe`` (``Recipe``).
- CLIP_VISION_OUTPUT = ``VisionEmbedding``; AUDIO_ENCODER_OUTPUT = ``AudioEmbedding``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np


@dataclass(frozen=True)
class Model:
    """A loaded diffusion model: its file, family, LoRAs applied and patches (e.g. sampling shift)."""

    name: str
    family: str = ""  # flux | sdxl | wan22_5b | wan21_flf2v | wan22_s2v | ace_step | ...
    loras: tuple[tuple[str, float], ...] = ()
    patches: tuple[tuple[str, Any], ...] = ()
    ipadapter: tuple[tuple[str, float], ...] = ()  # (reference image fingerprint, weight)

    def with_lora(self, lora: str, strength: float) -> Model:
        return replace(self, loras=(*self.loras, (lora, strength)))


@dataclass(frozen=True)
class Clip:
    names: tuple[str, ...]
    type: str = ""
    loras: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Vae:
    name: str


@dataclass(frozen=True)
class ClipVision:
    name: str


@dataclass(frozen=True)
class ControlNet:
    name: str


@dataclass(frozen=True)
class AudioEncoder:
    name: str


@dataclass(frozen=True)
class UpscaleModel:
    name: str
    scale: int = 4


@dataclass(frozen=True)
class VisionEmbedding:
    """CLIP_VISION_OUTPUT: keeps the image it was computed from."""

    image: np.ndarray


@dataclass(frozen=True)
class AudioEmbedding:
    """AUDIO_ENCODER_OUTPUT: keeps the audio it was computed from."""

    waveform: np.ndarray  # [B, C, T]
    sample_rate: int


@dataclass(frozen=True)
class Cond:
    """One CONDITIONING entry: the prompt and what was attached to it (guidance, control, images)."""

    text: str
    extras: tuple[tuple[str, Any], ...] = ()

    def get(self, key: str, default: Any = None) -> Any:
        return next((v for k, v in self.extras if k == key), default)

    def with_extra(self, key: str, value: Any) -> Cond:
        return replace(self, extras=(*((k, v) for k, v in self.extras if k != key), (key, value)))


@dataclass(frozen=True)
class Recipe:
    """What a latent stands for; the decoder renders from it."""

    kind: Literal["image", "video", "audio"]
    width: int = 0
    height: int = 0
    frames: int = 1  # video frames after decoding
    seconds: float = 0.0  # audio length
    prompt: str = ""
    negative: str = ""
    seed: int = 0
    steps: int = 0
    denoise: float = 1.0
    model: Model | None = None
    start_image: np.ndarray | None = None  # [H, W, C] float32, for img2img / i2v / flf2v / s2v
    end_image: np.ndarray | None = None
    audio: AudioEmbedding | None = None  # speech driving a talking video
    control: tuple[tuple[str, float], ...] = ()  # (control net name, strength)
    tags: str = ""  # music tags (ACE-Step), e.g. "pop, 120 bpm"
    lyrics: str = ""
    extras: dict[str, Any] = field(default_factory=dict)


def latent(samples: np.ndarray, recipe: Recipe) -> dict[str, Any]:
    """A LATENT value."""
    return {"samples": samples, "recipe": recipe}


def recipe_of(value: dict[str, Any]) -> Recipe:
    """The recipe of a LATENT value; a latent from elsewhere (e.g. LoadLatent) becomes a plain image recipe."""
    recipe = value.get("recipe")
    if isinstance(recipe, Recipe):
        return recipe
    samples = np.asarray(value.get("samples"))
    h, w = (samples.shape[-2] * 8, samples.shape[-1] * 8) if samples.ndim >= 2 else (64, 64)
    return Recipe(kind="image", width=int(w), height=int(h))
