"""Placeholder video for the preview worker's ``VAEDecode`` of a video latent (``Recipe.kind == "video"``).

``render_video(recipe)`` returns ``[T, H, W, 3]`` float32 frames in 0..1, ``T = recipe.frames``, with motion
that is easy to see and deterministic in the recipe:

* image-to-video (Wan 2.2 TI2V): a slow zoom and pan over the start image (frame 0 is the start image),
  a marker moving across the frame, the prompt and a progress bar; the start image's top band (``CARD_BAND``:
  where the image renderer writes the keyframe's prompt, the scene card of an animatic) stays still and legible;
* first/last frame (Wan FLF2V, ``recipe.end_image`` set): a transition from the start image (frame 0) to the
  end image (last frame), with a gentle zoom that is 1 at both ends;
* talking (Wan S2V, ``recipe.audio`` set): the reference image with a slight head bob, a mouth whose
  opening follows the audio envelope frame by frame, and a level bar. Frame ``i`` shows audio time
  ``i / fps``, ``fps = recipe.extras["fps"]`` (16, Wan S2V's rate, unless the node said otherwise).

Without a start image the background is a gradient whose colours come from the prompt and seed.
"""

from __future__ import annotations

import math
import textwrap
import zlib
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from reelforge.preview.values import AudioEmbedding, Recipe

DEFAULT_TALKING_FPS = 16.0
CARD_BAND = 0.24  # the top fraction of the start image kept unzoomed in image-to-video (the prompt panel)


