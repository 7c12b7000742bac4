"""Conditioning, latents, samplers and the VAE: the nodes between the loaders and the decoded picture.

Conditioning is ``list[Cond]`` and a LATENT carries a ``Recipe`` (``values.py``). ``KSampler`` does not
denoise anything: it writes prompt, negative prompt, seed, steps, denoise, model (with LoRAs and patches),
guidance and control into the latent's recipe, and ``VAEDecode`` renders the recipe
(``render/image.py`` for images, ``render/video.py`` for video latents). Per-step progress and interrupts
of the samplers come from the executor (``latency.PROGRESS_CLASSES``): it reports ``steps`` progress events
after the node body, checking the interrupt flag at every step, like ComfyUI's sampler callback.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from reelforge.preview.registry import ExecContext, NodeResult, node
from reelforge.preview.values import (
    Clip,
    Cond,
    ControlNet,
    Model,
    Recipe,
    Vae,
    VisionEmbedding,
    latent,
    recipe_of,
)

_CLIP_INVALID = (
    "ERROR: clip input is invalid: None\n\nIf the clip is from a checkpoint loader node your checkpoint does not "
    "contain a valid clip or text encoder model."
)


@dataclass(frozen=True)
class ControlApplied:
    """A ControlNet attached to a conditioning entry (``Cond.get("control")`` holds a tuple of these)."""

    name: str
    strength: float
    start_percent: float
    end_percent: float
    image: np.ndarray  # [H, W, C] float32, the control hint (e.g. a pose skeleton)


# -- conditioning -----------------------------------------------------------------------------------------


def encode_text(clip: Clip | None, text: str) -> list[Cond]:
    """What CLIPTextEncode returns for ``text``: one Cond that remembers the encoder and its LoRAs."""
    if clip is None:
        raise RuntimeError(_CLIP_INVALID)
    return [Cond(text, extras=(("clip", clip),))]


@node("CLIPTextEncode")
def clip_text_encode(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    return NodeResult(outputs=(encode_text(inputs.get("clip"), str(inputs.get("text", ""))),))


@node("FluxGuidance")
def flux_guidance(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    guidance = float(inputs.get("guidance", 3.5))
    conds: list[Cond] = inputs["conditioning"]
    return NodeResult(outputs=([c.with_extra("guidance", guidance) for c in conds],))


@node("ConditioningZeroOut")
def conditioning_zero_out(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    conds: list[Cond] = inputs["conditioning"]
    return NodeResult(outputs=([replace(c, text="").with_extra("zeroed", True) for c in conds],))


def _first_image(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image, dtype=np.float32)
    return a[0] if a.ndim == 4 else a


@node("ControlNetApplyAdvanced")
def controlnet_apply_advanced(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    positive: list[Cond] = inputs["positive"]
    negative: list[Cond] = inputs["negative"]
    strength = float(inputs.get("strength", 1.0))
    if strength == 0:  # ComfyUI: nothing attached
        return NodeResult(outputs=(positive, negative))
    control_net: ControlNet | None = inputs.get("control_net")
    if control_net is None:
        raise RuntimeError("ERROR: controlnet is None. You probably used a broken controlnet model file.")
    applied = ControlApplied(
        name=control_net.name,
        strength=strength,
        start_percent=float(inputs.get("start_percent", 0.0)),
        end_percent=float(inputs.get("end_percent", 1.0)),
        image=_first_image(inputs["image"]),
    )

    def attach(conds: list[Cond]) -> list[Cond]:
        return [c.with_extra("control", (*(c.get("control") or ()), applied)) for c in conds]

    return NodeResult(outputs=(attach(positive), attach(negative)))


@node("CLIPVisionEncode")
def clip_vision_encode(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    if inputs.get("clip_vision") is None:
        raise RuntimeError(
            "ERROR: clip vision model is invalid: None\n\nIf the clip vision is from a checkpoint loader node "
            "your checkpoint does not contain a valid clip vision model."
        )
    return NodeResult(outputs=(VisionEmbedding(image=np.asarray(inputs["image"], dtype=np.float32)),))


# -- model patches --------------------------------------------------------------------------------------


def patch_model(model: Model, key: str, value: Any) -> Model:
    """A clone of ``model`` with object patch ``key`` set (a later patch of the same key replaces it)."""
    return replace(model, patches=(*((k, v) for k, v in model.patches if k != key), (key, value)))


@node("ModelSamplingSD3")
def model_sampling_sd3(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    shift = float(inputs.get("shift", 3.0))
    return NodeResult(outputs=(patch_model(inputs["model"], "model_sampling", ("sd3", shift)),))


@node("ModelSamplingAuraFlow")
def model_sampling_aura_flow(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    shift = float(inputs.get("shift", 1.73))
    return NodeResult(outputs=(patch_model(inputs["model"], "model_sampling", ("auraflow", shift)),))


# -- latents --------------------------------------------------------------------------------------------


def empty_image_latent(width: int, height: int, batch_size: int, channels: int) -> dict[str, Any]:
    samples = np.zeros((batch_size, channels, height // 8, width // 8), dtype=np.float32)
    return latent(samples, Recipe(kind="image", width=(width // 8) * 8, height=(height // 8) * 8))


@node("EmptyLatentImage")
def empty_latent_image(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    width, height = int(inputs["width"]), int(inputs["height"])
    return NodeResult(outputs=(empty_image_latent(width, height, int(inputs.get("batch_size", 1)), 4),))


@node("EmptySD3LatentImage")
def empty_sd3_latent_image(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    width, height = int(inputs["width"]), int(inputs["height"])
    return NodeResult(outputs=(empty_image_latent(width, height, int(inputs.get("batch_size", 1)), 16),))


def vae_channels(vae: Vae) -> tuple[int, int]:
    """(latent channels, downscale) of a VAE by its file name: SD/SDXL 4, Flux/SD3/Wan 2.1 16, Wan 2.2 48."""
    lower = vae.name.lower()
    if "wan2.2" in lower or "wan2_2" in lower:
        return 48, 16
    if lower.split("/")[-1] in ("ae.safetensors", "ae.sft") or any(k in lower for k in ("flux", "sd3", "wan")):
        return 16, 8
    return 4, 8


@node("VAEEncode")
def vae_encode(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    pixels = np.asarray(inputs["pixels"], dtype=np.float32)[..., :3]
    vae: Vae = inputs["vae"]
    channels, down = vae_channels(vae)
    batch, height, width = pixels.shape[0], pixels.shape[1], pixels.shape[2]
    # ComfyUI crops the pixels to a multiple of the VAE's downscale ratio before encoding.
    h, w = (height // down) * down, (width // down) * down
    cropped = pixels[:, :h, :w, :]
    samples = np.zeros((batch, channels, h // down, w // down), dtype=np.float32)
    recipe = Recipe(
        kind="image",
        width=w,
        height=h,
        start_image=cropped[0],
        extras={"start_images": cropped, "vae": vae.name},
    )
    return NodeResult(outputs=(latent(samples, recipe),))


# -- samplers -------------------------------------------------------------------------------------------


def _texts(conds: list[Cond] | None) -> str:
    return " | ".join(c.text for c in conds or [] if c.text.strip())


def _controls(conds: list[Cond] | None) -> list[ControlApplied]:
    out: list[ControlApplied] = []
    for c in conds or []:
        for applied in c.get("control") or ():
            if isinstance(applied, ControlApplied) and applied not in out:
                out.append(applied)
    return out


def sampled_recipe(
    recipe: Recipe,
    *,
    model: Model | None,
    positive: list[Cond] | None,
    negative: list[Cond] | None,
    seed: int,
    steps: int,
    denoise: float,
    settings: dict[str, Any],
) -> Recipe:
    """The recipe after sampling: prompt, seed, model... filled in; kind, size, frames, audio kept."""
    extras = dict(recipe.extras)
    extras.update(settings)
    tags, lyrics = recipe.tags, recipe.lyrics
    first = positive[0] if positive else None
    if first is not None:
        guidance = first.get("guidance")
        if guidance is not None:
            extras["guidance"] = float(guidance)
        clip = first.get("clip")
        if isinstance(clip, Clip) and clip.loras:
            extras["clip_loras"] = ",".join(f"{n}:{s:g}" for n, s in clip.loras)
        tags = first.get("tags") if isinstance(first.get("tags"), str) else tags
        lyrics = first.get("lyrics") if isinstance(first.get("lyrics"), str) else lyrics
    controls = _controls(positive)
    if controls:
        extras["control_image"] = controls[0].image
    return replace(
        recipe,
        prompt=_texts(positive),
        negative=_texts(negative),
        seed=int(seed),
        steps=int(steps),
        denoise=float(denoise),
        model=model,
        control=tuple((c.name, c.strength) for c in controls),
        tags=tags,
        lyrics=lyrics,
        extras=extras,
    )


def _sampled_samples(samples: np.ndarray, seed: int) -> np.ndarray:
    """Deterministic stand-in for the denoised latent (same shape and dtype as ComfyUI's)."""
    key = int.from_bytes(hashlib.sha256(f"{seed}:{samples.shape}".encode()).digest()[:8], "little")
    out: np.ndarray = np.random.default_rng(key).standard_normal(samples.shape, dtype=np.float32)
    return out


def _sample(inputs: dict[str, Any], seed: int, steps: int, denoise: float, settings: dict[str, Any]) -> NodeResult:
    latent_image: dict[str, Any] = inputs["latent_image"]
    recipe = sampled_recipe(
        recipe_of(latent_image),
        model=inputs.get("model"),
        positive=inputs.get("positive"),
        negative=inputs.get("negative"),
        seed=seed,
        steps=steps,
        denoise=denoise,
        settings=settings,
    )
    out = dict(latent_image)  # ComfyUI: latent.copy() with new samples (noise_mask, batch_index kept)
    out["samples"] = _sampled_samples(np.asarray(latent_image["samples"]), seed)
    out["recipe"] = recipe
    return NodeResult(outputs=(out,))


@node("KSampler")
def ksampler(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    settings = {
        "cfg": float(inputs.get("cfg", 8.0)),
        "sampler": str(inputs.get("sampler_name", "euler")),
        "scheduler": str(inputs.get("scheduler", "normal")),
    }
    return _sample(
        inputs, int(inputs["seed"]), int(inputs["steps"]), float(inputs.get("denoise", 1.0)), settings
    )


@node("KSamplerAdvanced")
def ksampler_advanced(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    steps = int(inputs["steps"])
    start = int(inputs.get("start_at_step", 0))
    end = min(int(inputs.get("end_at_step", 10000)), steps)
    denoise = max(0.0, (end - start) / steps) if steps else 0.0
    settings = {
        "cfg": float(inputs.get("cfg", 8.0)),
        "sampler": str(inputs.get("sampler_name", "euler")),
        "scheduler": str(inputs.get("scheduler", "normal")),
        "add_noise": str(inputs.get("add_noise", "enable")),
        "leftover_noise": str(inputs.get("return_with_leftover_noise", "disable")),
    }
    return _sample(inputs, int(inputs["noise_seed"]), steps, min(1.0, denoise), settings)


# -- decoding -------------------------------------------------------------------------------------------


def decode(samples: dict[str, Any]) -> np.ndarray:
    """IMAGE batch for a LATENT: [B,H,W,3] for image latents, [T,H,W,3] frames for a video latent."""
    recipe = recipe_of(samples)
    if recipe.kind == "video":
        from reelforge.preview.render.video import render_video  # written alongside; imported when used

        frames: np.ndarray = np.asarray(render_video(recipe), dtype=np.float32)
        return frames
    if recipe.kind == "audio":
        raise RuntimeError("VAEDecode got an audio latent: decode it with VAEDecodeAudio")
    from reelforge.preview.render.image import render_image

    array = np.asarray(samples["samples"])
    if not recipe.width or not recipe.height:
        recipe = replace(recipe, width=int(array.shape[-1]) * 8, height=int(array.shape[-2]) * 8)
    batch = int(array.shape[0]) if array.ndim >= 3 else 1
    return np.stack([render_image(recipe, b) for b in range(max(1, batch))]).astype(np.float32)


@node("VAEDecode")
def vae_decode(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    return NodeResult(outputs=(decode(inputs["samples"]),))
