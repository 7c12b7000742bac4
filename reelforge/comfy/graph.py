"""Pure helpers over API-format graphs: classes used, model files named, unique output prefixes."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

from reelforge.comfy.types import Graph, SavedModel

# Loader inputs that name a model file, and the model folder (ComfyUI folder key) they read from.
# Used to derive a job's model requirements from a graph when no manifest names them.
MODEL_INPUTS: dict[tuple[str, str], str] = {
    ("CheckpointLoaderSimple", "ckpt_name"): "checkpoints",
    ("ImageOnlyCheckpointLoader", "ckpt_name"): "checkpoints",
    ("UNETLoader", "unet_name"): "diffusion_models",
    ("VAELoader", "vae_name"): "vae",
    ("CLIPLoader", "clip_name"): "text_encoders",
    ("DualCLIPLoader", "clip_name1"): "text_encoders",
    ("DualCLIPLoader", "clip_name2"): "text_encoders",
    ("CLIPVisionLoader", "clip_name"): "clip_vision",
    ("LoraLoader", "lora_name"): "loras",
    ("LoraLoaderModelOnly", "lora_name"): "loras",
    ("ControlNetLoader", "control_net_name"): "controlnet",
    ("UpscaleModelLoader", "model_name"): "upscale_models",
    ("AudioEncoderLoader", "audio_encoder_name"): "audio_encoders",
    ("CheckpointLoader", "ckpt_name"): "checkpoints",
    ("unCLIPCheckpointLoader", "ckpt_name"): "checkpoints",
    ("TripleCLIPLoader", "clip_name1"): "text_encoders",
    ("TripleCLIPLoader", "clip_name2"): "text_encoders",
    ("TripleCLIPLoader", "clip_name3"): "text_encoders",
    ("QuadrupleCLIPLoader", "clip_name1"): "text_encoders",
    ("QuadrupleCLIPLoader", "clip_name2"): "text_encoders",
    ("QuadrupleCLIPLoader", "clip_name3"): "text_encoders",
    ("QuadrupleCLIPLoader", "clip_name4"): "text_encoders",
    ("DiffControlNetLoader", "control_net_name"): "controlnet",
    ("StyleModelLoader", "style_model_name"): "style_models",
    ("GLIGENLoader", "gligen_name"): "gligen",
    ("HypernetworkLoader", "hypernetwork_name"): "hypernetworks",
    ("PhotoMakerLoader", "photomaker_model_name"): "photomaker",
    ("ModelPatchLoader", "name"): "model_patches",
    ("CreateHookLora", "lora_name"): "loras",
    ("CreateHookLoraModelOnly", "lora_name"): "loras",
    ("CreateHookModelAsLora", "ckpt_name"): "checkpoints",
    ("CreateHookModelAsLoraModelOnly", "ckpt_name"): "checkpoints",
    # custom packs (deployments/comfyui/lock.yaml)
    ("IPAdapterModelLoader", "ipadapter_file"): "ipadapter",
}

# Folders whose files are "the model" for affinity: loading them costs seconds to minutes on a GPU.
# A LoRA counts too: the worker that last applied it keeps the patched model (and the file) at hand.
AFFINITY_FOLDERS = frozenset({"checkpoints", "diffusion_models", "loras"})


class ModelRef(BaseModel):
    """A model file a job needs: ComfyUI folder key and file name (relative path with '/')."""

    model_config = ConfigDict(frozen=True)

    folder: str
    name: str

    def __str__(self) -> str:
        return f"{self.folder}/{self.name}"


def node_classes(graph: Graph) -> set[str]:
    """Every class_type the graph uses."""
    return {str(n.get("class_type")) for n in graph.values() if isinstance(n, dict) and "class_type" in n}


def model_refs(graph: Graph) -> set[ModelRef]:
    """Model files the graph's loader nodes name (literal values only)."""
    refs: set[ModelRef] = set()
    for node in graph.values():
        cls = node.get("class_type")
        for name, value in (node.get("inputs") or {}).items():
            folder = MODEL_INPUTS.get((str(cls), name))
            if folder and isinstance(value, str):
                refs.add(ModelRef(folder=folder, name=value))
    return refs


def affinity_models(refs: set[ModelRef]) -> frozenset[ModelRef]:
    """The subset of model files whose load dominates a job's start-up cost."""
    return frozenset(r for r in refs if r.folder in AFFINITY_FOLDERS)


def stamp_prefixes(graph: Graph, tag: str) -> Graph:
    """Return a copy whose literal ``filename_prefix`` inputs end in ``_<tag>``, so outputs never collide.

    A real worker numbers files per prefix and folder; two jobs with the same prefix on one worker would
    race for counters and a re-run would look like the previous one's file. Stamping with the prompt id
    gives every job its own names.
    """
    stamped = copy.deepcopy(graph)
    for node in stamped.values():
        inputs: dict[str, Any] = node.get("inputs") or {}
        prefix = inputs.get("filename_prefix") if isinstance(inputs, dict) else None
        if isinstance(prefix, str):
            inputs["filename_prefix"] = f"{prefix}_{tag}"
        prefix = inputs.get("prefix") if node.get("class_type") == "SaveLoRANode" else None
        if isinstance(prefix, str):
            inputs["prefix"] = f"{prefix}_{tag}"
    return stamped


# Save nodes that write a model file but report nothing in history: (class, prefix input, default prefix, folder).
_MODEL_SAVES: dict[str, tuple[str, str, str]] = {
    "SaveLoRANode": ("prefix", "loras/ComfyUI_trained_lora", "loras"),
}


def saved_models(graph: Mapping[str, Any], executed_outputs: Iterable[str] | None = None) -> list[SavedModel]:
    """The model files a graph's save nodes write without listing them (see ``SavedModel``), in node order."""
    wanted = None if executed_outputs is None else {str(o) for o in executed_outputs}
    found = []
    for node_id in sorted(graph, key=lambda i: (0, int(i), "") if str(i).isdigit() else (1, 0, str(i))):
        node = graph[node_id]
        spec = _MODEL_SAVES.get(str(node.get("class_type"))) if isinstance(node, Mapping) else None
        if spec is None or (wanted is not None and str(node_id) not in wanted):
            continue
        input_name, default, folder = spec
        prefix = (node.get("inputs") or {}).get(input_name, default)
        if isinstance(prefix, str):
            found.append(SavedModel(node_id=str(node_id), folder=folder, prefix=prefix))
    return found
