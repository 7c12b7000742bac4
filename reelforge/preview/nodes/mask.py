"""Mask nodes: ImageToMask, MaskToImage, SolidMask, MaskComposite (ComfyUI semantics)."""

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


_LOGICAL = {"and": np.logical_and, "or": np.logical_or, "xor": np.logical_xor}


@node("MaskComposite")
def mask_composite(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    """ComfyUI's ``MaskComposite.combine``: ``source`` placed at (x, y) on a copy of ``destination`` (clipped to it),
    combined by ``operation`` inside that rectangle only, the whole result clamped to 0..1."""
    destination = np.asarray(inputs["destination"], dtype=np.float32)
    output = destination.reshape((-1, destination.shape[-2], destination.shape[-1])).copy()
    source = np.asarray(inputs["source"], dtype=np.float32)
    source = source.reshape((-1, source.shape[-2], source.shape[-1]))
    left, top = int(inputs["x"]), int(inputs["y"])
    right = min(left + source.shape[-1], output.shape[-1])
    bottom = min(top + source.shape[-2], output.shape[-2])
    part = source[:, : bottom - top, : right - left]
    region = output[:, top:bottom, left:right]
    operation = str(inputs["operation"])
    if operation == "multiply":
        combined = region * part
    elif operation == "add":
        combined = region + part
    elif operation == "subtract":
        combined = region - part
    else:  # and / or / xor: on the rounded values, as booleans (torch rounds half to even, like numpy)
        combined = _LOGICAL[operation](np.round(region) != 0, np.round(part) != 0).astype(np.float32)
    output[:, top:bottom, left:right] = combined
    return NodeResult(outputs=(np.clip(output, 0.0, 1.0),))
