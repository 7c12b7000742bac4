"""The model families' own classes: the custom-sampler chain (Flux, SD 3.5, Wan), multi-encoder loaders,
ControlNet variants, conditioning combination and Stable Audio latents.

``SamplerCustomAdvanced`` and ``SamplerCustom`` fill the latent's recipe like ``KSampler`` (prompt, negative,
seed, steps, model with its patches and LoRAs, guidance, control), reading them from the chain's records:
NOISE (``values.Noise``: the seed), GUIDER (``values.Guider``: model and conditioning), SAMPLER
(``values.Sampler``) and SIGMAS (a 1-D array; ``steps = len(sigmas) - 1``). The generic placeholders of the
other schedulers and samplers (``generic.py``) make the same records, so any scheduler feeds these samplers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from reelforge.preview.modelfiles import resolve
from reelforge.preview.nodes.loaders import folder_combos
from reelforge.preview.nodes.sampling import _sample, controlnet_apply_advanced
from reelforge.preview.registry import ExecContext, NodeResult, node
from reelforge.preview.values import Clip, Cond, Guider, Noise, Recipe, Sampler, latent

# -- noise, guiders, sigmas ---------------------------------------------------------------------------------


@node("DisableNoise")
def disable_noise(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    return NodeResult(outputs=(Noise(seed=0, enabled=False),))


@node("DualCFGGuider")
def dual_cfg_guider(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    conds = [*(inputs.get("cond1") or []), *(inputs.get("cond2") or [])]
    guider = Guider(
        model=inputs.get("model"),
        positive=tuple(conds),
        negative=tuple(inputs.get("negative") or []),
        cfg=float(inputs.get("cfg_conds", 8.0)),
        kind="DualCFGGuider",
    )
    return NodeResult(outputs=(guider,))


@node("SplitSigmas")
def split_sigmas(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    sigmas = np.asarray(inputs["sigmas"], dtype=np.float32)
    step = int(inputs.get("step", 0))
    return NodeResult(outputs=(sigmas[: step + 1].copy(), sigmas[step:].copy()))


def sigma_steps(sigmas: Any) -> int:
    """Sampling steps of a SIGMAS value (one fewer than its length)."""
    return max(0, int(np.asarray(sigmas).reshape(-1).shape[0]) - 1)


def _denoise(sigmas: Any) -> float:
    """How much of the schedule the sigmas cover: the preview's schedules start at the denoise they were
    made for (a full schedule at 1), so a split or partial schedule keeps the start image's share."""
    flat = np.asarray(sigmas, dtype=np.float32).reshape(-1)
    return float(np.clip(flat[0], 0.0, 1.0)) if flat.size else 0.0


def _custom(
    inputs: dict[str, Any],
    *,
    model: Any,
    positive: list[Cond],
    negative: list[Cond],
    seed: int,
    settings: dict[str, Any],
) -> NodeResult:
    sigmas = inputs["sigmas"]
    sampler = inputs.get("sampler")
    settings = {**settings, "sampler": sampler.name if isinstance(sampler, Sampler) else str(sampler)}
    result = _sample(
        {"latent_image": inputs["latent_image"], "model": model, "positive": positive, "negative": negative},
        seed,
        sigma_steps(sigmas),
        _denoise(sigmas),
        settings,
    )
    out = result.outputs[0]
    return NodeResult(outputs=(out, dict(out)))  # (output, denoised_output): the same picture on the preview


@node("SamplerCustomAdvanced")
def sampler_custom_advanced(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    noise = inputs.get("noise")
    guider = inputs.get("guider")
    if not isinstance(guider, Guider):
        raise TypeError(f"SamplerCustomAdvanced needs a GUIDER, got {type(guider).__name__}")
    seed = noise.seed if isinstance(noise, Noise) else 0
    return _custom(
        inputs,
        model=guider.model,
        positive=list(guider.positive),
        negative=list(guider.negative),
        seed=seed,
        settings={"cfg": guider.cfg, "guider": guider.kind,
                  "add_noise": "enable" if not isinstance(noise, Noise) or noise.enabled else "disable"},
    )


@node("SamplerCustom")
def sampler_custom(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    return _custom(
        inputs,
        model=inputs.get("model"),
        positive=list(inputs.get("positive") or []),
        negative=list(inputs.get("negative") or []),
        seed=int(inputs.get("noise_seed", 0)),
        settings={"cfg": float(inputs.get("cfg", 8.0)),
                  "add_noise": "enable" if inputs.get("add_noise", True) else "disable"},
    )


# -- text encoders of SD 3.5 and HiDream ----------------------------------------------------------------------


def _clip_loader(names: tuple[str, ...], clip_type: str, ctx: ExecContext) -> NodeResult:
    for name in names:
        resolve(ctx.dirs, "text_encoders", name)
    return NodeResult(outputs=(Clip(names, type=clip_type),))


@node(
    "TripleCLIPLoader",
    combos=folder_combos(clip_name1="text_encoders", clip_name2="text_encoders", clip_name3="text_encoders"),
    loads_model=("text_encoders", "clip_name3"),
)
def triple_clip_loader(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    names = tuple(str(inputs[f"clip_name{i}"]) for i in (1, 2, 3))
    return _clip_loader(names, "sd3", ctx)


@node(
    "QuadrupleCLIPLoader",
    combos=folder_combos(
        clip_name1="text_encoders", clip_name2="text_encoders", clip_name3="text_encoders", clip_name4="text_encoders"
    ),
    loads_model=("text_encoders", "clip_name4"),
)
def quadruple_clip_loader(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    names = tuple(str(inputs[f"clip_name{i}"]) for i in (1, 2, 3, 4))
    return _clip_loader(names, "hidream", ctx)


# -- conditioning and ControlNet ----------------------------------------------------------------------------


@node("ConditioningCombine")
def conditioning_combine(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    return NodeResult(outputs=([*inputs["conditioning_1"], *inputs["conditioning_2"]],))


@node("ControlNetApplySD3")
def controlnet_apply_sd3(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    return controlnet_apply_advanced(ctx, inputs)  # the VAE only encodes the hint on a GPU worker


@node("ControlNetApply")
def controlnet_apply(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    conditioning: list[Cond] = inputs["conditioning"]
    both = controlnet_apply_advanced(ctx, {**inputs, "positive": conditioning, "negative": []})
    return NodeResult(outputs=(both.outputs[0],))


# -- Stable Audio -------------------------------------------------------------------------------------------

STABLE_AUDIO_SAMPLE_RATE = 44100
STABLE_AUDIO_SAMPLES_PER_STEP = 2048  # Stable Audio's VAE: 2048 samples per latent step


def stable_audio_length(seconds: float) -> int:
    """ComfyUI's ``EmptyLatentAudio``: ``round((seconds * 44100 / 2048) / 2) * 2`` latent steps."""
    return round((float(seconds) * STABLE_AUDIO_SAMPLE_RATE / STABLE_AUDIO_SAMPLES_PER_STEP) / 2) * 2


@node("EmptyLatentAudio")
def empty_latent_audio(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    seconds = float(inputs.get("seconds", 47.6))
    batch = int(inputs.get("batch_size", 1))
    samples = np.zeros((batch, 64, stable_audio_length(seconds)), dtype=np.float32)
    out = latent(samples, Recipe(kind="audio", seconds=seconds, extras={"batch_size": batch}))
    out["type"] = "audio"
    return NodeResult(outputs=(out,))
