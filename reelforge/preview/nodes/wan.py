"""Wan video nodes: Wan 2.2 TI2V latent, Wan 2.1 first/last-frame, Wan 2.2 sound-to-video, audio encoder.

Each returns a LATENT of ComfyUI's real shape whose ``Recipe`` (kind ``video``) carries what the decoder
needs: size, frame count, start/end image, driving audio. ``frames`` is what Wan's VAE decodes from the
latent's ``(length - 1) // 4 + 1`` time steps: ``((length - 1) // 4) * 4 + 1``, i.e. ``length`` itself for
the 4n+1 lengths the UI offers (``step: 4`` from 1). The conditioning outputs carry the same attachments as
ComfyUI's (``concat_latent_image`` / ``clip_vision_output`` / ``audio_embed`` ...), as placeholder values.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from reelforge.preview.modelfiles import listed, resolve
from reelforge.preview.registry import ExecContext, NodeResult, WorkerDirs, node
from reelforge.preview.render.video import DEFAULT_TALKING_FPS, fit_image
from reelforge.preview.values import (
    AudioEmbedding,
    AudioEncoder,
    Cond,
    Recipe,
    VisionEmbedding,
    latent,
)


def latent_steps(length: int) -> int:
    """Time steps of a Wan latent for ``length`` video frames (4x temporal compression, first frame alone)."""
    return (int(length) - 1) // 4 + 1


def decoded_frames(length: int) -> int:
    """Frames Wan's VAE decodes for a latent made for ``length`` frames (4n+1)."""
    return (latent_steps(length) - 1) * 4 + 1


def _texts(conds: Any) -> str:
    if isinstance(conds, list):
        return " ".join(c.text for c in conds if isinstance(c, Cond) and c.text)
    return ""


def _attach(conds: Any, values: dict[str, Any]) -> list[Cond]:
    """``node_helpers.conditioning_set_values``: every entry gets the values (replacing same keys)."""
    out: list[Cond] = []
    for c in conds if isinstance(conds, list) else []:
        if isinstance(c, Cond):
            for key, value in values.items():
                c = c.with_extra(key, value)
        out.append(c)
    return out


def _frame(image: Any, index: int, width: int, height: int) -> np.ndarray | None:
    """One frame of an IMAGE batch, fitted to the video size (``common_upscale`` bilinear, center crop)."""
    if image is None:
        return None
    batch = np.asarray(image, dtype=np.float32)
    if batch.ndim == 3:
        batch = batch[None]
    return fit_image(batch[index], width, height)


# -- Wan 2.2 TI2V 5B --------------------------------------------------------------------------------------