def fit_image(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """``[H,W,C]`` or ``[B,H,W,C]`` (first item) float image -> ``[height, width, 3]``, center-cropped to
    the target aspect ratio and resized bilinearly (``comfy.utils.common_upscale(..., "bilinear", "center")``).
    """
    data = np.asarray(image, dtype=np.float32)
    if data.ndim == 4:
        data = data[0]
    if data.ndim == 2:
        data = data[..., None]
    if data.shape[-1] == 1:
        data = np.repeat(data, 3, axis=-1)
    data = data[..., :3]
    old_h, old_w = data.shape[0], data.shape[1]
    old_aspect, new_aspect = old_w / old_h, width / height
    x = y = 0
    if old_aspect > new_aspect:
        x = round((old_w - old_w * (new_aspect / old_aspect)) / 2)
    elif old_aspect < new_aspect:
        y = round((old_h - old_h * (old_aspect / new_aspect)) / 2)
    data = data[y : old_h - y, x : old_w - x]
    if data.shape[0] == height and data.shape[1] == width:
        return np.ascontiguousarray(np.clip(data, 0.0, 1.0))
    out = np.empty((height, width, 3), dtype=np.float32)
    for c in range(3):
        channel = Image.fromarray(np.ascontiguousarray(data[..., c]), mode="F")
        out[..., c] = np.asarray(channel.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)
    return np.clip(out, 0.0, 1.0)


def _seed(recipe: Recipe) -> int:
    return zlib.crc32(f"{recipe.seed}\x1f{recipe.prompt}\x1f{recipe.negative}".encode())


def _background(recipe: Recipe, width: int, height: int) -> np.ndarray:
    rng = np.random.default_rng(_seed(recipe))
    c0, c1 = rng.uniform(0.1, 0.9, 3), rng.uniform(0.1, 0.9, 3)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    g = (xx / max(1, width - 1) * 0.6 + yy / max(1, height - 1) * 0.4)[..., None]
    img = c0[None, None, :] * (1 - g) + c1[None, None, :] * g
    cx, cy, r = rng.uniform(0.3, 0.7) * width, rng.uniform(0.3, 0.7) * height, 0.25 * min(width, height)
    blob = np.exp(-(((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r)))[..., None]
    img = img * (1 - 0.5 * blob) + rng.uniform(0.2, 1.0, 3)[None, None, :] * 0.5 * blob
    out: np.ndarray = np.clip(img, 0, 1).astype(np.float32)
    return out


def _to_pil(image: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.asarray(image) * 255.0 + 0.5, 0, 255).astype(np.uint8))


def _zoom_pan(img: Image.Image, zoom: float, pan_x: float, pan_y: float) -> np.ndarray:
    """Zoom ``img`` by ``zoom`` around its centre shifted by (pan_x, pan_y) pixels; float32 ``[H,W,3]``."""
    w, h = img.size
    if abs(zoom - 1.0) < 1e-9 and pan_x == 0 and pan_y == 0:
        return np.asarray(img, dtype=np.float32) / 255.0
    inv = 1.0 / zoom
    max_x, max_y = (w - w * inv) / 2, (h - h * inv) / 2  # stay inside the source
    pan_x, pan_y = max(-max_x, min(max_x, pan_x)), max(-max_y, min(max_y, pan_y))
    data = (inv, 0.0, w / 2 - w * inv / 2 + pan_x, 0.0, inv, h / 2 - h * inv / 2 + pan_y)
    out = img.transform((w, h), Image.Transform.AFFINE, data, resample=Image.Resampling.BILINEAR)
    return np.asarray(out, dtype=np.float32) / 255.0


def audio_envelope(audio: AudioEmbedding | dict[str, Any], frames: int, fps: float) -> np.ndarray:
    """Loudness per video frame (0..1): RMS of the audio in ``[i/fps, (i+1)/fps)``, normalised to its peak."""
    if isinstance(audio, AudioEmbedding):
        waveform, rate = np.asarray(audio.waveform, dtype=np.float32), int(audio.sample_rate)
    else:
        waveform, rate = np.asarray(audio["waveform"], dtype=np.float32), int(audio["sample_rate"])
    if waveform.ndim == 3:  # [B, C, T]: the first batch item
        waveform = waveform[0]
    mono = waveform.mean(axis=0) if waveform.ndim == 2 else waveform
    env = np.zeros(frames, dtype=np.float32)
    for i in range(frames):
        lo, hi = int(i / fps * rate), int((i + 1) / fps * rate)
        seg = mono[lo:hi]
        if seg.size:
            env[i] = float(np.sqrt(np.mean(seg.astype(np.float64) ** 2)))
    peak = float(env.max()) if frames else 0.0
    return env / peak if peak > 1e-6 else env


def _caption(recipe: Recipe, width: int) -> list[str]:
    text = " ".join(recipe.prompt.split()) or "(no prompt)"
    return textwrap.wrap(text, width=max(8, width // 7))[:2]


def _draw_overlay(
    frame: np.ndarray, recipe: Recipe, index: int, total: int, font: Any, mouth: float | None
) -> np.ndarray:
    img = _to_pil(frame)
    h, w = frame.shape[0], frame.shape[1]
    draw = ImageDraw.Draw(img)
    a = index / (total - 1) if total > 1 else 0.0
    # Moving marker: left to right along a gentle wave.
    radius = max(2, min(w, h) // 16)
    mx = w * (0.12 + 0.76 * a)
    my = h * (0.2 + 0.08 * math.sin(2 * math.pi * a))
    draw.ellipse((mx - radius, my - radius, mx + radius, my + radius), fill=(255, 230, 40), outline=(0, 0, 0))
    # Progress bar along the bottom edge.
    bar_h = max(1, h // 40)
    draw.rectangle((0, h - bar_h, int(w * (index + 1) / max(1, total)), h), fill=(255, 255, 255))
    if mouth is not None:
        mw, cx, cy = w * 0.2, w * 0.5, h * 0.68
        open_h = h * (0.015 + 0.12 * mouth)
        draw.ellipse((cx - mw / 2, cy - open_h / 2, cx + mw / 2, cy + open_h / 2), fill=(120, 10, 20))
        draw.rectangle((0, h - 3 * bar_h, int(w * mouth), h - 2 * bar_h), fill=(40, 220, 90))
    lines = _caption(recipe, w)
    top = h - bar_h - 4 - 11 * len(lines)  # above the progress bar: the top band shows the keyframe's own text
    for line_no, line in enumerate(lines):
        y = top + line_no * 11
        draw.text((3, y + 1), line, fill=(0, 0, 0), font=font)
        draw.text((2, y), line, fill=(255, 255, 255), font=font)
    return np.asarray(img, dtype=np.float32) / 255.0


def render_video(recipe: Recipe) -> np.ndarray:
    """Frames ``[recipe.frames, height, width, 3]`` float32 in 0..1 (see the module docstring)."""
    width = int(recipe.width) if recipe.width > 0 else 64
    height = int(recipe.height) if recipe.height > 0 else 64
    total = max(1, int(recipe.frames))
    if recipe.start_image is not None:
        start = fit_image(recipe.start_image, width, height)
    else:
        start = _background(recipe, width, height)
    end = fit_image(recipe.end_image, width, height) if recipe.end_image is not None else None
    start_pil = _to_pil(start)
    end_pil = _to_pil(end) if end is not None else None
    font = ImageFont.load_default()
    rng = np.random.default_rng(_seed(recipe))
    direction = 1.0 if rng.uniform() < 0.5 else -1.0

    envelope: np.ndarray | None = None
    if recipe.audio is not None:
        fps = float(recipe.extras.get("fps", DEFAULT_TALKING_FPS))
        envelope = audio_envelope(recipe.audio, total, fps)

    out = np.empty((total, height, width, 3), dtype=np.float32)
    for i in range(total):
        a = i / (total - 1) if total > 1 else 0.0
        mouth: float | None = None
        if end_pil is not None:
            zoom = 1.0 + 0.06 * math.sin(math.pi * a)
            blend = a * a * (3 - 2 * a)  # smoothstep: exactly start at 0 and end at 1
            frame = (1 - blend) * _zoom_pan(start_pil, zoom, 0.0, 0.0) + blend * _zoom_pan(end_pil, zoom, 0.0, 0.0)
        elif envelope is not None:
            bob = math.sin(2 * math.pi * i / 16.0)
            frame = _zoom_pan(start_pil, 1.03, 0.0, 0.01 * height * bob)
            mouth = float(envelope[i])
        else:
            zoom = 1.0 + 0.15 * a
            frame = _zoom_pan(start_pil, zoom, direction * 0.05 * width * a, 0.03 * height * math.sin(math.pi * a))
            if recipe.start_image is not None:
                band = max(1, round(CARD_BAND * height))
                frame[:band] = start[:band]
        out[i] = _draw_overlay(frame, recipe, i, total, font, mouth)
    return out
