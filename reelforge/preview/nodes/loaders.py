"""Model loader nodes: checkpoints, UNETs, text encoders, VAEs, CLIP vision, ControlNets, upscalers, LoRAs.

Nothing is loaded: each loader checks that the worker lists the file (on disk or in the lock, see
``modelfiles.py``) and returns the placeholder record of ``values.py``. Combo lists are the worker's model
listings, re-read per request like ComfyUI's ``folder_paths.get_filename_list``.

The LoRA loaders also attach the LoRA's ``Identity`` to the model (docs/identity.md): the likeness learned
from its training images when the file's safetensors metadata carries one, else a face generated from the
file's sha256 (from its name when only the lock lists it), so any two LoRA files draw different subjects.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from reelforge.hashing import sha256_bytes, sha256_file
from reelforge.preview.modelfiles import listed, resolve
from reelforge.preview.registry import ExecContext, NodeResult, WorkerDirs, node
from reelforge.preview.values import (
    Clip,
    ClipVision,
    ControlNet,
    Identity,
    Model,
    UpscaleModel,
    Vae,
    identity_from_metadata,
)

# (pattern in the lower-cased file name, family); first match wins.
_FAMILIES: tuple[tuple[str, str], ...] = (
    (r"flf2v", "wan21_flf2v"),
    (r"s2v", "wan22_s2v"),
    (r"wan2\.?2.*5b|ti2v", "wan22_5b"),
    (r"wan", "wan"),
    (r"ace[_-]?step", "ace_step"),
    (r"flux", "flux"),
    (r"sd3|stable[_-]?diffusion[_-]?3", "sd3"),
    (r"xl|pony|illustrious", "sdxl"),
    (r"v1-5|sd15|sd_1\.5|1\.5", "sd15"),
)


def model_family(name: str) -> str:
    """Best guess of a model's architecture from its file name ('' if unknown)."""
    lower = name.lower()
    for pattern, family in _FAMILIES:
        if re.search(pattern, lower):
            return family
    return ""


def folder_combos(**inputs: str) -> Callable[[WorkerDirs], dict[str, list[str]]]:
    """Combo lists: input name -> the worker's listing of a model folder key."""

    def combos(dirs: WorkerDirs) -> dict[str, list[str]]:
        return {name: listed(dirs, folder) for name, folder in inputs.items()}

    return combos


# -- checkpoints and diffusion models -------------------------------------------------------------------