@node("Wan22ImageToVideoLatent")
def wan22_image_to_video_latent(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    width, height = int(inputs["width"]), int(inputs["height"])
    length, batch = int(inputs["length"]), int(inputs.get("batch_size", 1))
    steps = latent_steps(length)
    samples = np.zeros((batch, 48, steps, height // 16, width // 16), dtype=np.float32)
    start = _frame(inputs.get("start_image"), 0, width, height)
    recipe = Recipe(
        kind="video",
        width=width,
        height=height,
        frames=decoded_frames(length),
        start_image=start,
        extras={"mode": "ti2v", "batch_size": batch},
    )
    out = latent(samples, recipe)
    if start is not None:  # the first latent step is the encoded start image, kept by the sampler
        mask = np.ones((batch, 1, steps, height // 16, width // 16), dtype=np.float32)
        mask[:, :, :1] = 0.0
        out["noise_mask"] = mask
    return NodeResult(outputs=(out,))


# -- Wan 2.1 FLF2V ----------------------------------------------------------------------------------------


@node("WanFirstLastFrameToVideo")
def wan_first_last_frame_to_video(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    width, height = int(inputs["width"]), int(inputs["height"])
    length, batch = int(inputs["length"]), int(inputs.get("batch_size", 1))
    samples = np.zeros((batch, 16, latent_steps(length), height // 8, width // 8), dtype=np.float32)
    start = _frame(inputs.get("start_image"), 0, width, height)
    end = _frame(inputs.get("end_image"), -1, width, height)  # ComfyUI places end_image[-length:] last
    values: dict[str, Any] = {"concat_latent_image": ("flf2v", start is not None, end is not None)}
    vision = [
        v
        for v in (inputs.get("clip_vision_start_image"), inputs.get("clip_vision_end_image"))
        if isinstance(v, VisionEmbedding)
    ]
    if vision:  # ComfyUI concatenates the two outputs' hidden states; here: both images when they fit
        shapes = {np.asarray(v.image).shape[1:] for v in vision}
        values["clip_vision_output"] = (
            VisionEmbedding(np.concatenate([np.asarray(v.image) for v in vision])) if len(shapes) == 1 else vision[0]
        )
    positive, negative = _attach(inputs["positive"], values), _attach(inputs["negative"], values)
    recipe = Recipe(
        kind="video",
        width=width,
        height=height,
        frames=decoded_frames(length),
        prompt=_texts(positive),
        negative=_texts(negative),
        start_image=start,
        end_image=end,
        extras={"mode": "flf2v", "batch_size": batch},
    )
    return NodeResult(outputs=(positive, negative, latent(samples, recipe)))


# -- Wan 2.2 S2V ------------------------------------------------------------------------------------------


@node("WanSoundImageToVideo")
def wan_sound_image_to_video(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    width, height = int(inputs["width"]), int(inputs["height"])
    length, batch = int(inputs["length"]), int(inputs.get("batch_size", 1))
    samples = np.zeros((batch, 16, latent_steps(length), height // 8, width // 8), dtype=np.float32)
    ref = _frame(inputs.get("ref_image"), 0, width, height)
    audio = inputs.get("audio_encoder_output")
    embedding = audio if isinstance(audio, AudioEmbedding) else None
    values: dict[str, Any] = {}
    if embedding is not None:
        values["audio_embed"] = embedding
    if ref is not None:
        values["reference_latents"] = ("ref_image", ref.shape)
    if inputs.get("control_video") is not None:
        values["control_video"] = np.asarray(inputs["control_video"]).shape
    positive, negative = _attach(inputs["positive"], values), _attach(inputs["negative"], values)
    recipe = Recipe(
        kind="video",
        width=width,
        height=height,
        frames=decoded_frames(length),
        prompt=_texts(positive),
        negative=_texts(negative),
        start_image=ref,
        audio=embedding,
        extras={"mode": "s2v", "batch_size": batch, "fps": DEFAULT_TALKING_FPS},
    )
    return NodeResult(outputs=(positive, negative, latent(samples, recipe)))


# -- audio encoder (wav2vec2 for S2V) ---------------------------------------------------------------------


def _audio_encoder_combos(dirs: WorkerDirs) -> dict[str, list[str]]:
    return {"audio_encoder_name": listed(dirs, "audio_encoders")}


@node(
    "AudioEncoderLoader",
    combos=_audio_encoder_combos,
    loads_model=("audio_encoders", "audio_encoder_name"),
)
def audio_encoder_loader(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    name = str(inputs["audio_encoder_name"])
    resolve(ctx.dirs, "audio_encoders", name)
    return NodeResult(outputs=(AudioEncoder(name),))


@node("AudioEncoderEncode")
def audio_encoder_encode(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    if not isinstance(inputs.get("audio_encoder"), AudioEncoder):
        raise RuntimeError("AudioEncoderEncode needs an AUDIO_ENCODER from AudioEncoderLoader")
    audio = inputs["audio"]
    waveform = np.asarray(audio["waveform"], dtype=np.float32)
    return NodeResult(outputs=(AudioEmbedding(waveform=waveform, sample_rate=int(audio["sample_rate"])),))
