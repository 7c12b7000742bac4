"""LoRA training nodes: LoadImageTextSetFromFolderNode, TrainLoraNode, SaveLoRANode.

``TrainLoraNode`` trains nothing: it makes LoRA weights of the declared rank and algorithm, with the key
layout ComfyUI's trainer writes (``diffusion_model.<module>.lora_up.weight`` ...), whose values are a
deterministic function of seed, base model, training images, captions and settings. ``SaveLoRANode``
writes them as a real safetensors file into ``output/loras``, which the worker lists as a LoRA folder, so
the file is immediately loadable by ``LoraLoader`` (as on ComfyUI).

As in ComfyUI 0.3.64, the training loop sends no WebSocket ``progress`` and does not check the interrupt
flag (its progress goes to a console tqdm bar); its modelled GPU time is per step (``latency.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from dataclasses import dataclass, field
from math import gcd
from typing import Any

import numpy as np
from PIL import Image
from safetensors.numpy import save_file

from reelforge.preview.modelfiles import listed, resolve
from reelforge.preview.naming import next_counter, split_prefix
from reelforge.preview.nodes.sampling import encode_text
from reelforge.preview.registry import ExecContext, NodeResult, WorkerDirs, node
from reelforge.preview.render.image import learn_identity
from reelforge.preview.values import Cond, Model, identity_from_metadata, identity_metadata, recipe_of

# -- dataset --------------------------------------------------------------------------------------------

_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")


def input_subfolders(dirs: WorkerDirs) -> list[str]:
    """ComfyUI's ``folder_paths.get_input_subfolders``: every folder below input/, relative, sorted."""
    base = dirs.input
    if not base.is_dir():
        return []
    folders: list[str] = []
    for root, _dirs, _files in os.walk(base):
        rel = os.path.relpath(root, base)
        if rel != ".":
            folders.append(rel.replace(os.sep, "/"))
    return sorted(folders)


def dataset_files(folder: str) -> list[str]:
    """Image files of a dataset folder; kohya-style ``N_name`` subfolders are repeated N times."""
    files: list[str] = []
    for item in sorted(os.listdir(folder)):
        path = os.path.join(folder, item)
        if item.lower().endswith(_IMAGE_EXTENSIONS):
            files.append(path)
        elif os.path.isdir(path):
            head = item.split("_")[0]
            repeat = int(head) if head.isdigit() else 1
            inner = sorted(f for f in os.listdir(path) if f.lower().endswith(_IMAGE_EXTENSIONS))
            files.extend([os.path.join(path, f) for f in inner] * repeat)
    return files


def load_dataset_images(files: list[str], resize_method: str, width: int | None, height: int | None) -> np.ndarray:
    """ComfyUI's ``load_and_process_images``: every image to the first one's size (or the given size)."""
    images: list[np.ndarray] = []
    w, h = width, height
    for path in files:
        with Image.open(path) as opened:
            img = opened.point(lambda v: v * (1 / 255)) if opened.mode == "I" else opened
            img = img.convert("RGB")
        if w is None and h is None:
            w, h = img.size
        w = w if w is not None else img.size[0]
        h = h if h is not None else img.size[1]
        if img.size != (w, h):
            if resize_method in ("Stretch", "Pad"):
                img = img.resize((w, h), Image.Resampling.LANCZOS)
            elif resize_method == "Crop":
                img = img.crop((0, 0, w, h))
            else:
                raise ValueError(
                    "Your input image size does not match the first image in the dataset. Either select a valid "
                    "resize method or use the same size for all images."
                )
        images.append(np.asarray(img, dtype=np.float32)[None] / np.float32(255.0))
    if not images:
        raise RuntimeError("torch.cat(): expected a non-empty list of Tensors")
    return np.concatenate(images, axis=0)


