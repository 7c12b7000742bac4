"""IP-Adapter pack nodes (cubiq/ComfyUI_IPAdapter_plus): IPAdapterUnifiedLoader, IPAdapterAdvanced.

The loader returns the model unchanged plus an IPADAPTER pipeline naming the files the pack would load for
the preset (the pack picks them by file-name pattern from ``models/clip_vision`` and ``models/ipadapter``;
the preview worker does not require them on disk). ``IPAdapterAdvanced`` attaches the reference image to the
model: ``Model.ipadapter`` gets ``(fingerprint, weight)`` and ``Model.patches`` gets
``("ipadapter_image:<fingerprint>", image [H,W,C])`` so an image renderer can show the reference's influence.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any

import numpy as np

from reelforge.preview.registry import ExecContext, NodeResult, node
from reelforge.preview.values import Model

# preset -> (clip_vision file, ipadapter file for SD1.5, ipadapter file for SDXL); None = not supported.
# Names as the pack's README lists them for the Unified Loader (it matches them by pattern).
PRESET_FILES: dict[str, tuple[str, str | None, str | None]] = {
    "LIGHT - SD1.5 only (low strength)": (
        "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors",
        "ip-adapter_sd15_light_v11.bin",
        None,
    ),
    "STANDARD (medium strength)": (
        "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors",
        "ip-adapter_sd15.safetensors",
        "ip-adapter_sdxl_vit-h.safetensors",
    ),
    "VIT-G (medium strength)": (
        "CLIP-ViT-bigG-14-laion2B-39B-b160k.safetensors",
        "ip-adapter_sd15_vit-G.safetensors",
        "ip-adapter_sdxl.safetensors",
    ),
    "PLUS (high strength)": (
        "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors",
        "ip-adapter-plus_sd15.safetensors",
        "ip-adapter-plus_sdxl_vit-h.safetensors",
    ),
    "PLUS FACE (portraits)": (
        "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors",
        "ip-adapter-plus-face_sd15.safetensors",
        "ip-adapter-plus-face_sdxl_vit-h.safetensors",
    ),
    "FULL FACE - SD1.5 only (portraits stronger)": (
        "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors",
        "ip-adapter-full-face_sd15.safetensors",
        None,
    ),
}


def image_fingerprint(image: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(image, dtype=np.float32).tobytes()).hexdigest()[:16]


@node("IPAdapterUnifiedLoader", loads_model=("ipadapter", "preset"))
def ipadapter_unified_loader(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    model = inputs["model"]
    preset = str(inputs["preset"])
    is_sdxl = isinstance(model, Model) and model.family == "sdxl"
    files = PRESET_FILES.get(preset)
    if files is None:
        raise Exception(f"invalid type '{preset.lower()}'")
    clip_vision, sd15, sdxl = files
    ipadapter_file = sdxl if is_sdxl else sd15
    if ipadapter_file is None:  # the pack's messages for SD1.5-only presets on SDXL
        kind = "light" if preset.startswith("LIGHT") else "full face"
        raise Exception(f"{kind} model is not supported for SDXL")
    pipeline: dict[str, Any] = dict(inputs.get("ipadapter") or {})
    pipeline.update(
        {
            "preset": preset,
            "clipvision": {"file": clip_vision},
            "ipadapter": {"file": ipadapter_file},
            "insightface": {"provider": None, "model": None},
        }
    )
    return NodeResult(outputs=(model, pipeline))


@node("IPAdapterAdvanced")
def ipadapter_advanced(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    model = inputs["model"]
    pipeline = inputs["ipadapter"]
    if inputs.get("clip_vision") is None and not (isinstance(pipeline, dict) and "clipvision" in pipeline):
        raise Exception("Missing CLIPVision model.")
    if not isinstance(model, Model):
        raise TypeError(f"IPAdapterAdvanced expects a MODEL, got {type(model).__name__}")
    images = np.asarray(inputs["image"], dtype=np.float32)
    reference = images[0] if images.ndim == 4 else images
    weight = float(inputs.get("weight", 1.0))
    fingerprint = image_fingerprint(reference)
    patched = replace(
        model,
        ipadapter=(*model.ipadapter, (fingerprint, weight)),
        patches=(*model.patches, (f"ipadapter_image:{fingerprint}", reference)),
    )
    return NodeResult(outputs=(patched,))
