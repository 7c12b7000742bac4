"""Output nodes beyond SaveImage/SaveAudio/SaveVideo: what ComfyUI 0.3.64 writes and how history lists it.

Files are named ``<prefix>_<counter:05>_.<ext>`` (``naming.py``) and carry the prompt like ComfyUI's
(``comfyui-api.md`` a.9):

* SaveAnimatedWEBP: one animated WebP, EXIF 0x0110 ``prompt:<json>`` and 0x010F, 0x010E... ``<key>:<json>``;
  ``{"images": [...], "animated": [true]}`` (``false`` for a single frame, as ComfyUI's ``num_frames != 1``).
* SaveAnimatedPNG: one APNG with ``comf`` chunks after IDAT (``key\\0json``); ``animated: [true]``.
* SaveAudioMP3 / SaveAudioOpus / PreviewAudio: mp3 (libmp3lame; V0 or CBR), Ogg Opus (libopus, resampled to the
  next Opus rate), temp FLAC; container tags ``prompt`` + extra keys; ``{"audio": [...]}``.
* SaveWEBM: vp9 (yuv420p) or av1 (libsvtav1, yuv420p10le) at ``crf``; listed like a video under ``images``.
* SaveLatent / LoadLatent: safetensors ``latent_tensor`` + ``latent_format_version_0``; ``{"latents": [...]}``.
* SaveImageWebsocket: no file, no history entry; one binary preview frame and one ``progress`` per image
  (values 0..n-1), and it re-runs every time (its IS_CHANGED is the clock).
* PreviewAny ``{"text": [...]}``; MaskPreview (temp PNG); SaveSVGNode (``svg/``, metadata in a CDATA block);
  SaveGLB (binary glTF, ``{"3d": [...]}``); Preview3D ``{"result": [file, camera]}``; LossGraphNode (temp PNG
  named ``<prefix>_<date>.png``).
* CheckpointSave, ModelSave, CLIPSave, VAESave, ImageOnlyCheckpointSave, LoraSave: a small safetensors file
  (the preview has no weights) with ComfyUI's name and metadata, and no UI part, so nothing in history.
* The Tripo API nodes write ``output/tripo_model_<task_id>.glb`` and report nothing.
"""

from __future__ import annotations

import ast
import base64
import dataclasses
import datetime
import json
import os
import random
import re
import struct
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo
from safetensors.numpy import load_file, save_file

from reelforge.media.ffmpeg import encode_raw_video
from reelforge.preview.naming import next_output_path
from reelforge.preview.nodes._common import (
    annotated_exists,
    annotated_filepath,
    file_fingerprint,
    to_uint8,
)
from reelforge.preview.nodes.audio import encode_audio_file, file_metadata
from reelforge.preview.nodes.generic import NodeView, tetrahedron
from reelforge.preview.nodes.image import _TEMP_LETTERS, save_images
from reelforge.preview.registry import ExecContext, NodeResult, WorkerDirs, catalogue, node
from reelforge.preview.values import Clip, Identity, Mesh, Model, Recipe, Svg, Vae, latent, recipe_of

# -- animated images --------------------------------------------------------------------------------------

_WEBP_METHODS = {"default": 4, "fastest": 0, "slowest": 6}


def _pil_frames(images: Any) -> list[Image.Image]:
    return [Image.fromarray(to_uint8(np.asarray(frame))) for frame in np.asarray(images)]


