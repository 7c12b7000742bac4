"""Upscaling: ImageUpscaleWithModel (by the model's factor, Lanczos stand-in) and ImageScaleBy."""

from __future__ import annotations

from typing import Any

import numpy as np

from reelforge.preview.nodes.image import resize_images
from reelforge.preview.registry import ExecContext, NodeResult, node
from reelforge.preview.values import UpscaleModel


@node("ImageUpscaleWithModel")
def image_upscale_with_model(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    model: UpscaleModel = inputs["upscale_model"]
    image = np.asarray(inputs["image"], dtype=np.float32)
    scale = max(1, int(getattr(model, "scale", 4) or 4))
    height, width = int(image.shape[1]) * scale, int(image.shape[2]) * scale
    out = resize_images(np.clip(image, 0.0, 1.0), width, height, "lanczos")
    return NodeResult(outputs=(np.clip(out, 0.0, 1.0).astype(np.float32),))


@node("ImageScaleBy")
def image_scale_by(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    image = np.asarray(inputs["image"], dtype=np.float32)
    scale_by = float(inputs.get("scale_by", 1.0))
    method = str(inputs["upscale_method"])
    width = max(1, round(image.shape[2] * scale_by))
    height = max(1, round(image.shape[1] * scale_by))
    return NodeResult(outputs=(resize_images(image, width, height, method),))
