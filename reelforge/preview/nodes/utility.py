"""Weight-free core classes whose result a graph depends on (sizes, batches, durations, strings), as ComfyUI
computes them: image batch/crop/pad/flip/rotate/scale, masks, latent batches, audio editing, video
components, the string nodes, the image/mask/video/latent loaders, and the list-rebatching nodes.

The generic implementation (``generic.py``) would keep a picture's size or pass a string through; these
classes change sizes, frame counts, durations or text, so they follow ComfyUI's code (``comfy_extras`` in
0.3.64) instead.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import replace
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from reelforge.media.ffmpeg import decode_audio, run_ffmpeg
from reelforge.media.probe import MediaProbeError, probe
from reelforge.preview.nodes._common import (
    annotated_exists,
    annotated_filepath,
    file_fingerprint,
    list_input_files,
)
from reelforge.preview.nodes.audio import load_audio
from reelforge.preview.nodes.image import _center_crop, _validate_image, load_image, resize_images
from reelforge.preview.nodes.training import input_subfolders, load_dataset_images
from reelforge.preview.registry import ExecContext, NodeResult, Video, WorkerDirs, node
from reelforge.preview.values import Recipe, recipe_of

# -- images ---------------------------------------------------------------------------------------------------


def common_upscale(image: np.ndarray, width: int, height: int, method: str, crop: str) -> np.ndarray:
    """``comfy.utils.common_upscale`` on ``[B,H,W,C]``: optional center crop, then a resize."""
    src = _center_crop(image, width, height) if crop == "center" else image
    method = "nearest-exact" if method == "nearest" else method
    return resize_images(np.ascontiguousarray(src, dtype=np.float32), width, height, method)


@node("ImageBatch")
def image_batch(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    image1 = np.asarray(inputs["image1"], dtype=np.float32)
    image2 = np.asarray(inputs["image2"], dtype=np.float32)
    if image1.shape[1:] != image2.shape[1:]:
        image2 = common_upscale(image2, int(image1.shape[2]), int(image1.shape[1]), "bilinear", "center")
    return NodeResult(outputs=(np.concatenate([image1, image2], axis=0),))


@node("ImageFromBatch")
def image_from_batch(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    image = np.asarray(inputs["image"], dtype=np.float32)
    index = min(int(image.shape[0]) - 1, int(inputs.get("batch_index", 0)))
    length = min(int(image.shape[0]) - index, int(inputs.get("length", 1)))
    return NodeResult(outputs=(image[index : index + length].copy(),))


@node("RepeatImageBatch")
def repeat_image_batch(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    image = np.asarray(inputs["image"], dtype=np.float32)
    return NodeResult(outputs=(np.tile(image, (int(inputs.get("amount", 1)), 1, 1, 1)),))


@node("ImageCrop")
def image_crop(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    image = np.asarray(inputs["image"], dtype=np.float32)
    width = min(int(image.shape[2]), int(inputs.get("width", 512)))
    height = min(int(image.shape[1]), int(inputs.get("height", 512)))
    x = min(int(inputs.get("x", 0)), int(image.shape[2]) - 1)
    y = min(int(inputs.get("y", 0)), int(image.shape[1]) - 1)
    return NodeResult(outputs=(image[:, y : y + height, x : x + width, :].copy(),))


@node("ImageFlip")
def image_flip(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    image = np.asarray(inputs["image"], dtype=np.float32)
    axis = 1 if str(inputs.get("flip_method", "")).startswith("x-axis") else 2
    return NodeResult(outputs=(np.flip(image, axis=axis).copy(),))


@node("ImageRotate")
def image_rotate(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    image = np.asarray(inputs["image"], dtype=np.float32)
    turns = {"90 degrees": 1, "180 degrees": 2, "270 degrees": 3}.get(str(inputs.get("rotation", "none")), 0)
    return NodeResult(outputs=(np.rot90(image, k=turns, axes=(2, 1)).copy(),))  # torch.rot90(dims=[2, 1])


@node("ImagePadForOutpaint")
def image_pad_for_outpaint(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    image = np.asarray(inputs["image"], dtype=np.float32)
    left, top = int(inputs.get("left", 0)), int(inputs.get("top", 0))
    right, bottom = int(inputs.get("right", 0)), int(inputs.get("bottom", 0))
    feathering = int(inputs.get("feathering", 40))
    b, h, w, c = image.shape
    out = np.full((b, h + top + bottom, w + left + right, c), 0.5, dtype=np.float32)
    out[:, top : top + h, left : left + w, :] = image
    mask = np.ones((h + top + bottom, w + left + right), dtype=np.float32)
    inner = np.zeros((h, w), dtype=np.float32)
    if feathering > 0 and feathering * 2 < h and feathering * 2 < w:
        i, j = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        d = np.minimum.reduce(
            [i if top else np.full_like(i, h), h - i if bottom else np.full_like(i, h),
             j if left else np.full_like(j, w), w - j if right else np.full_like(j, w)]
        )
        v = np.where(d < feathering, (feathering - d) / feathering, 0.0)
        inner = (v * v).astype(np.float32)
    mask[top : top + h, left : left + w] = inner
    return NodeResult(outputs=(out, mask[None]))


@node("ResizeAndPadImage")
def resize_and_pad_image(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    image = np.asarray(inputs["image"], dtype=np.float32)
    target_w, target_h = int(inputs.get("target_width", 512)), int(inputs.get("target_height", 512))
    scale = min(target_w / image.shape[2], target_h / image.shape[1])
    new_w, new_h = max(1, int(image.shape[2] * scale)), max(1, int(image.shape[1] * scale))
    scaled = resize_images(image, new_w, new_h, str(inputs.get("interpolation", "area")))
    fill = 1.0 if str(inputs.get("padding_color", "white")) == "white" else 0.0
    out = np.full((image.shape[0], target_h, target_w, image.shape[3]), fill, dtype=np.float32)
    y, x = (target_h - new_h) // 2, (target_w - new_w) // 2
    out[:, y : y + new_h, x : x + new_w, :] = scaled
    return NodeResult(outputs=(out,))


@node("ImageScaleToTotalPixels")
def image_scale_to_total_pixels(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    image = np.asarray(inputs["image"], dtype=np.float32)
    total = float(inputs.get("megapixels", 1.0)) * 1024 * 1024
    scale_by = math.sqrt(total / (image.shape[2] * image.shape[1]))
    width, height = round(image.shape[2] * scale_by), round(image.shape[1] * scale_by)
    return NodeResult(outputs=(common_upscale(image, width, height, str(inputs["upscale_method"]), "disabled"),))


@node("ImageScaleToMaxDimension")
def image_scale_to_max_dimension(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    image = np.asarray(inputs["image"], dtype=np.float32)
    largest = int(inputs.get("largest_size", 512))
    h, w = int(image.shape[1]), int(image.shape[2])
    if h > w:
        width, height = round((w / h) * largest), largest
    else:
        width, height = largest, round((h / w) * largest)
    return NodeResult(outputs=(common_upscale(image, width, height, str(inputs["upscale_method"]), "disabled"),))


@node("GetImageSize")
def get_image_size(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    image = np.asarray(inputs["image"])
    height, width, batch = int(image.shape[1]), int(image.shape[2]), int(image.shape[0])
    ctx.send_text(f"width: {width}, height: {height}\n batch size: {batch}")  # ComfyUI's progress text
    return NodeResult(outputs=(width, height, batch))


@node("SplitImageWithAlpha")
def split_image_with_alpha(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    image = np.asarray(inputs["image"], dtype=np.float32)
    alpha = image[..., 3] if image.shape[-1] > 3 else np.ones(image.shape[:3], dtype=np.float32)
    return NodeResult(outputs=(image[..., :3].copy(), np.float32(1.0) - alpha))


@node("JoinImageWithAlpha")
def join_image_with_alpha(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    image = np.asarray(inputs["image"], dtype=np.float32)
    alpha = np.asarray(inputs["alpha"], dtype=np.float32).reshape((-1, *np.asarray(inputs["alpha"]).shape[-2:]))
    if alpha.shape[1:] != image.shape[1:3]:
        alpha = resize_images(alpha[..., None], int(image.shape[2]), int(image.shape[1]), "bilinear")[..., 0]
    alpha = np.float32(1.0) - alpha
    batch = int(image.shape[0])
    alpha = alpha[np.minimum(np.arange(batch), alpha.shape[0] - 1)]
    return NodeResult(outputs=(np.concatenate([image[..., :3], alpha[..., None]], axis=-1),))


# -- masks ----------------------------------------------------------------------------------------------------


def _masks(value: Any) -> np.ndarray:
    mask = np.asarray(value, dtype=np.float32)
    return mask.reshape((-1, mask.shape[-2], mask.shape[-1]))


@node("InvertMask")
def invert_mask(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    return NodeResult(outputs=(np.float32(1.0) - np.asarray(inputs["mask"], dtype=np.float32),))


@node("ThresholdMask")
def threshold_mask(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    mask = np.asarray(inputs["mask"], dtype=np.float32)
    return NodeResult(outputs=((mask > float(inputs.get("value", 0.5))).astype(np.float32),))


@node("CropMask")
def crop_mask(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    mask = _masks(inputs["mask"])
    x, y = int(inputs.get("x", 0)), int(inputs.get("y", 0))
    width, height = int(inputs.get("width", 512)), int(inputs.get("height", 512))
    return NodeResult(outputs=(mask[:, y : y + height, x : x + width].copy(),))


# -- latents --------------------------------------------------------------------------------------------------


def _with_samples(value: dict[str, Any], samples: np.ndarray, recipe: Recipe | None = None) -> dict[str, Any]:
    out = dict(value)
    out["samples"] = samples
    out.pop("batch_index", None)
    if recipe is not None:
        out["recipe"] = recipe
    return out


@node("LatentBatch")
def latent_batch(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    s1, s2 = inputs["samples1"], inputs["samples2"]
    a, b = np.asarray(s1["samples"], dtype=np.float32), np.asarray(s2["samples"], dtype=np.float32)
    if a.shape[1:] != b.shape[1:]:
        # ComfyUI upscales samples2 bilinearly to samples1's size; the preview's samples are placeholders
        b = np.zeros((b.shape[0], *a.shape[1:]), dtype=np.float32)
    return NodeResult(outputs=(_with_samples(s1, np.concatenate([a, b], axis=0)),))


@node("RepeatLatentBatch")
def repeat_latent_batch(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    s = inputs["samples"]
    a = np.asarray(s["samples"], dtype=np.float32)
    amount = int(inputs.get("amount", 1))
    return NodeResult(outputs=(_with_samples(s, np.tile(a, (amount,) + (1,) * (a.ndim - 1))),))


@node("LatentFromBatch")
def latent_from_batch(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    s = inputs["samples"]
    a = np.asarray(s["samples"], dtype=np.float32)
    index = min(int(a.shape[0]) - 1, int(inputs.get("batch_index", 0)))
    length = min(int(a.shape[0]) - index, int(inputs.get("length", 1)))
    return NodeResult(outputs=(_with_samples(s, a[index : index + length].copy()),))


def _resize_latent(value: dict[str, Any], width: int, height: int) -> dict[str, Any]:
    """A latent resized to ``width x height`` latent cells (nearest cells of the placeholder samples)."""
    a = np.asarray(value["samples"], dtype=np.float32)
    rows = np.minimum((np.arange(height) * a.shape[-2]) // max(1, height), a.shape[-2] - 1)
    cols = np.minimum((np.arange(width) * a.shape[-1]) // max(1, width), a.shape[-1] - 1)
    samples = a[..., rows, :][..., cols]
    recipe = replace(recipe_of(value), width=width * 8, height=height * 8)
    return _with_samples(value, np.ascontiguousarray(samples), recipe)


@node("LatentUpscale")
def latent_upscale(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    s = inputs["samples"]
    a = np.asarray(s["samples"])
    width, height = int(inputs.get("width", 512)), int(inputs.get("height", 512))
    if width == 0 and height == 0:
        return NodeResult(outputs=(s,))
    if width == 0:
        height = max(64, height)
        width = max(64, round(a.shape[-1] * height / a.shape[-2]))
    elif height == 0:
        width = max(64, width)
        height = max(64, round(a.shape[-2] * width / a.shape[-1]))
    else:
        width, height = max(64, width), max(64, height)
    return NodeResult(outputs=(_resize_latent(s, width // 8, height // 8),))


@node("LatentUpscaleBy")
def latent_upscale_by(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    s = inputs["samples"]
    a = np.asarray(s["samples"])
    scale = float(inputs.get("scale_by", 1.5))
    return NodeResult(outputs=(_resize_latent(s, round(a.shape[-1] * scale), round(a.shape[-2] * scale)),))


@node("LatentCrop")
def latent_crop(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    s = inputs["samples"]
    a = np.asarray(s["samples"], dtype=np.float32)
    x, y = int(inputs.get("x", 0)) // 8, int(inputs.get("y", 0)) // 8
    w, h = int(inputs.get("width", 512)) // 8, int(inputs.get("height", 512)) // 8
    cropped = a[..., y : y + h, x : x + w].copy()
    recipe = replace(recipe_of(s), width=int(cropped.shape[-1]) * 8, height=int(cropped.shape[-2]) * 8)
    return NodeResult(outputs=(_with_samples(s, cropped, recipe),))


@node("TrimVideoLatent")
def trim_video_latent(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    s = inputs["samples"]
    a = np.asarray(s["samples"], dtype=np.float32)
    trim = int(inputs.get("trim_amount", 0))
    trimmed = a[:, :, trim:].copy()
    recipe = recipe_of(s)
    if recipe.kind == "video" and a.ndim == 5:  # Wan's 4x temporal compression, the first frame alone
        recipe = replace(recipe, frames=max(1, (int(trimmed.shape[2]) - 1) * 4 + 1))
    return NodeResult(outputs=(_with_samples(s, trimmed, recipe),))


# -- audio ----------------------------------------------------------------------------------------------------


def _audio(value: Any) -> tuple[np.ndarray, int]:
    return np.asarray(value["waveform"], dtype=np.float32), int(value["sample_rate"])


def resample(waveform: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Linear resampling of ``[..., T]`` (torchaudio's band-limited resampler on a GPU worker)."""
    if rate == target or waveform.shape[-1] == 0:
        return waveform
    length = max(1, round(waveform.shape[-1] * target / rate))
    src = np.arange(waveform.shape[-1], dtype=np.float64)
    dst = np.linspace(0, waveform.shape[-1] - 1, length)
    flat = waveform.reshape(-1, waveform.shape[-1])
    out = np.stack([np.interp(dst, src, row) for row in flat]).astype(np.float32)
    return out.reshape((*waveform.shape[:-1], length))


