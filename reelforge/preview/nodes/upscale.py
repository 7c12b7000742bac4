"""Upscaling: ImageUpscaleWithModel (by the model's factor, Lanczos stand-in) and ImageScaleBy."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from reelforge.preview.nodes.image import resize_images
from reelforge.preview.registry import ExecContext, NodeResult, node
from reelforge.preview.values import UpscaleModel

# ComfyUI's ImageUpscaleWithModel runs the model over 512-pixel tiles overlapping by 32 (halved on OOM).
TILE = 512
OVERLAP = 32


def tiled_scale_steps(width: int, height: int, tile: int = TILE, overlap: int = OVERLAP) -> int:
    """``comfy.utils.get_tiled_scale_steps``: tiles of one image, i.e. progress steps."""
    rows = 1 if height <= tile else math.ceil((height - overlap) / (tile - overlap))
    cols = 1 if width <= tile else math.ceil((width - overlap) / (tile - overlap))
    return rows * cols


@node("ImageUpscaleWithModel")
def image_upscale_with_model(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    """Scale by the model's factor; one ``progress`` step per tile, as ComfyUI's ProgressBar reports them."""
    model: UpscaleModel = inputs["upscale_model"]
    image = np.clip(np.asarray(inputs["image"], dtype=np.float32), 0.0, 1.0)
    scale = max(1, int(getattr(model, "scale", 4) or 4))
    height, width = int(image.shape[1]) * scale, int(image.shape[2]) * scale
    tiles = tiled_scale_steps(int(image.shape[2]), int(image.shape[1]))
    total = tiles * int(image.shape[0])
    out = np.empty((image.shape[0], height, width, image.shape[3]), dtype=np.float32)
    done = 0
    for b in range(image.shape[0]):
        out[b] = resize_images(image[b : b + 1], width, height, "lanczos")[0]
        for _ in range(tiles):  # the stand-in resizes whole images; report its tiles after each one
            done += 1
            ctx.progress(done, total)  # also where an interrupt lands, as in ComfyUI's progress hook
    return NodeResult(outputs=(np.clip(out, 0.0, 1.0).astype(np.float32),))


@node("ImageScaleBy")
def image_scale_by(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    image = np.asarray(inputs["image"], dtype=np.float32)
    scale_by = float(inputs.get("scale_by", 1.0))
    method = str(inputs["upscale_method"])
    width = max(1, round(image.shape[2] * scale_by))
    height = max(1, round(image.shape[1] * scale_by))
    return NodeResult(outputs=(resize_images(image, width, height, method),))
