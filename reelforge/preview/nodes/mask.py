"""Mask nodes: ImageToMask, MaskToImage, SolidMask (ComfyUI semantics)."""

from __future__ import annotations

from typing import Any

import numpy as np

from reelforge.preview.registry import ExecContext, NodeResult, node

_CHANNELS = ["red", "green", "blue", "alpha"]


@node("ImageToMask")
def image_to_mask(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    image = np.asarray(inputs["image"], dtype=np.float32)
    index = _CHANNELS.index(str(inputs["channel"]))
    size = image.shape[3]
    if index >= size:
        # torch's wording (ComfyUI indexes a tensor), as captured from the real server
        raise IndexError(f"index {index} is out of bounds for dimension 3 with size {size}")
    return NodeResult(outputs=(image[:, :, :, index].copy(),))


@node("MaskToImage")
def mask_to_image(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    mask = np.asarray(inputs["mask"], dtype=np.float32)
    flat = mask.reshape((-1, mask.shape[-2], mask.shape[-1]))
    return NodeResult(outputs=(np.repeat(flat[..., None], 3, axis=-1),))


@node("SolidMask")
def solid_mask(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    value = float(inputs["value"])
    width = int(inputs["width"])
    height = int(inputs["height"])
    return NodeResult(outputs=(np.full((1, height, width), value, dtype=np.float32),))
