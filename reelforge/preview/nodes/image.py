"""Image nodes, ComfyUI semantics: EmptyImage, LoadImage, ImageScale, ImageInvert, Save/PreviewImage."""

from __future__ import annotations

import json
import random
from typing import Any

import numpy as np
from PIL import Image, ImageOps, ImageSequence
from PIL.PngImagePlugin import PngInfo

from reelforge.preview.naming import next_output_path
from reelforge.preview.nodes._common import (
    annotated_exists,
    annotated_filepath,
    file_fingerprint,
    list_input_files,
    to_uint8,
)
from reelforge.preview.registry import ExecContext, NodeResult, WorkerDirs, node

# -- EmptyImage -----------------------------------------------------------------------------------------


@node("EmptyImage")
def empty_image(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    width = int(inputs["width"])
    height = int(inputs["height"])
    batch_size = int(inputs.get("batch_size", 1))
    color = int(inputs.get("color", 0))
    rgb = np.array(
        [((color >> 16) & 0xFF) / 0xFF, ((color >> 8) & 0xFF) / 0xFF, (color & 0xFF) / 0xFF], dtype=np.float32
    )
    image = np.empty((batch_size, height, width, 3), dtype=np.float32)
    image[...] = rgb
    return NodeResult(outputs=(image,))


# -- LoadImage ------------------------------------------------------------------------------------------


def _image_combos(dirs: WorkerDirs) -> dict[str, list[str]]:
    return {"image": list_input_files(dirs, ["image"])}


def _validate_image(dirs: WorkerDirs, inputs: dict[str, Any]) -> str | bool:
    image = inputs.get("image")
    if not annotated_exists(dirs, image):
        return f"Invalid image file: {image}"
    return True


@node(
    "LoadImage",
    combos=_image_combos,
    validate_inputs=_validate_image,
    validated_inputs=frozenset({"image"}),
    fingerprint=file_fingerprint("image"),
)
def load_image(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    path = annotated_filepath(ctx.dirs, str(inputs["image"]))
    img = Image.open(path)
    output_images: list[np.ndarray] = []
    output_masks: list[np.ndarray] = []
    w = h = None
    for frame in ImageSequence.Iterator(img):
        frame = ImageOps.exif_transpose(frame) or frame
        if frame.mode == "I":
            frame = frame.point(lambda v: v * (1 / 255))
        rgb = frame.convert("RGB")
        if not output_images:
            w, h = rgb.size
        if rgb.size != (w, h):
            continue
        output_images.append(np.asarray(rgb, dtype=np.float32)[None] / np.float32(255.0))
        if "A" in frame.getbands():
            alpha = np.asarray(frame.getchannel("A"), dtype=np.float32) / np.float32(255.0)
            mask = np.float32(1.0) - alpha
        elif frame.mode == "P" and "transparency" in frame.info:
            alpha = np.asarray(frame.convert("RGBA").getchannel("A"), dtype=np.float32) / np.float32(255.0)
            mask = np.float32(1.0) - alpha
        else:
            mask = np.zeros((64, 64), dtype=np.float32)
        output_masks.append(mask[None])
    if len(output_images) > 1 and img.format not in ("MPO",):
        out_image = np.concatenate(output_images, axis=0)
        try:
            out_mask = np.concatenate(output_masks, axis=0)
        except ValueError:  # mixed alpha / no-alpha frames: torch.cat would fail the same way
            raise RuntimeError("Sizes of tensors must match except in dimension 0") from None
    else:
        out_image, out_mask = output_images[0], output_masks[0]
    return NodeResult(outputs=(out_image, out_mask))


# -- ImageScale -----------------------------------------------------------------------------------------

_RESAMPLE = {
    "nearest-exact": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "area": Image.Resampling.BOX,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


def _center_crop(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """comfy.utils.common_upscale's ``crop="center"``: cut the source to the target aspect ratio."""
    old_height, old_width = image.shape[1], image.shape[2]
    old_aspect = old_width / old_height
    new_aspect = width / height
    x = y = 0
    if old_aspect > new_aspect:
        x = round((old_width - old_width * (new_aspect / old_aspect)) / 2)
    elif old_aspect < new_aspect:
        y = round((old_height - old_height * (old_aspect / new_aspect)) / 2)
    return image[:, y : old_height - y, x : old_width - x, :]


def resize_images(image: np.ndarray, width: int, height: int, method: str) -> np.ndarray:
    """Resize a [B,H,W,C] float batch with Pillow (lanczos through uint8, like ComfyUI)."""
    resample = _RESAMPLE[method]
    out = np.empty((image.shape[0], height, width, image.shape[3]), dtype=np.float32)
    for b in range(image.shape[0]):
        if method == "lanczos" and image.shape[3] in (1, 3, 4):
            src = to_uint8(image[b])  # comfy.utils.lanczos: truncating uint8 round trip
            pil = Image.fromarray(src[..., 0] if image.shape[3] == 1 else src)
            res = np.asarray(pil.resize((width, height), resample=resample), dtype=np.float32) / np.float32(
                255.0
            )
            out[b] = res.reshape(height, width, image.shape[3])
            continue
        for c in range(image.shape[3]):
            channel = Image.fromarray(np.ascontiguousarray(image[b, :, :, c], dtype=np.float32))
            out[b, :, :, c] = np.asarray(channel.resize((width, height), resample=resample), dtype=np.float32)
    return out


@node("ImageScale")
def image_scale(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    image: np.ndarray = inputs["image"]
    method = str(inputs["upscale_method"])
    width = int(inputs["width"])
    height = int(inputs["height"])
    crop = str(inputs.get("crop", "disabled"))
    if width == 0 and height == 0:
        return NodeResult(outputs=(image,))
    if width == 0:
        width = max(1, round(image.shape[2] * height / image.shape[1]))
    elif height == 0:
        height = max(1, round(image.shape[1] * width / image.shape[2]))
    src = _center_crop(image, width, height) if crop == "center" else image
    return NodeResult(outputs=(resize_images(src, width, height, method),))


# -- ImageInvert ----------------------------------------------------------------------------------------


@node("ImageInvert")
def image_invert(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    image = np.asarray(inputs["image"], dtype=np.float32)
    return NodeResult(outputs=(np.float32(1.0) - image,))


# -- SaveImage / PreviewImage ---------------------------------------------------------------------------


def save_images(
    ctx: ExecContext,
    images: np.ndarray,
    filename_prefix: str,
    *,
    kind: str,
    compress_level: int,
) -> NodeResult:
    """ComfyUI's ``SaveImage.save_images``: one PNG per batch item, counter continuing over the batch.

    No ``progress`` events (ComfyUI's save nodes have no progress bar), so no interrupt inside the batch either.
    """
    base = ctx.dirs.for_type(kind)
    assert base is not None
    images = np.asarray(images)
    height, width = int(images.shape[1]), int(images.shape[2])
    results: list[dict[str, Any]] = []
    for batch_number, image in enumerate(images):
        img = Image.fromarray(to_uint8(image))
        metadata = PngInfo()
        if ctx.prompt is not None:
            metadata.add_text("prompt", json.dumps(ctx.prompt))
        if ctx.extra_pnginfo is not None:
            for key in ctx.extra_pnginfo:
                metadata.add_text(key, json.dumps(ctx.extra_pnginfo[key]))
        path, filename, subfolder = next_output_path(
            base, filename_prefix, "png", width=width, height=height, batch_num=batch_number
        )
        img.save(path, pnginfo=metadata, compress_level=compress_level)
        results.append({"filename": filename, "subfolder": subfolder, "type": kind})
    return NodeResult(outputs=(), ui={"images": results})


@node("SaveImage")
def save_image(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    prefix = str(inputs.get("filename_prefix", "ComfyUI"))
    return save_images(ctx, inputs["images"], prefix, kind="output", compress_level=4)


# ComfyUI's alphabet for the temp suffix (sic: 'p' twice, no 'w').
_TEMP_LETTERS = "abcdefghijklmnopqrstupvxyz"


@node("PreviewImage")
def preview_image(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    suffix = "".join(random.choice(_TEMP_LETTERS) for _ in range(5))
    prefix = str(inputs.get("filename_prefix", "ComfyUI")) + "_temp_" + suffix
    return save_images(ctx, inputs["images"], prefix, kind="temp", compress_level=1)
