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
- The custom-sampler chain: NOISE = ``Noise``, SAMPLER = ``Sampler``, GUIDER = ``Guider``, SIGMAS = a 1-D float32
  numpy array (ComfyUI: a tensor of ``steps + 1`` sigmas).
- SVG = ``Svg``, MESH = ``Mesh``; every other type (HOOKS, STYLE_MODEL, LATENT_OPERATION, ...) = ``Token``, a
  record of the node that made it and its widget values.

Identity (docs/identity.md): a LoRA loaded by ``LoraLoader`` adds its ``Identity`` to ``Model.identities``; the
image renderer draws the subject of the picture from it. An identity is either *learned* (a small RGB "card",
the mean subject region of the images a LoRA was trained on, kept in the LoRA file's metadata under
``IDENTITY_METADATA_KEY``) or *generated* from its ``key`` (a face whose features come from that hash).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

IDENTITY_METADATA_KEY = "reelforge_identity"
CARD_CELLS = 32  # a learned card is CARD_CELLS x CARD_CELLS RGB pixels


@dataclass(frozen=True)
class Identity:
    """Who the subject of a picture is: a learned card (``card`` non-empty) or a face generated from ``key``.

    ``key`` is a sha256 hex: of the learned card's bytes, or of whatever the generated face stands for (a LoRA
    file's content, a prompt and seed). Bytes, not an array, so the record stays hashable and comparable.
    """

    key: str
    card: bytes = b""  # uint8 RGB, CARD_CELLS x CARD_CELLS x 3, row-major; empty = generated from key

    @classmethod
    def learned(cls, card: np.ndarray) -> Identity:
        """An identity from a [CARD_CELLS, CARD_CELLS, 3] float (0..1) or uint8 card."""
        a = np.asarray(card)
        if a.shape != (CARD_CELLS, CARD_CELLS, 3):
            raise ValueError(f"an identity card is {CARD_CELLS}x{CARD_CELLS}x3, got {a.shape}")
        if a.dtype != np.uint8:
            a = np.clip(np.asarray(a, dtype=np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        data = np.ascontiguousarray(a).tobytes()
        return cls(key=hashlib.sha256(data).hexdigest(), card=data)

    def card_array(self) -> np.ndarray | None:
        """The learned card as [CARD_CELLS, CARD_CELLS, 3] float32 in 0..1, None for a generated identity."""
        if not self.card:
            return None
        a = np.frombuffer(self.card, dtype=np.uint8).reshape(CARD_CELLS, CARD_CELLS, 3)
        out: np.ndarray = a.astype(np.float32) / np.float32(255.0)
        return out


def identity_metadata(identity: Identity) -> dict[str, str]:
    """The safetensors metadata entry that carries a learned identity (what the preview trainer writes)."""
    if not identity.card:
        raise ValueError("only a learned identity can be stored in a LoRA file")
    return {IDENTITY_METADATA_KEY: f"card{CARD_CELLS}:" + base64.b64encode(identity.card).decode("ascii")}


def identity_from_metadata(metadata: Mapping[str, str] | None) -> Identity | None:
    """The learned identity in a LoRA file's metadata; None when absent or malformed (the file still loads)."""
    value = (metadata or {}).get(IDENTITY_METADATA_KEY)
    prefix = f"card{CARD_CELLS}:"
    if not isinstance(value, str) or not value.startswith(prefix):
        return None
    try:
        data = base64.b64decode(value[len(prefix) :], validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(data) != CARD_CELLS * CARD_CELLS * 3:
        return None
    return Identity(key=hashlib.sha256(data).hexdigest(), card=data)


@dataclass(frozen=True)
class Model:
    """A loaded diffusion model: its file, family, LoRAs applied and patches (e.g. sampling shift)."""

    name: str
    family: str = ""  # flux | sdxl | wan22_5b | wan21_flf2v | wan22_s2v | ace_step | ...
    loras: tuple[tuple[str, float], ...] = ()
    patches: tuple[tuple[str, Any], ...] = ()
    ipadapter: tuple[tuple[str, float], ...] = ()  # (reference image fingerprint, weight)
    identities: tuple[tuple[Identity, float], ...] = ()  # (what a LoRA draws, its model strength)

    def with_lora(self, lora: str, strength: float, identity: Identity | None = None) -> Model:
        identities = self.identities if identity is None else (*self.identities, (identity, strength))
        return replace(self, loras=(*self.loras, (lora, strength)), identities=identities)


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
class Noise:
    """NOISE: ``RandomNoise`` (a seed) or ``DisableNoise`` (``enabled`` False)."""

    seed: int = 0
    enabled: bool = True


@dataclass(frozen=True)
class Sampler:
    """SAMPLER: the sampler's name (``KSamplerSelect``'s ``sampler_name``) and the options of a sampler node."""

    name: str
    options: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class Guider:
    """GUIDER: the model and conditioning a custom sampler denoises with (``BasicGuider``, ``CFGGuider``...)."""

    model: Model | None
    positive: tuple[Cond, ...] = ()
    negative: tuple[Cond, ...] = ()
    cfg: float = 1.0
    kind: str = "basic"


@dataclass(frozen=True)
class Svg:
    """SVG: one SVG document (UTF-8 bytes) per batch item."""

    data: tuple[bytes, ...]


@dataclass(frozen=True)
class Mesh:
    """MESH: vertices ``[B, V, 3]`` float32 and triangle faces ``[B, F, 3]`` int32, as ComfyUI's ``MESH``."""

    vertices: np.ndarray
    faces: np.ndarray


@dataclass(frozen=True)
class Token:
    """A value of a type the preview has no record for (HOOKS, STYLE_MODEL, ...): its type, the class that made
    it and that node's widget values, so downstream placeholders can tell what the graph meant."""

    type: str
    node: str
    recipe: tuple[tuple[str, Any], ...] = ()


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
    """The recipe of a LATENT value; a latent from elsewhere (e.g. LoadLatent) gets a plain recipe of its shape:
    ``[B,C,T,H,W]`` a video (4x temporal compression), ``[B,C,L]`` or ``"type": "audio"`` audio, else an image."""
    recipe = value.get("recipe")
    if isinstance(recipe, Recipe):
        return recipe
    samples = np.asarray(value.get("samples"))
    if value.get("type") == "audio" or samples.ndim == 3:
        return Recipe(kind="audio")
    h, w = (samples.shape[-2] * 8, samples.shape[-1] * 8) if samples.ndim >= 2 else (64, 64)
    if samples.ndim == 5:
        return Recipe(kind="video", width=int(w), height=int(h), frames=(int(samples.shape[2]) - 1) * 4 + 1)
    return Recipe(kind="image", width=int(w), height=int(h))