@node("SaveAnimatedWEBP")
def save_animated_webp(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    images = np.asarray(inputs["images"])
    fps = float(inputs.get("fps", 6.0))
    frames = _pil_frames(images)
    exif = frames[0].getexif()
    if ctx.prompt is not None:
        exif[0x0110] = f"prompt:{json.dumps(ctx.prompt)}"
    if ctx.extra_pnginfo is not None:
        tag = 0x010F
        for key in ctx.extra_pnginfo:
            exif[tag] = f"{key}:{json.dumps(ctx.extra_pnginfo[key])}"
            tag -= 1
    path, filename, subfolder = next_output_path(
        ctx.dirs.output,
        str(inputs.get("filename_prefix", "ComfyUI")),
        "webp",
        width=int(images.shape[2]),
        height=int(images.shape[1]),
    )
    frames[0].save(
        path,
        save_all=True,
        duration=int(1000.0 / fps),
        append_images=frames[1:],
        exif=exif,
        lossless=bool(inputs.get("lossless", True)),
        quality=int(inputs.get("quality", 80)),
        method=_WEBP_METHODS.get(str(inputs.get("method", "default")), 4),
    )
    animated = len(frames) != 1  # ComfyUI: num_frames != 1 with num_frames = the whole batch
    return NodeResult(ui={"images": [{"filename": filename, "subfolder": subfolder, "type": "output"}],
                          "animated": [animated]})


@node("SaveAnimatedPNG")
def save_animated_png(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    images = np.asarray(inputs["images"])
    fps = float(inputs.get("fps", 6.0))
    frames = _pil_frames(images)
    metadata = PngInfo()
    if ctx.prompt is not None:
        metadata.add(b"comf", b"prompt\0" + json.dumps(ctx.prompt).encode("latin-1"), after_idat=True)
    if ctx.extra_pnginfo is not None:
        for key in ctx.extra_pnginfo:
            data = key.encode("latin-1") + b"\0" + json.dumps(ctx.extra_pnginfo[key]).encode("latin-1")
            metadata.add(b"comf", data, after_idat=True)
    path, filename, subfolder = next_output_path(
        ctx.dirs.output,
        str(inputs.get("filename_prefix", "ComfyUI")),
        "png",
        width=int(images.shape[2]),
        height=int(images.shape[1]),
    )
    frames[0].save(
        path,
        pnginfo=metadata,
        compress_level=int(inputs.get("compress_level", 4)),
        save_all=True,
        duration=int(1000.0 / fps),
        append_images=frames[1:],
    )
    return NodeResult(ui={"images": [{"filename": filename, "subfolder": subfolder, "type": "output"}],
                          "animated": [True]})


# -- audio ------------------------------------------------------------------------------------------------

OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


def opus_rate(sample_rate: int) -> int:
    """The rate ComfyUI resamples to for Opus: the rate itself if Opus has it, else the next higher, max 48 kHz."""
    if sample_rate > 48000:
        return 48000
    if sample_rate in OPUS_RATES:
        return sample_rate
    return next((r for r in OPUS_RATES if r > sample_rate), 48000)


def save_audio_files(
    ctx: ExecContext, audio: dict[str, Any], prefix: str, fmt: str, *, kind: str = "output", quality: str = ""
) -> NodeResult:
    """ComfyUI's ``save_audio``: one file per batch item, the counter continuing over the batch."""
    base = ctx.dirs.for_type(kind)
    assert base is not None
    rate = int(audio["sample_rate"])
    metadata = file_metadata(ctx)
    results: list[dict[str, Any]] = []
    for batch_number, waveform in enumerate(np.asarray(audio["waveform"], dtype=np.float32)):
        path, filename, subfolder = next_output_path(base, prefix, fmt, batch_num=batch_number)
        # PyAV's layout is mono for one channel, stereo otherwise (extra channels are not kept).
        channels = waveform[:1] if waveform.shape[0] == 1 else waveform[:2]
        if channels.shape[0] == 1 and waveform.shape[0] > 1:
            channels = np.repeat(channels, 2, axis=0)
        if fmt == "opus":
            target = opus_rate(rate)
            bitrate = quality if quality in ("64k", "96k", "128k", "192k", "320k") else "128k"
            codec = ["-c:a", "libopus", "-b:a", bitrate, "-ar", str(target), "-f", "opus"]
        elif fmt == "mp3":
            quality_args = ["-q:a", "0"] if quality == "V0" else ["-b:a", quality if quality else "128k"]
            codec = ["-c:a", "libmp3lame", *quality_args, "-f", "mp3"]
        else:
            codec = ["-c:a", "flac", "-sample_fmt", "s16"]
        encode_audio_file(channels, rate, path, codec_args=codec, metadata=metadata)
        results.append({"filename": filename, "subfolder": subfolder, "type": kind})
    return NodeResult(ui={"audio": results})


@node("SaveAudioMP3")
def save_audio_mp3(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    prefix = str(inputs.get("filename_prefix", "audio/ComfyUI"))
    return save_audio_files(ctx, inputs["audio"], prefix, "mp3", quality=str(inputs.get("quality", "V0")))


@node("SaveAudioOpus")
def save_audio_opus(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    prefix = str(inputs.get("filename_prefix", "audio/ComfyUI"))
    return save_audio_files(ctx, inputs["audio"], prefix, "opus", quality=str(inputs.get("quality", "128k")))


def _temp_prefix(prefix: str = "ComfyUI") -> str:
    return prefix + "_temp_" + "".join(random.choice(_TEMP_LETTERS) for _ in range(5))


@node("PreviewAudio")
def preview_audio(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    return save_audio_files(ctx, inputs["audio"], _temp_prefix(), "flac", kind="temp")


# -- video ------------------------------------------------------------------------------------------------


@node("SaveWEBM")
def save_webm(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    images = np.asarray(inputs["images"])
    codec = str(inputs.get("codec", "vp9"))
    fps = round(float(inputs.get("fps", 24.0)) * 1000) / 1000  # ComfyUI: Fraction(round(fps * 1000), 1000)
    crf = float(inputs.get("crf", 32.0))
    total, height, width = int(images.shape[0]), int(images.shape[1]), int(images.shape[2])
    path, filename, subfolder = next_output_path(
        ctx.dirs.output, str(inputs.get("filename_prefix", "ComfyUI")), "webm", width=width, height=height
    )
    if codec == "av1":
        video_args = ["-c:v", "libsvtav1", "-pix_fmt", "yuv420p10le", "-crf", f"{crf:g}", "-preset", "6"]
    else:
        video_args = ["-c:v", "libvpx-vp9", "-pix_fmt", "yuv420p", "-crf", f"{crf:g}", "-b:v", "0"]
    meta_args: list[str] = []
    for key, value in file_metadata(ctx).items():
        meta_args += ["-metadata", f"{key}={value}"]

    def frames() -> Iterator[np.ndarray]:
        for i in range(total):
            frame = to_uint8(images[i])
            yield np.repeat(frame, 3, axis=-1) if frame.shape[-1] == 1 else frame[..., :3]

    try:
        encode_raw_video(
            frames(), width=width, height=height, fps=fps, output=path,
            output_args=[*video_args, *meta_args, "-f", "webm"],
        )
    except BaseException:
        path.unlink(missing_ok=True)  # no half-written file left behind (it would shift the counter)
        raise
    return NodeResult(ui={"images": [{"filename": filename, "subfolder": subfolder, "type": "output"}],
                          "animated": [True]})


# -- latents ----------------------------------------------------------------------------------------------

RECIPE_METADATA_KEY = "reelforge_recipe"
RECIPE_ARRAYS = ("start_image", "end_image")  # Recipe fields saved as extra tensors
RECIPE_EXTRA_ARRAYS = ("control_image", "start_images")  # Recipe.extras entries saved as extra tensors


def recipe_record(recipe: Recipe) -> tuple[str, dict[str, np.ndarray]]:
    """What a saved latent stands for (JSON) and its pictures (tensors), so LoadLatent -> VAEDecode on the
    preview shows the picture the graph that saved it would have shown. Patches are kept as Python literals."""
    model = recipe.model
    record = {
        "kind": recipe.kind, "width": recipe.width, "height": recipe.height, "frames": recipe.frames,
        "seconds": recipe.seconds, "prompt": recipe.prompt, "negative": recipe.negative, "seed": recipe.seed,
        "steps": recipe.steps, "denoise": recipe.denoise, "tags": recipe.tags, "lyrics": recipe.lyrics,
        "control": [list(c) for c in recipe.control],
        "extras": {k: v for k, v in recipe.extras.items() if isinstance(v, (str, int, float, bool))},
        "model": None if model is None else {
            "name": model.name, "family": model.family, "loras": [list(x) for x in model.loras],
            "patches": repr(model.patches), "ipadapter": repr(model.ipadapter),
            "identities": [[i.key, base64.b64encode(i.card).decode("ascii"), s] for i, s in model.identities],
        },
    }
    arrays = {f"reelforge.{k}": getattr(recipe, k) for k in RECIPE_ARRAYS if getattr(recipe, k) is not None}
    arrays.update({f"reelforge.extras.{k}": recipe.extras[k] for k in RECIPE_EXTRA_ARRAYS
                   if isinstance(recipe.extras.get(k), np.ndarray)})
    return json.dumps(record), {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in arrays.items()}


def recipe_from_record(text: str | None, tensors: dict[str, np.ndarray]) -> Recipe | None:
    """The Recipe a preview-saved latent carries; None for a latent from elsewhere (or a damaged record)."""
    try:
        data = json.loads(text or "")
        m = data.get("model")
        model = None if not m else Model(
            str(m["name"]), str(m["family"]), tuple((str(n), float(v)) for n, v in m["loras"]),
            patches=ast.literal_eval(m["patches"]), ipadapter=ast.literal_eval(m["ipadapter"]),
            identities=tuple((Identity(str(k), base64.b64decode(c)), float(v)) for k, c, v in m["identities"]),
        )
        extras: dict[str, Any] = dict(data["extras"])
        extras.update({k: tensors[f"reelforge.extras.{k}"] for k in RECIPE_EXTRA_ARRAYS
                       if f"reelforge.extras.{k}" in tensors})
        return Recipe(
            kind=data["kind"], width=int(data["width"]), height=int(data["height"]), frames=int(data["frames"]),
            seconds=float(data["seconds"]), prompt=str(data["prompt"]), negative=str(data["negative"]),
            seed=int(data["seed"]), steps=int(data["steps"]), denoise=float(data["denoise"]),
            tags=str(data["tags"]), lyrics=str(data["lyrics"]), model=model,
            control=tuple((str(n), float(v)) for n, v in data["control"]),
            start_image=tensors.get("reelforge.start_image"), end_image=tensors.get("reelforge.end_image"),
            extras=extras,
        )
    except (ValueError, KeyError, TypeError, AttributeError, SyntaxError):
        return None


@node("SaveLatent")
def save_latent(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    samples: dict[str, Any] = inputs["samples"]
    path, filename, subfolder = next_output_path(
        ctx.dirs.output, str(inputs.get("filename_prefix", "latents/ComfyUI")), "latent"
    )
    metadata = {"prompt": json.dumps(ctx.prompt) if ctx.prompt is not None else ""}
    for key in ctx.extra_pnginfo or {}:
        metadata[key] = json.dumps((ctx.extra_pnginfo or {})[key])
    record, arrays = recipe_record(recipe_of(samples))
    metadata[RECIPE_METADATA_KEY] = record
    tensors = {
        "latent_tensor": np.ascontiguousarray(np.asarray(samples["samples"], dtype=np.float32)),
        "latent_format_version_0": np.zeros((0,), dtype=np.float32),
        **arrays,  # ComfyUI's LoadLatent reads latent_tensor only: the preview's extras do not disturb it
    }
    save_file(tensors, str(path), metadata=metadata)
    return NodeResult(ui={"latents": [{"filename": filename, "subfolder": subfolder, "type": "output"}]})


def _latent_files(dirs: WorkerDirs) -> dict[str, list[str]]:
    try:
        names = [f for f in os.listdir(dirs.input) if os.path.isfile(dirs.input / f) and f.endswith(".latent")]
    except FileNotFoundError:
        names = []
    return {"latent": sorted(names)}


def _validate_latent(dirs: WorkerDirs, inputs: dict[str, Any]) -> str | bool:
    value = inputs.get("latent")
    return True if annotated_exists(dirs, value) else f"Invalid latent file: {value}"


def _safetensors_metadata(path: Path) -> dict[str, str]:
    from reelforge.preview.nodes.loaders import safetensors_metadata

    return safetensors_metadata(path)


@node(
    "LoadLatent",
    combos=_latent_files,
    validate_inputs=_validate_latent,
    validated_inputs=frozenset({"latent"}),
    fingerprint=file_fingerprint("latent"),
)
def load_latent(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    path = annotated_filepath(ctx.dirs, str(inputs["latent"]))
    tensors = load_file(str(path))
    # Files from before the version marker were stored scaled by SD's 0.18215 (ComfyUI's rule).
    multiplier = 1.0 if "latent_format_version_0" in tensors else 1.0 / 0.18215
    samples = np.asarray(tensors["latent_tensor"], dtype=np.float32) * np.float32(multiplier)
    recipe = recipe_from_record(_safetensors_metadata(path).get(RECIPE_METADATA_KEY), tensors)
    return NodeResult(outputs=(latent(samples, recipe) if recipe is not None else {"samples": samples},))


# -- websocket, previews ------------------------------------------------------------------------------------


@node("SaveImageWebsocket", fingerprint=lambda dirs, inputs: time.time())
def save_image_websocket(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    images = np.asarray(inputs["images"])
    total = int(images.shape[0])
    for step, image in enumerate(images):
        buffer = _png_bytes(Image.fromarray(to_uint8(image)))
        ctx.preview(float(step), float(total), buffer)  # ComfyUI: update_absolute(step, n, ("PNG", img, None))
    return NodeResult(ui=None)


def _png_bytes(img: Image.Image) -> bytes:
    from io import BytesIO

    out = BytesIO()
    img.save(out, format="PNG", compress_level=1)  # what ComfyUI's send_image writes
    return out.getvalue()


def preview_text(source: Any) -> str:
    """PreviewAny's text: strings as they are, numbers by str(), the rest as JSON or, failing that, str()."""
    if isinstance(source, str):
        return source
    if isinstance(source, (int, float, bool)):
        return str(source)
    if source is None:
        return "None"
    try:
        return json.dumps(source)
    except (TypeError, ValueError):
        try:
            return str(source)
        except Exception:
            return "source exists, but could not be serialized."


@node("PreviewAny")
def preview_any(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    return NodeResult(ui={"text": [preview_text(inputs.get("source"))]})


@node("MaskPreview")
def mask_preview(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    mask = np.asarray(inputs["mask"], dtype=np.float32)
    flat = mask.reshape((-1, mask.shape[-2], mask.shape[-1]))
    images = np.repeat(flat[..., None], 3, axis=-1)
    return save_images(ctx, images, _temp_prefix(), kind="temp", compress_level=4)


# -- vector and 3D ------------------------------------------------------------------------------------------


@node("SaveSVGNode")
def save_svg(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    svg: Svg = inputs["svg"]
    meta: dict[str, Any] = {}
    if ctx.prompt is not None:
        meta["prompt"] = ctx.prompt
    if ctx.extra_pnginfo is not None:
        meta.update(ctx.extra_pnginfo)
    metadata_json = json.dumps(meta, indent=2) if meta else None
    results: list[dict[str, Any]] = []
    prefix = str(inputs.get("filename_prefix", "svg/ComfyUI"))
    for batch_number, data in enumerate(svg.data):
        path, filename, subfolder = next_output_path(ctx.dirs.output, prefix, "svg", batch_num=batch_number)
        content = data.decode("utf-8")
        if metadata_json:
            block = f"  <metadata>\n    <![CDATA[\n{metadata_json}\n    ]]>\n  </metadata>\n"
            content = re.sub(
                r"(<svg[^>]*>)", lambda m, b=block: m.group(1) + "\n" + b, content, flags=re.UNICODE  # type: ignore[misc]
            )
        path.write_bytes(content.encode("utf-8"))
        results.append({"filename": filename, "subfolder": subfolder, "type": "output"})
    return NodeResult(ui={"images": results})


def write_glb(vertices: np.ndarray, faces: np.ndarray, path: Path, metadata: dict[str, str] | None) -> None:
    """ComfyUI's ``save_glb``: one triangle mesh as binary glTF 2.0, metadata in ``asset.extras``."""
    v = np.ascontiguousarray(vertices, dtype=np.float32)
    f = np.ascontiguousarray(faces, dtype=np.uint32)

    def pad(buffer: bytes, fill: bytes) -> bytes:
        return buffer + fill * ((4 - len(buffer) % 4) % 4)

    vbytes, ibytes = v.tobytes(), f.tobytes()
    data = pad(vbytes, b"\x00") + pad(ibytes, b"\x00")
    gltf: dict[str, Any] = {
        "asset": {"version": "2.0", "generator": "ComfyUI"},
        "buffers": [{"byteLength": len(data)}],
        "bufferViews": [
            {"buffer": 0, "byteOffset": 0, "byteLength": len(vbytes), "target": 34962},
            {"buffer": 0, "byteOffset": len(pad(vbytes, b"\x00")), "byteLength": len(ibytes), "target": 34963},
        ],
        "accessors": [
            {"bufferView": 0, "byteOffset": 0, "componentType": 5126, "count": len(v), "type": "VEC3",
             "max": v.max(axis=0).tolist(), "min": v.min(axis=0).tolist()},
            {"bufferView": 1, "byteOffset": 0, "componentType": 5125, "count": int(f.size), "type": "SCALAR"},
        ],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0}, "indices": 1, "mode": 4}]}],
        "nodes": [{"mesh": 0}],
        "scenes": [{"nodes": [0]}],
        "scene": 0,
    }
    if metadata is not None:
        gltf["asset"]["extras"] = metadata
    text = pad(json.dumps(gltf).encode("utf8"), b" ")
    header = struct.pack("<4sII", b"glTF", 2, 12 + 8 + len(text) + 8 + len(data))
    with open(path, "wb") as out:
        out.write(header)
        out.write(struct.pack("<II", len(text), 0x4E4F534A))
        out.write(text)
        out.write(struct.pack("<II", len(data), 0x004E4942))
        out.write(data)


@node("SaveGLB")
def save_glb(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    mesh: Mesh = inputs["mesh"]
    metadata = file_metadata(ctx)
    results: list[dict[str, Any]] = []
    prefix = str(inputs.get("filename_prefix", "mesh/ComfyUI"))
    for i in range(int(np.asarray(mesh.vertices).shape[0])):
        path, filename, subfolder = next_output_path(ctx.dirs.output, prefix, "glb")
        write_glb(np.asarray(mesh.vertices)[i], np.asarray(mesh.faces)[i], path, metadata)
        results.append({"filename": filename, "subfolder": subfolder, "type": "output"})
    return NodeResult(ui={"3d": results})


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return None if value is None else str(value)


@node("Preview3D")
def preview_3d(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    return NodeResult(ui={"result": [str(inputs.get("model_file", "")), _jsonable(inputs.get("camera_info"))]})


@node("Preview3DAnimation")
def preview_3d_animation(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    return preview_3d(ctx, inputs)


def _tripo(name: str) -> None:
    schema = catalogue()[name]

    def run(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
        view = NodeView(name, schema, inputs)
        task_id = str(uuid.UUID(int=random.Random(json.dumps(view.literals(), default=repr)).getrandbits(128)))
        model_file = f"tripo_model_{task_id}.glb"
        mesh = tetrahedron()
        write_glb(mesh.vertices[0], mesh.faces[0], ctx.dirs.output / model_file, None)
        outputs = list(schema.get("output", []))
        values = [model_file if t == "STRING" else task_id for t in outputs]
        return NodeResult(outputs=tuple(values))

    run.__name__ = f"tripo_{name}"
    node(name)(run)


for _name in (
    "TripoTextToModelNode", "TripoImageToModelNode", "TripoMultiviewToModelNode", "TripoTextureNode",
    "TripoRefineNode", "TripoRigNode", "TripoRetargetNode", "TripoConversionNode",
):
    _tripo(_name)


# -- training plots ---------------------------------------------------------------------------------------


@node("LossGraphNode")
def loss_graph(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    values = [float(v) for v in (inputs.get("loss") or {}).get("loss", [])]
    if not values:
        raise ValueError("min() arg is an empty sequence")  # ComfyUI's error on an empty loss map
    width, height, margin = 800, 480, 40
    img = Image.new("RGB", (width + margin, height + margin), "white")
    draw = ImageDraw.Draw(img)
    low, high = min(values), max(values)
    span = (high - low) or 1.0  # ComfyUI divides by zero on a flat curve; a flat line here
    scaled = [(v - low) / span for v in values]
    prev = (margin, height - int(scaled[0] * height))
    for i, v in enumerate(scaled[1:], start=1):
        point = (margin + int(i / len(values) * width), height - int(v * height))
        draw.line([prev, point], fill="blue", width=2)
        prev = point
    draw.line([(margin, 0), (margin, height)], fill="black", width=2)
    draw.line([(margin, height), (width + margin, height)], fill="black", width=2)
    font = ImageFont.load_default()
    draw.text((5, height // 2), "Loss", font=font, fill="black")
    draw.text((width // 2, height + 10), "Steps", font=font, fill="black")
    draw.text((margin - 30, 0), f"{high:.2f}", font=font, fill="black")
    draw.text((margin - 30, height - 10), f"{low:.2f}", font=font, fill="black")
    info = PngInfo()
    for key, value in file_metadata(ctx).items():
        info.add_text(key, value)
    name = f"{inputs.get('filename_prefix', 'loss_graph')}_{datetime.datetime.now().strftime('%Y%m%d_%H%M%S')}.png"
    root = os.path.abspath(ctx.dirs.temp)
    path = os.path.abspath(os.path.join(root, name))
    if os.path.commonpath((root, path)) != root:
        raise ValueError(f"path {name!r} is outside the temp folder")
    img.save(path, pnginfo=info)
    return NodeResult(ui={"images": [{"filename": name, "subfolder": "", "type": "temp"}]})


# -- model save nodes -------------------------------------------------------------------------------------

MODEL_METADATA_KEY = "reelforge_model"


def _record(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _record(getattr(value, f.name)) for f in dataclasses.fields(value)
                if not isinstance(getattr(value, f.name), np.ndarray)}
    if isinstance(value, (list, tuple)):
        return [_record(v) for v in value]
    return value if isinstance(value, (str, int, float, bool)) or value is None else repr(value)


def save_model_file(
    ctx: ExecContext, prefix: str, records: dict[str, Any], metadata: dict[str, str] | None = None
) -> Path:
    """A placeholder safetensors file named like ComfyUI's save nodes name theirs; what it stands for in its
    metadata (the preview has no weights to write)."""
    path, _filename, _subfolder = next_output_path(ctx.dirs.output, prefix, "safetensors")
    meta = dict(metadata) if metadata is not None else {}
    meta[MODEL_METADATA_KEY] = json.dumps({k: _record(v) for k, v in records.items()}, default=repr)
    # Written under a name no listing accepts, then renamed: loaders never list a half-written file.
    tmp = path.with_name(f".{uuid.uuid4().hex}.partial")
    try:
        save_file({"reelforge.placeholder": np.zeros((1,), dtype=np.float32)}, str(tmp), metadata=meta)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _checkpoint_metadata(ctx: ExecContext) -> dict[str, str]:
    meta = {"prompt": json.dumps(ctx.prompt) if ctx.prompt is not None else ""}
    for key in ctx.extra_pnginfo or {}:
        meta[key] = json.dumps((ctx.extra_pnginfo or {})[key])
    return meta


@node("CheckpointSave")
def checkpoint_save(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    prefix = str(inputs.get("filename_prefix", "checkpoints/ComfyUI"))
    records = {"model": inputs.get("model"), "clip": inputs.get("clip"), "vae": inputs.get("vae")}
    save_model_file(ctx, prefix, records, _checkpoint_metadata(ctx))
    return NodeResult()


@node("ImageOnlyCheckpointSave")
def image_only_checkpoint_save(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    prefix = str(inputs.get("filename_prefix", "checkpoints/ComfyUI"))
    records = {"model": inputs.get("model"), "clip_vision": inputs.get("clip_vision"), "vae": inputs.get("vae")}
    save_model_file(ctx, prefix, records, _checkpoint_metadata(ctx))
    return NodeResult()


@node("ModelSave")
def model_save(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    prefix = str(inputs.get("filename_prefix", "diffusion_models/ComfyUI"))
    save_model_file(ctx, prefix, {"model": inputs.get("model")}, _checkpoint_metadata(ctx))
    return NodeResult()


@node("VAESave")
def vae_save(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    vae: Vae = inputs["vae"]
    save_model_file(ctx, str(inputs.get("filename_prefix", "vae/ComfyUI_vae")), {"vae": vae}, _checkpoint_metadata(ctx))
    return NodeResult()


# The text-encoder parts CLIPSave writes to separate files, by the prefix of their state-dict keys.
_CLIP_PARTS = ("clip_l", "clip_g", "clip_h", "t5xxl", "pile_t5xl", "mt5xl", "umt5xxl", "t5base", "gemma2_2b", "llama")


def clip_part(name: str) -> str:
    """Which CLIPSave file a text encoder goes to ('' = the file without a suffix)."""
    lower = name.lower().replace("-", "_")
    for part in sorted(_CLIP_PARTS, key=len, reverse=True):  # umt5xxl before t5xxl
        if part in lower or part.replace("_", "") in lower:
            return part
    return ""


@node("CLIPSave")
def clip_save(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    clip: Clip = inputs["clip"]
    prefix = str(inputs.get("filename_prefix", "clip/ComfyUI"))
    meta = {"format": "pt", **_checkpoint_metadata(ctx)}
    parts: dict[str, list[str]] = {}
    for name in clip.names:
        parts.setdefault(clip_part(name), []).append(name)
    for part in [*_CLIP_PARTS, ""]:  # ComfyUI's order of prefixes
        if part in parts:
            records = {"clip": dataclasses.replace(clip, names=tuple(parts[part]))}
            save_model_file(ctx, f"{prefix}_{part}" if part else prefix, records, meta)
    return NodeResult()


@node("LoraSave")
def lora_save(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    model, clip = inputs.get("model_diff"), inputs.get("text_encoder_diff")
    if model is None and clip is None:
        return NodeResult()  # ComfyUI saves nothing without a difference to extract
    prefix = str(inputs.get("filename_prefix", "loras/ComfyUI_extracted_lora"))
    records = {"model_diff": model, "text_encoder_diff": clip, "rank": inputs.get("rank", 8),
               "lora_type": inputs.get("lora_type", "standard")}
    save_model_file(ctx, prefix, records)
    return NodeResult()