def _match_rates(a: np.ndarray, ra: int, b: np.ndarray, rb: int) -> tuple[np.ndarray, np.ndarray, int]:
    if ra > rb:
        return a, resample(b, rb, ra), ra
    if rb > ra:
        return resample(a, ra, rb), b, rb
    return a, b, ra


@node("EmptyAudio")
def empty_audio(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    rate = int(inputs.get("sample_rate", 44100))
    samples = round(float(inputs.get("duration", 60.0)) * rate)
    channels = int(inputs.get("channels", 2))
    return NodeResult(outputs=({"waveform": np.zeros((1, channels, samples), dtype=np.float32), "sample_rate": rate},))


@node("TrimAudioDuration")
def trim_audio_duration(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    waveform, rate = _audio(inputs["audio"])
    length = int(waveform.shape[-1])
    start_index = float(inputs.get("start_index", 0.0))
    start = length + round(start_index * rate) if start_index < 0 else round(start_index * rate)
    start = max(0, min(start, length - 1))
    end = max(0, min(start + round(float(inputs.get("duration", 60.0)) * rate), length))
    if start >= end:
        raise ValueError("AudioTrim: Start time must be less than end time and be within the audio length.")
    return NodeResult(outputs=({"waveform": waveform[..., start:end].copy(), "sample_rate": rate},))


@node("SplitAudioChannels")
def split_audio_channels(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    waveform, rate = _audio(inputs["audio"])
    if waveform.shape[1] != 2:
        raise ValueError("AudioSplit: Input audio has only one channel.")
    left = {"waveform": waveform[..., 0:1, :].copy(), "sample_rate": rate}
    right = {"waveform": waveform[..., 1:2, :].copy(), "sample_rate": rate}
    return NodeResult(outputs=(left, right))


@node("AudioConcat")
def audio_concat(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    a, ra = _audio(inputs["audio1"])
    b, rb = _audio(inputs["audio2"])
    a = np.repeat(a, 2, axis=1) if a.shape[1] == 1 else a  # mono becomes stereo, as in ComfyUI
    b = np.repeat(b, 2, axis=1) if b.shape[1] == 1 else b
    a, b, rate = _match_rates(a, ra, b, rb)
    parts = (a, b) if str(inputs.get("direction", "after")) == "after" else (b, a)
    return NodeResult(outputs=({"waveform": np.concatenate(parts, axis=2), "sample_rate": rate},))


@node("AudioMerge")
def audio_merge(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    a, ra = _audio(inputs["audio1"])
    b, rb = _audio(inputs["audio2"])
    a, b, rate = _match_rates(a, ra, b, rb)
    if b.shape[-1] > a.shape[-1]:
        b = b[..., : a.shape[-1]]
    elif b.shape[-1] < a.shape[-1]:
        b = np.concatenate([b, np.zeros((*b.shape[:-1], a.shape[-1] - b.shape[-1]), dtype=np.float32)], axis=-1)
    method = str(inputs.get("merge_method", "add"))
    merged = {"add": a + b, "subtract": a - b, "multiply": a * b, "mean": (a + b) / 2}[method]
    peak = float(np.abs(merged).max()) if merged.size else 0.0
    if peak > 1.0:
        merged = merged / peak
    return NodeResult(outputs=({"waveform": merged.astype(np.float32), "sample_rate": rate},))


@node("AudioAdjustVolume")
def audio_adjust_volume(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    volume = float(inputs.get("volume", 1.0))
    if volume == 0:
        return NodeResult(outputs=(inputs["audio"],))
    waveform, rate = _audio(inputs["audio"])
    gain = np.float32(10 ** (volume / 20))
    return NodeResult(outputs=({"waveform": waveform * gain, "sample_rate": rate},))


@node("RecordAudio")
def record_audio(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    return load_audio(ctx, {"audio": inputs["audio"]})


# -- video ----------------------------------------------------------------------------------------------------


@node("GetVideoComponents")
def get_video_components(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    video = inputs["video"]
    if not isinstance(video, Video):
        raise TypeError(f"GetVideoComponents expects a VIDEO value, got {type(video).__name__}")
    return NodeResult(outputs=(np.asarray(video.frames, dtype=np.float32), video.audio, float(video.fps)))


def _video_combos(dirs: WorkerDirs) -> dict[str, list[str]]:
    return {"file": list_input_files(dirs, ["video"])}


def _validate_video(dirs: WorkerDirs, inputs: dict[str, Any]) -> str | bool:
    value = inputs.get("file")
    return True if annotated_exists(dirs, value) else f"Invalid video file: {value}"


def _video_mtime(dirs: WorkerDirs, inputs: dict[str, Any]) -> Any:
    try:
        return os.path.getmtime(annotated_filepath(dirs, str(inputs["file"])))  # ComfyUI: mtime, not a hash
    except (OSError, ValueError, KeyError):
        return float("nan")


def decode_video(path: Any) -> Video:
    """Every frame of a video file as ``[T,H,W,3]`` float32, its frame rate and its first audio track."""
    try:
        info = probe(path, count=False)
    except MediaProbeError as exc:
        raise ValueError(f"Failed to load video: {exc}") from exc
    if not info.video:
        raise ValueError("No video stream found in the file.")
    stream = info.video[0]
    raw = run_ffmpeg(["-i", str(path), "-map", "0:v:0", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]).stdout
    frame_bytes = stream.width * stream.height * 3
    count = len(raw) // frame_bytes if frame_bytes else 0
    frames = np.frombuffer(raw[: count * frame_bytes], dtype=np.uint8).reshape(count, stream.height, stream.width, 3)
    audio = None
    if info.audio:
        track = info.audio[0]
        waveform = decode_audio(path, sample_rate=track.sample_rate, channels=track.channels)
        audio = {"waveform": waveform[None].astype(np.float32), "sample_rate": track.sample_rate}
    return Video(frames=frames.astype(np.float32) / np.float32(255.0), fps=float(stream.fps or 24.0), audio=audio)


@node(
    "LoadVideo",
    combos=_video_combos,
    validate_inputs=_validate_video,
    validated_inputs=frozenset({"file"}),
    fingerprint=_video_mtime,
)
def load_video(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    return NodeResult(outputs=(decode_video(annotated_filepath(ctx.dirs, str(inputs["file"]))),))


# -- image loaders --------------------------------------------------------------------------------------------


def _image_combos(dirs: WorkerDirs) -> dict[str, list[str]]:
    return {"image": list_input_files(dirs, ["image"])}


@node(
    "LoadImageMask",
    combos=_image_combos,
    validate_inputs=_validate_image,
    validated_inputs=frozenset({"image"}),
    fingerprint=file_fingerprint("image"),
)
def load_image_mask(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    img: Image.Image = Image.open(annotated_filepath(ctx.dirs, str(inputs["image"])))
    img = ImageOps.exif_transpose(img) or img
    if img.getbands() != ("R", "G", "B", "A"):
        if img.mode == "I":
            img = img.point(lambda v: v * (1 / 255))
        img = img.convert("RGBA")
    channel = str(inputs.get("channel", "alpha"))[0].upper()
    if channel in img.getbands():
        mask = np.asarray(img.getchannel(channel), dtype=np.float32) / np.float32(255.0)
        if channel == "A":
            mask = np.float32(1.0) - mask
    else:
        mask = np.zeros((64, 64), dtype=np.float32)
    return NodeResult(outputs=(mask[None],))


@node(
    "LoadImageOutput",
    validate_inputs=_validate_image,
    validated_inputs=frozenset({"image"}),
    fingerprint=file_fingerprint("image"),
)
def load_image_output(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    return load_image(ctx, inputs)  # names carry " [output]"; the annotated path resolves them


@node(
    "WebcamCapture",
    validate_inputs=_validate_image,
    validated_inputs=frozenset({"image"}),
    fingerprint=file_fingerprint("image"),
)
def webcam_capture(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    image, _mask = load_image(ctx, {"image": inputs["image"]}).outputs  # ComfyUI ignores width and height here
    return NodeResult(outputs=(image,))


_DATASET_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")


@node("LoadImageSetFromFolderNode", combos=lambda dirs: {"folder": input_subfolders(dirs)})
def load_image_set_from_folder(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    folder = annotated_filepath(ctx.dirs, str(inputs["folder"]))
    files = sorted(str(folder / f) for f in os.listdir(folder) if f.lower().endswith(_DATASET_EXTENSIONS))
    if not files:
        raise ValueError(f"No images found in {inputs['folder']}")
    return NodeResult(outputs=(load_dataset_images(files, str(inputs.get("resize_method", "None")), None, None),))


# -- list rebatching (INPUT_IS_LIST, OUTPUT_IS_LIST) ------------------------------------------------------------


@node("RebatchImages", input_is_list=True)
def rebatch_images(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    size = int(inputs["batch_size"][0])
    batches_in = [np.asarray(b, dtype=np.float32) for b in inputs["images"]]
    singles = [b[i : i + 1] for b in batches_in for i in range(b.shape[0])]
    batches = [np.concatenate(singles[i : i + size], axis=0) for i in range(0, len(singles), size)]
    return NodeResult(outputs=(batches,))


@node("RebatchLatents", input_is_list=True)
def rebatch_latents(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    size = int(inputs["batch_size"][0])
    out: list[dict[str, Any]] = []
    current: list[np.ndarray] = []
    first: dict[str, Any] | None = None
    for item in inputs["latents"]:
        samples = np.asarray(item["samples"], dtype=np.float32)
        for i in range(samples.shape[0]):
            one = samples[i : i + 1]
            if current and (len(current) == size or current[0].shape[1:] != one.shape[1:]):
                assert first is not None
                out.append(_with_samples(first, np.concatenate(current, axis=0)))
                current = []
            if not current:
                first = item
            current.append(one)
    if current and first is not None:
        out.append(_with_samples(first, np.concatenate(current, axis=0)))
    return NodeResult(outputs=(out,))


# -- strings --------------------------------------------------------------------------------------------------


def _flags(inputs: dict[str, Any], *, default_case: bool = True) -> int:
    flags = 0
    if inputs.get("case_insensitive", default_case):
        flags |= re.IGNORECASE
    if inputs.get("multiline", False):
        flags |= re.MULTILINE
    if inputs.get("dotall", False):
        flags |= re.DOTALL
    return flags


@node("StringConcatenate")
def string_concatenate(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    return NodeResult(outputs=(str(inputs.get("delimiter", "")).join((inputs["string_a"], inputs["string_b"])),))


@node("StringSubstring")
def string_substring(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    return NodeResult(outputs=(str(inputs["string"])[int(inputs["start"]) : int(inputs["end"])],))


@node("StringLength")
def string_length(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    return NodeResult(outputs=(len(str(inputs["string"])),))


@node("CaseConverter")
def case_converter(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    text, mode = str(inputs["string"]), str(inputs.get("mode", ""))
    ops = {"UPPERCASE": str.upper, "lowercase": str.lower, "Capitalize": str.capitalize, "Title Case": str.title}
    return NodeResult(outputs=(ops[mode](text) if mode in ops else text,))


@node("StringTrim")
def string_trim(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    text, mode = str(inputs["string"]), str(inputs.get("mode", "Both"))
    ops = {"Both": str.strip, "Left": str.lstrip, "Right": str.rstrip}
    return NodeResult(outputs=(ops[mode](text) if mode in ops else text,))


@node("StringReplace")
def string_replace(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    return NodeResult(outputs=(str(inputs["string"]).replace(str(inputs["find"]), str(inputs["replace"])),))


@node("StringContains")
def string_contains(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    text, sub = str(inputs["string"]), str(inputs["substring"])
    if not inputs.get("case_sensitive", True):
        text, sub = text.lower(), sub.lower()
    return NodeResult(outputs=(sub in text,))


@node("StringCompare")
def string_compare(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    a, b = str(inputs["string_a"]), str(inputs["string_b"])
    if not inputs.get("case_sensitive", True):
        a, b = a.lower(), b.lower()
    mode = str(inputs.get("mode", "Equal"))
    result = a == b if mode == "Equal" else a.startswith(b) if mode == "Starts With" else a.endswith(b)
    return NodeResult(outputs=(result,))


@node("RegexMatch")
def regex_match(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    try:
        result = re.search(str(inputs["regex_pattern"]), str(inputs["string"]), _flags(inputs)) is not None
    except re.error:
        result = False
    return NodeResult(outputs=(result,))


@node("RegexExtract")
def regex_extract(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    pattern, text, flags = str(inputs["regex_pattern"]), str(inputs["string"]), _flags(inputs)
    mode, group = str(inputs.get("mode", "First Match")), int(inputs.get("group_index", 1))
    try:
        if mode == "First Match":
            m = re.search(pattern, text, flags)
            result = m.group(0) if m else ""
        elif mode == "All Matches":
            found = re.findall(pattern, text, flags)
            result = "\n".join(f[0] if isinstance(f, tuple) else f for f in found) if found else ""
        elif mode == "First Group":
            m = re.search(pattern, text, flags)
            result = m.group(group) if m and len(m.groups()) >= group else ""
        elif mode == "All Groups":
            result = "\n".join(
                m.group(group) for m in re.finditer(pattern, text, flags) if m.groups() and len(m.groups()) >= group
            )
        else:
            result = ""
    except re.error:
        result = ""
    return NodeResult(outputs=(result,))


@node("RegexReplace")
def regex_replace(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    result = re.sub(
        str(inputs["regex_pattern"]),
        str(inputs["replace"]),
        str(inputs["string"]),
        count=int(inputs.get("count", 0)),
        flags=_flags(inputs),
    )
    return NodeResult(outputs=(result,))