@node(
    "CheckpointLoaderSimple",
    combos=folder_combos(ckpt_name="checkpoints"),
    loads_model=("checkpoints", "ckpt_name"),
)
def checkpoint_loader_simple(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    name = str(inputs["ckpt_name"])
    resolve(ctx.dirs, "checkpoints", name)
    family = model_family(name)
    return NodeResult(outputs=(Model(name, family), Clip((name,), type=family), Vae(name)))


@node(
    "UNETLoader",
    combos=folder_combos(unet_name="diffusion_models"),
    loads_model=("diffusion_models", "unet_name"),
)
def unet_loader(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    name = str(inputs["unet_name"])
    resolve(ctx.dirs, "diffusion_models", name)
    dtype = str(inputs.get("weight_dtype", "default"))
    patches: tuple[tuple[str, Any], ...] = (("weight_dtype", dtype),) if dtype != "default" else ()
    return NodeResult(outputs=(Model(name, model_family(name), patches=patches),))


# -- text encoders --------------------------------------------------------------------------------------


@node("CLIPLoader", combos=folder_combos(clip_name="text_encoders"), loads_model=("text_encoders", "clip_name"))
def clip_loader(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    name = str(inputs["clip_name"])
    resolve(ctx.dirs, "text_encoders", name)
    return NodeResult(outputs=(Clip((name,), type=str(inputs.get("type", "stable_diffusion"))),))


@node(
    "DualCLIPLoader",
    combos=folder_combos(clip_name1="text_encoders", clip_name2="text_encoders"),
    loads_model=("text_encoders", "clip_name1"),
)
def dual_clip_loader(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    names = (str(inputs["clip_name1"]), str(inputs["clip_name2"]))
    for name in names:
        resolve(ctx.dirs, "text_encoders", name)
    return NodeResult(outputs=(Clip(names, type=str(inputs.get("type", "sdxl"))),))


# -- VAE, CLIP vision, ControlNet, upscale models ---------------------------------------------------------


def _vae_combos(dirs: WorkerDirs) -> dict[str, list[str]]:
    # ComfyUI's VAELoader.vae_list: the vae folder (+ TAESD pairs found in vae_approx) + "pixel_space".
    return {"vae_name": [*listed(dirs, "vae"), "pixel_space"]}


@node("VAELoader", combos=_vae_combos, loads_model=("vae", "vae_name"))
def vae_loader(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    name = str(inputs["vae_name"])
    if name != "pixel_space":
        resolve(ctx.dirs, "vae", name)
    return NodeResult(outputs=(Vae(name),))


@node("CLIPVisionLoader", combos=folder_combos(clip_name="clip_vision"), loads_model=("clip_vision", "clip_name"))
def clip_vision_loader(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    name = str(inputs["clip_name"])
    resolve(ctx.dirs, "clip_vision", name)
    return NodeResult(outputs=(ClipVision(name),))


@node(
    "ControlNetLoader",
    combos=folder_combos(control_net_name="controlnet"),
    loads_model=("controlnet", "control_net_name"),
)
def controlnet_loader(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    name = str(inputs["control_net_name"])
    resolve(ctx.dirs, "controlnet", name)
    return NodeResult(outputs=(ControlNet(name),))


def upscale_factor(name: str) -> int:
    """The scale an upscale model's name announces (``4x-UltraSharp``, ``RealESRGAN_x2``); 4 by default."""
    m = re.search(r"(?:^|[^0-9a-z])(\d)x|x(\d)(?:[^0-9]|$)", name.lower())
    if m:
        return int(m.group(1) or m.group(2))
    return 4


@node(
    "UpscaleModelLoader",
    combos=folder_combos(model_name="upscale_models"),
    loads_model=("upscale_models", "model_name"),
)
def upscale_model_loader(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    name = str(inputs["model_name"])
    resolve(ctx.dirs, "upscale_models", name)
    return NodeResult(outputs=(UpscaleModel(name, upscale_factor(name)),))


# -- LoRAs ----------------------------------------------------------------------------------------------

_MAX_HEADER = 100_000_000  # the safetensors library's own limit on the JSON header


def safetensors_metadata(path: Path) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file, read from its header only; {} when it is not one."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
            if len(head) != 8:
                return {}
            (length,) = struct.unpack("<Q", head)
            if length > _MAX_HEADER:
                return {}
            header = json.loads(handle.read(length))
    except (OSError, ValueError):  # unreadable, or not JSON: a LoRA file from elsewhere, still loadable
        return {}
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}


def lora_identity(path: Path | None, name: str) -> Identity:
    """What a LoRA draws: its learned identity, else one generated from its content (or name, without a file)."""
    if path is None:
        return Identity(key=sha256_bytes(f"lora-name:{name}".encode()))
    return identity_from_metadata(safetensors_metadata(path)) or Identity(key=sha256_file(path)[0])



@node("LoraLoader", combos=folder_combos(lora_name="loras"), loads_model=("loras", "lora_name"))
def lora_loader(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    model: Model = inputs["model"]
    clip: Clip | None = inputs.get("clip")
    strength_model = float(inputs.get("strength_model", 1.0))
    strength_clip = float(inputs.get("strength_clip", 1.0))
    if strength_model == 0 and strength_clip == 0:  # ComfyUI returns the inputs untouched
        return NodeResult(outputs=(model, clip))
    name = str(inputs["lora_name"])
    path = resolve(ctx.dirs, "loras", name)
    identity = lora_identity(path, name) if model is not None else None
    new_model = model.with_lora(name, strength_model, identity) if model is not None else None
    new_clip = replace(clip, loras=(*clip.loras, (name, strength_clip))) if clip is not None else None
    return NodeResult(outputs=(new_model, new_clip))


@node("LoraLoaderModelOnly", combos=folder_combos(lora_name="loras"), loads_model=("loras", "lora_name"))
def lora_loader_model_only(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    model: Model = inputs["model"]
    strength_model = float(inputs.get("strength_model", 1.0))
    if strength_model == 0:
        return NodeResult(outputs=(model,))
    name = str(inputs["lora_name"])
    path = resolve(ctx.dirs, "loras", name)
    return NodeResult(outputs=(model.with_lora(name, strength_model, lora_identity(path, name)),))
