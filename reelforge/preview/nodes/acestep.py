"""ACE-Step music nodes: TextEncodeAceStepAudio, EmptyAceStepLatentAudio, VAEDecodeAudio.

ACE-Step's latent is ``[B, 8, 16, int(seconds * 44100 / 512 / 8)]``; its VAE (DCAE + vocoder) decodes
4096 stereo samples at 44.1 kHz per latent step, so the decoded length is the requested seconds rounded
down to 4096 samples (at most ~93 ms short), exactly as on a GPU worker. The KSampler copies the
conditioning's ``tags`` / ``lyrics`` into the recipe; ``VAEDecodeAudio`` renders beats at the tags' tempo.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from reelforge.preview.registry import ExecContext, NodeResult, node
from reelforge.preview.render.audio import MUSIC_SAMPLE_RATE, render_music
from reelforge.preview.values import Cond, Recipe, latent, recipe_of

ACE_SAMPLES_PER_STEP = 512 * 8  # 4096 audio samples per latent step
STABLE_AUDIO_SAMPLES_PER_STEP = 2048  # Stable Audio's latent [B, 64, L]: 2048 samples per step


def ace_latent_length(seconds: float) -> int:
    """ComfyUI's ``EmptyAceStepLatentAudio``: ``int(seconds * 44100 / 512 / 8)``."""
    return int(float(seconds) * 44100 / 512 / 8)


@node("TextEncodeAceStepAudio")
def text_encode_ace_step_audio(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    if inputs.get("clip") is None:
        raise RuntimeError(
            "ERROR: clip input is invalid: None\n\nIf the clip is from a checkpoint loader node your checkpoint "
            "does not contain a valid clip or text encoder model."
        )
    tags, lyrics = str(inputs.get("tags", "")), str(inputs.get("lyrics", ""))
    strength = float(inputs.get("lyrics_strength", 1.0))
    cond = Cond(
        text=tags,
        extras=(("tags", tags), ("lyrics", lyrics), ("lyrics_strength", strength), ("clip", inputs["clip"])),
    )
    return NodeResult(outputs=([cond],))


@node("EmptyAceStepLatentAudio")
def empty_ace_step_latent_audio(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    seconds = float(inputs["seconds"])
    batch = int(inputs.get("batch_size", 1))
    samples = np.zeros((batch, 8, 16, ace_latent_length(seconds)), dtype=np.float32)
    out = latent(samples, Recipe(kind="audio", seconds=seconds, extras={"batch_size": batch}))
    out["type"] = "audio"
    return NodeResult(outputs=(out,))


def decode_music(samples: dict[str, Any]) -> dict[str, Any]:
    """AUDIO for an audio LATENT: stereo 44.1 kHz, one item per batch; 4096 samples per latent step for
    ACE-Step's ``[B,8,16,L]``, 2048 for Stable Audio's ``[B,64,L]``."""
    recipe = recipe_of(samples)
    array = np.asarray(samples["samples"])
    if recipe.kind != "audio" or array.ndim not in (3, 4):
        raise RuntimeError(
            "VAEDecodeAudio needs an audio latent ([B,8,16,L] or [B,64,L]), "
            f"got a {recipe.kind} latent of shape {list(array.shape)}"
        )
    per_step = ACE_SAMPLES_PER_STEP if array.ndim == 4 else STABLE_AUDIO_SAMPLES_PER_STEP
    if recipe.seconds <= 0:
        recipe = replace(recipe, seconds=array.shape[-1] * per_step / MUSIC_SAMPLE_RATE)
    length = int(array.shape[-1]) * per_step
    tags = recipe.tags or recipe.prompt
    items = [
        render_music(recipe.seconds, tags, recipe.seed + b, MUSIC_SAMPLE_RATE, samples=length, lyrics=recipe.lyrics)[
            "waveform"
        ][0]
        for b in range(int(array.shape[0]))
    ]
    waveform = np.stack(items).astype(np.float32)
    # ComfyUI's VAEDecodeAudio: divide by max(1, 5 * std) per item.
    std = waveform.std(axis=(1, 2), keepdims=True) * 5.0
    waveform = waveform / np.maximum(std, 1.0)
    return {"waveform": waveform.astype(np.float32), "sample_rate": MUSIC_SAMPLE_RATE}


@node("VAEDecodeAudio")
def vae_decode_audio(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    return NodeResult(outputs=(decode_music(inputs["samples"]),))