@node("LoadImageTextSetFromFolderNode", combos=lambda dirs: {"folder": input_subfolders(dirs)})
def load_image_text_set_from_folder(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    clip = inputs.get("clip")
    folder = str(inputs["folder"])
    base = os.path.abspath(ctx.dirs.input)
    sub = os.path.abspath(os.path.join(base, folder))
    if os.path.commonpath((base, sub)) != base:
        raise ValueError(f"folder {folder!r} is outside the input folder")
    files = dataset_files(sub)
    captions: list[str] = []
    for path in files:
        caption_path = os.path.splitext(path)[0] + ".txt"
        if os.path.exists(caption_path):
            with open(caption_path, encoding="utf-8") as f:
                captions.append(f.read().strip())
        else:
            captions.append("")
    width = int(inputs.get("width", -1))
    height = int(inputs.get("height", -1))
    method = str(inputs.get("resize_method", "None"))
    images = load_dataset_images(files, method, width if width != -1 else None, height if height != -1 else None)
    conds: list[Cond] = []
    for caption in captions:
        conds.extend(encode_text(clip, caption))
    return NodeResult(outputs=(images, conds))


# -- LoRA weights ---------------------------------------------------------------------------------------

# (module name, out features, in features) of a few layers per family, as in the real networks.
_LAYERS: dict[str, tuple[tuple[str, int, int], ...]] = {
    "sdxl": (
        ("diffusion_model.input_blocks.4.1.transformer_blocks.0.attn1.to_q", 640, 640),
        ("diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k", 640, 2048),
        ("diffusion_model.input_blocks.7.1.transformer_blocks.0.attn1.to_v", 1280, 1280),
        ("diffusion_model.middle_block.1.transformer_blocks.0.attn1.to_out.0", 1280, 1280),
        ("diffusion_model.output_blocks.2.1.transformer_blocks.0.attn2.to_v", 1280, 2048),
        ("diffusion_model.output_blocks.4.1.transformer_blocks.0.ff.net.2", 640, 2560),
    ),
    "flux": (
        ("diffusion_model.double_blocks.0.img_attn.qkv", 9216, 3072),
        ("diffusion_model.double_blocks.0.img_attn.proj", 3072, 3072),
        ("diffusion_model.double_blocks.0.txt_attn.proj", 3072, 3072),
        ("diffusion_model.single_blocks.0.linear2", 3072, 15360),
    ),
    "sd15": (
        ("diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q", 320, 320),
        ("diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k", 320, 768),
        ("diffusion_model.middle_block.1.transformer_blocks.0.attn1.to_v", 1280, 1280),
        ("diffusion_model.output_blocks.11.1.transformer_blocks.0.attn2.to_out.0", 320, 320),
    ),
}


@dataclass(frozen=True)
class LoraWeights:
    """LORA_MODEL: the trained adapter's tensors (name -> array) and what it was trained with."""

    rank: int
    algorithm: str
    steps: int
    lora_dtype: str  # bf16 | fp32 as chosen; bf16 is stored as float16 (numpy has no bfloat16)
    base_model: str
    tensors: dict[str, np.ndarray] = field(repr=False, compare=False)
    metadata: dict[str, str] = field(default_factory=dict, compare=False)
    digest: str = ""

    @property
    def keys(self) -> list[str]:
        return sorted(self.tensors)


def _divisor_block(out_features: int, rank: int, limit: int = 256) -> tuple[int, int]:
    """(block count, block size) for OFT: at least ``rank`` blocks, blocks of at most ``limit`` rows."""
    for blocks in range(max(1, rank), out_features + 1):
        if out_features % blocks == 0 and out_features // blocks <= limit:
            return blocks, out_features // blocks
    return out_features, 1


def _layer_tensors(
    rng: np.random.Generator, algorithm: str, rank: int, out_f: int, in_f: int, scale: float
) -> dict[str, np.ndarray]:
    def normal(*shape: int, std: float) -> np.ndarray:
        return rng.standard_normal(shape, dtype=np.float32) * np.float32(std)

    down_std, up_std = 1.0 / np.sqrt(in_f), scale
    if algorithm == "LoHa":
        return {
            "hada_w1_a": normal(out_f, rank, std=up_std),
            "hada_w1_b": normal(rank, in_f, std=down_std),
            "hada_w2_a": normal(out_f, rank, std=up_std),
            "hada_w2_b": normal(rank, in_f, std=down_std),
        }
    if algorithm == "LoKr":
        a = gcd(out_f, 8)
        b = gcd(in_f, 8)
        return {
            "lokr_w1": normal(a, b, std=0.1),
            "lokr_w2_a": normal(out_f // a, rank, std=up_std),
            "lokr_w2_b": normal(rank, in_f // b, std=down_std),
        }
    if algorithm == "OFT":
        blocks, size = _divisor_block(out_f, rank)
        return {"oft_blocks": normal(blocks, size, size, std=scale)}
    return {"lora_up.weight": normal(out_f, rank, std=up_std), "lora_down.weight": normal(rank, in_f, std=down_std)}


def make_lora(
    *,
    digest: str,
    family: str,
    algorithm: str,
    rank: int,
    steps: int,
    learning_rate: float,
    lora_dtype: str,
    base_model: str,
    metadata: dict[str, str],
) -> LoraWeights:
    """Deterministic LoRA tensors for ``digest`` (the hash of everything the training saw)."""
    rng = np.random.default_rng(int.from_bytes(bytes.fromhex(digest)[:8], "little"))
    dtype = np.float32 if lora_dtype == "fp32" else np.float16
    # Trained "up" matrices grow with learning rate and steps (zero at initialisation); bounded.
    scale = float(min(0.05, learning_rate * np.sqrt(max(1, steps)) * 0.5))
    tensors: dict[str, np.ndarray] = {}
    for module, out_f, in_f in _LAYERS.get(family, _LAYERS["sdxl"]):
        for suffix, array in _layer_tensors(rng, algorithm, rank, out_f, in_f, scale).items():
            tensors[f"{module}.{suffix}"] = array.astype(dtype)
        tensors[f"{module}.alpha"] = np.array(1.0, dtype=dtype)  # ComfyUI's trainer: alpha 1.0
    return LoraWeights(
        rank=rank,
        algorithm=algorithm,
        steps=steps,
        lora_dtype=lora_dtype,
        base_model=base_model,
        tensors=tensors,
        metadata=metadata,
        digest=digest,
    )


def _existing_steps(name: str) -> int:
    """ComfyUI: ``int(existing_lora.split("_steps_")[0].split("_")[-1])`` (ValueError if not in the name)."""
    return int(name.split("_steps_")[0].split("_")[-1])


def _array_hash(h: Any, array: Any) -> None:
    a = np.ascontiguousarray(np.asarray(array, dtype=np.float32))
    h.update(repr(a.shape).encode())
    h.update(a.tobytes())


def _train_lora_combos(dirs: WorkerDirs) -> dict[str, list[str]]:
    return {"existing_lora": [*listed(dirs, "loras"), "[None]"]}


@node("TrainLoraNode", combos=_train_lora_combos)
def train_lora(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    model: Model = inputs["model"]
    latents: dict[str, Any] = inputs["latents"]
    positive: list[Cond] = list(inputs["positive"])
    samples = np.asarray(latents["samples"])
    num_images = int(samples.shape[0])
    if len(positive) == 1 and num_images > 1:
        positive = positive * num_images
    elif len(positive) != num_images:
        raise ValueError(
            f"Number of positive conditions ({len(positive)}) does not match number of images ({num_images})."
        )
    steps = int(inputs.get("steps", 16))
    rank = int(inputs.get("rank", 8))
    algorithm = str(inputs.get("algorithm", "LoRA"))
    lora_dtype = str(inputs.get("lora_dtype", "bf16"))
    learning_rate = float(inputs.get("learning_rate", 0.0005))
    seed = int(inputs.get("seed", 0))
    existing = str(inputs.get("existing_lora", "[None]"))
    existing_steps = 0
    h = hashlib.sha256()
    if existing != "[None]":
        path = resolve(ctx.dirs, "loras", existing)
        existing_steps = _existing_steps(existing)
        h.update(path.read_bytes() if path is not None else existing.encode())
    settings = {
        k: inputs.get(k)
        for k in (
            "batch_size",
            "grad_accumulation_steps",
            "optimizer",
            "loss_function",
            "training_dtype",
            "gradient_checkpointing",
        )
    }
    h.update(
        json.dumps(
            {
                "seed": seed,
                "steps": steps,
                "rank": rank,
                "algorithm": algorithm,
                "lora_dtype": lora_dtype,
                "learning_rate": learning_rate,
                "model": [model.name, model.family, [list(x) for x in model.loras]],
                "captions": [c.text for c in positive],
                "settings": settings,
            },
            sort_keys=True,
            default=repr,
        ).encode()
    )
    recipe = recipe_of(latents)
    _array_hash(h, samples.shape)
    images = recipe.extras.get("start_images", recipe.start_image)
    if images is not None:
        _array_hash(h, images)
    digest = h.hexdigest()
    total_steps = steps + existing_steps
    metadata = {
        "reelforge_preview": "true",
        "algorithm": algorithm,
        "rank": str(rank),
        "alpha": "1.0",
        "steps": str(total_steps),
        "lora_dtype": lora_dtype,
        "stored_dtype": "float32" if lora_dtype == "fp32" else "float16",
        "training_dtype": str(inputs.get("training_dtype", "bf16")),
        "learning_rate": repr(learning_rate),
        "optimizer": str(inputs.get("optimizer", "AdamW")),
        "loss_function": str(inputs.get("loss_function", "MSE")),
        "seed": str(seed),
        "base_model": model.name,
        "num_images": str(num_images),
        "existing_lora": existing,
        "digest": digest,
    }
    if images is not None:  # what the LoRA "learned": the subject card of its training images
        metadata.update(identity_metadata(learn_identity(np.asarray(images))))
    lora = make_lora(
        digest=digest,
        family=model.family,
        algorithm=algorithm,
        rank=rank,
        steps=total_steps,
        learning_rate=learning_rate,
        lora_dtype=lora_dtype,
        base_model=model.name,
        metadata=metadata,
    )
    rng = np.random.default_rng(int(digest[8:24], 16))
    t = np.arange(steps, dtype=np.float64)
    losses = 0.08 + 0.12 * np.exp(-t / max(1.0, steps / 3)) + 0.01 * np.abs(rng.standard_normal(steps))
    loss_map = {"loss": [float(v) for v in losses]}
    model_with_lora = model.with_lora(f"trained_lora_{digest[:12]}", 1.0, identity_from_metadata(metadata))
    return NodeResult(outputs=(model_with_lora, lora, loss_map, total_steps))


# -- saving ---------------------------------------------------------------------------------------------


@node("SaveLoRANode")
def save_lora(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    lora: LoraWeights = inputs["lora"]
    prefix = str(inputs.get("prefix", "loras/ComfyUI_trained_lora"))
    steps = inputs.get("steps")
    folder, name, _subfolder = split_prefix(ctx.dirs.output, prefix)
    folder.mkdir(parents=True, exist_ok=True)
    counter = next_counter(folder, name)
    steps_part = "" if steps is None else f"_{steps}_steps"
    filename = f"{name}{steps_part}_{counter:05}_.safetensors"
    target = folder / filename
    # Written under a name no listing accepts, then renamed: never listed half-written.
    tmp = folder / f".{uuid.uuid4().hex}.partial"
    try:
        save_file(dict(lora.tensors), str(tmp), metadata=dict(lora.metadata))
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return NodeResult(outputs=(), ui=None)


@node("LoraModelLoader")
def lora_model_loader(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    """Apply a LORA_MODEL straight from TrainLoraNode (no file): its learned identity joins the model."""
    model: Model = inputs["model"]
    lora = inputs.get("lora")
    strength = float(inputs.get("strength_model", 1.0))
    if strength == 0:  # ComfyUI returns the model untouched
        return NodeResult(outputs=(model,))
    if isinstance(lora, LoraWeights):
        name, identity = f"trained_lora_{lora.digest[:12]}", identity_from_metadata(lora.metadata)
    else:
        name, identity = "lora_model", None
    return NodeResult(outputs=(model.with_lora(name, strength, identity),))
