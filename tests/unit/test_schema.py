"""ComfyUI's validation over /object_info data (reelforge.comfy.schema) against the core catalogue."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from reelforge.comfy.schema import validate_graph, with_model_lists
from reelforge.preview.registry import WorkerDirs, default_registry
from reelforge.preview.validation import validate_prompt as preview_validate
from reelforge.templates.catalogue import core_catalogue

CKPT = "sd_xl_base_1.0.safetensors"
MODELS = {"checkpoints": [CKPT]}


@pytest.fixture(scope="module")
def info() -> dict[str, Any]:
    return core_catalogue().object_info()


def sdxl() -> dict[str, Any]:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 1024, "height": 1024, "batch_size": 1}},
        "5": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["1", 0],
                "seed": 0,
                "steps": 20,
                "cfg": 7,
                "sampler_name": "euler",
                "scheduler": "normal",
                "positive": ["2", 0],
                "negative": ["3", 0],
                "latent_image": ["4", 0],
                "denoise": 1.0,
            },
        },
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "t"}},
    }


def only_error(outcome: Any, node_id: str) -> dict[str, Any]:
    errors = outcome.node_errors[node_id]["errors"]
    assert len(errors) == 1, errors
    return dict(errors[0])


def test_good_graph_passes_and_is_coerced(info: dict[str, Any]) -> None:
    graph = sdxl()
    out = validate_graph(graph, info, MODELS)
    assert out.ok and out.clean and out.outputs_to_execute == ["7"]
    assert out.coerced["5"]["inputs"]["cfg"] == 7.0 and isinstance(out.coerced["5"]["inputs"]["cfg"], float)
    assert graph == sdxl()  # not mutated


def test_missing_model_is_value_not_in_list(info: dict[str, Any]) -> None:
    out = validate_graph(sdxl(), info, {"checkpoints": ["a.safetensors"]})
    assert out.ok is False and out.error["type"] == "prompt_outputs_failed_validation"
    err = only_error(out, "1")
    assert err["type"] == "value_not_in_list"
    assert err["details"] == f"ckpt_name: '{CKPT}' not in ['a.safetensors']"
    assert out.node_errors["1"]["dependent_outputs"] == ["7"]
    # without a model list the catalogue's (empty) combo applies, as on a worker without models
    assert only_error(validate_graph(sdxl(), info), "1")["details"] == f"ckpt_name: '{CKPT}' not in []"
    # long lists are not echoed
    many = [f"m{i}.safetensors" for i in range(21)]
    err = only_error(validate_graph(sdxl(), info, {"checkpoints": many}), "1")
    assert err["details"] == f"ckpt_name: '{CKPT}' not in (list of length 21)"
    assert err["extra_info"]["input_config"] is None


def test_bad_combo_min_max_type(info: dict[str, Any]) -> None:
    graph = sdxl()
    graph["5"]["inputs"].update(sampler_name="nope", steps=0, cfg=101)
    graph["4"]["inputs"]["width"] = "wide"
    out = validate_graph(graph, info, MODELS)
    errors = {e["type"]: e for e in out.node_errors["5"]["errors"]}
    assert errors["value_smaller_than_min"]["message"] == "Value 0 smaller than min of 1"
    assert errors["value_bigger_than_max"]["message"] == "Value 101.0 bigger than max of 100.0"
    assert errors["value_not_in_list"]["details"].startswith("sampler_name: 'nope' not in ")
    err = only_error(out, "4")
    assert err["type"] == "invalid_input_type"
    assert err["message"] == "Failed to convert an input value to a INT value"
    assert err["details"] == "width, wide, invalid literal for int() with base 10: 'wide'"


def test_missing_class_and_missing_input_and_type_mismatch(info: dict[str, Any]) -> None:
    graph = sdxl()
    graph["8"] = {"class_type": "IPAdapterAdvanced", "inputs": {}}
    out = validate_graph(graph, info, MODELS)
    assert out.error == {
        "type": "invalid_prompt",
        "message": "Cannot execute because node IPAdapterAdvanced does not exist.",
        "details": "Node ID '#8'",
        "extra_info": {},
    }
    graph = sdxl()
    del graph["5"]["inputs"]["seed"]
    graph["6"]["inputs"]["vae"] = ["1", 0]  # MODEL into VAE
    out = validate_graph(graph, info, MODELS)
    assert only_error(out, "5")["type"] == "required_input_missing"
    assert only_error(out, "6")["details"] == "vae, received_type(MODEL) mismatch input_type(VAE)"


def test_input_files_are_left_to_the_worker(info: dict[str, Any]) -> None:
    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "uploaded_later.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "t"}},
    }
    assert validate_graph(graph, info).clean
    data = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}},
        "2": {
            "class_type": "LoadImageTextSetFromFolderNode",
            "inputs": {"folder": "hero_dataset", "clip": ["1", 1]},
        },
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
    }
    assert validate_graph(data, info, MODELS).clean
    strict = validate_graph(data, info, MODELS, check_input_folders=True)
    assert only_error(strict, "2")["details"] == "folder: 'hero_dataset' not in ['3d']"


def test_with_model_lists_keeps_builtin_entries_and_copies(info: dict[str, Any]) -> None:
    before = copy.deepcopy(info["VAELoader"])
    filled = with_model_lists(info, {"vae": ["sdxl_vae.safetensors"], "loras": ["x.safetensors"]})
    assert filled["VAELoader"]["input"]["required"]["vae_name"][0] == ["pixel_space", "sdxl_vae.safetensors"]
    assert filled["LoraLoader"]["input"]["required"]["lora_name"][0] == ["x.safetensors"]
    assert info["VAELoader"] == before
    assert filled["KSampler"] is info["KSampler"]


def test_object_info_and_registry_validation_agree(info: dict[str, Any], tmp_path: Path) -> None:
    """One implementation: the preview registry's validation and the /object_info one give the same answers."""
    dirs = WorkerDirs(tmp_path / "w")
    dirs.create()
    reg = default_registry()
    registry_info = reg.object_info(dirs)
    graphs = [
        {
            "1": {"class_type": "EmptyImage", "inputs": {"width": 0, "height": 8, "batch_size": 1, "color": 0}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "t"}},
        },
        {
            "1": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 8, "height": 8}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "t"}},
        },
        {"2": {"class_type": "SaveImage", "inputs": {"images": ["99", 0], "filename_prefix": "t"}}},
    ]
    for graph in graphs:
        ours = validate_graph(graph, registry_info)
        theirs = preview_validate(graph, reg, dirs)
        strip = [e.pop("extra_info", None) for n in (ours, theirs) for v in n.node_errors.values() for e in v["errors"]]
        assert strip
        assert ours.response_body() == theirs.response_body()
        assert ours.ok is False
