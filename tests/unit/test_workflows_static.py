"""Static checks of workflows/*.json + manifests and deployments/comfyui/lock.yaml.

Plain json/yaml only (no dependency on the template engine): API format as ComfyUI exports it, links
and types against the real 0.3.64 node catalogue, manifests against their graphs, models and custom
node classes against the lock.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest
import yaml

from reelforge.templates.lock import load_lock

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / "workflows"
LOCK_PATH = ROOT / "deployments" / "comfyui" / "lock.yaml"
CATALOGUE_CANDIDATES = [
    ROOT / "reelforge" / "templates" / "catalogue" / "core.json",
    ROOT.parent / "shared" / "reference" / "comfyui-object-info-0.3.64.json",
]
EXPECTED = {
    "character_base_realistic",
    "character_base_stylized",
    "character_variation_realistic",
    "character_variation_stylized",
    "lora_train",
    "lora_test",
    "keyframe_ipadapter",
    "keyframe_pose",
    "keyframe_two_shot",
    "image_to_video",
    "first_last_frame",
    "talking_video",
    "voice_design",
    "voice_clone",
    "music",
    "upscale",
}
PRIMITIVES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
PARAM_TYPES = {"string", "int", "float", "bool", "choice", "image", "audio", "folder", "model"}
KINDS = {"image", "video", "audio", "lora", "upscale"}
OUTPUT_KINDS = {"image", "video", "audio", "lora", "text"}
# Inputs whose value is a file in the worker's input folder (checked by the node itself, not the combo).
INPUT_FILE_INPUTS = {("LoadImage", "image"), ("LoadAudio", "audio"), ("LoadImageTextSetFromFolderNode", "folder")}
# Loader inputs that name a model file, and the folder key it lives in.
LOADER_INPUTS = {
    ("CheckpointLoaderSimple", "ckpt_name"): "checkpoints",
    ("UNETLoader", "unet_name"): "diffusion_models",
    ("CLIPLoader", "clip_name"): "text_encoders",
    ("DualCLIPLoader", "clip_name1"): "text_encoders",
    ("DualCLIPLoader", "clip_name2"): "text_encoders",
    ("VAELoader", "vae_name"): "vae",
    ("LoraLoader", "lora_name"): "loras",
    ("CLIPVisionLoader", "clip_name"): "clip_vision",
    ("ControlNetLoader", "control_net_name"): "controlnet",
    ("UpscaleModelLoader", "model_name"): "upscale_models",
    ("AudioEncoderLoader", "audio_encoder_name"): "audio_encoders",
}


def _catalogue() -> dict:
    for path in CATALOGUE_CANDIDATES:
        if path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            if "KSampler" in data:  # a full catalogue, not a reduced one
                return data
    pytest.skip("no ComfyUI 0.3.64 object_info catalogue found (expected ../shared/reference)")


def _custom_catalogue() -> dict:
    """Schemas of custom pack classes, where the preview helper has written them."""
    out: dict = {}
    for path in sorted((ROOT / "reelforge" / "preview" / "catalogue").glob("custom_*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        out.update({k: v for k, v in data.items() if not k.startswith("__")})
    return out


def _names() -> list[str]:
    return sorted(p.stem for p in WORKFLOWS.glob("*.json"))


def _graph(name: str) -> dict:
    return json.loads((WORKFLOWS / f"{name}.json").read_text(encoding="utf-8"))


def _manifest(name: str) -> dict:
    return yaml.safe_load((WORKFLOWS / f"{name}.manifest.yaml").read_text(encoding="utf-8"))


def _is_link(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def _spec_type(spec) -> tuple[str, list | None, dict]:
    """(type, combo options or None, options dict) of one input spec in object_info."""
    head = spec[0]
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if isinstance(head, list):
        return "COMBO", head, opts
    if head == "COMBO":
        return "COMBO", list(opts.get("options", [])), opts
    return head, None, opts


def _inputs(info: dict) -> dict:
    return {**info["input"].get("required", {}), **info["input"].get("optional", {})}


def _by_title(graph: dict) -> dict[str, list[str]]:
    titles: dict[str, list[str]] = {}
    for nid, node in graph.items():
        titles.setdefault(node["_meta"]["title"], []).append(nid)
    return titles


def _params(manifest: dict):
    for param in manifest.get("parameters", []):
        targets = param.get("targets") or [{"node": param.get("node"), "input": param.get("input")}]
        for target in targets:
            yield param, target["node"], target["input"]


NAMES = _names()


def test_the_template_set_is_complete():
    manifests = sorted(p.name[: -len(".manifest.yaml")] for p in WORKFLOWS.glob("*.manifest.yaml"))
    assert set(NAMES) == set(manifests), "every workflow needs a manifest and every manifest a workflow"
    assert set(NAMES) == EXPECTED, (
        f"missing {sorted(EXPECTED - set(NAMES))}, unexpected {sorted(set(NAMES) - EXPECTED)}"
    )


@pytest.mark.parametrize("name", NAMES)
def test_api_format_as_comfyui_exports_it(name):
    graph = _graph(name)
    assert isinstance(graph, dict) and graph
    for nid, node in graph.items():
        assert re.fullmatch(r"\d+", nid), f"{name}: node id {nid!r} is not a string of digits"
        assert set(node) == {"inputs", "class_type", "_meta"}, f"{name} #{nid}: keys {sorted(node)}"
        assert isinstance(node["class_type"], str) and node["class_type"]
        assert isinstance(node["inputs"], dict)
        assert isinstance(node["_meta"].get("title"), str) and node["_meta"]["title"].strip()
        for key, value in node["inputs"].items():
            if isinstance(value, list):
                assert _is_link(value), f'{name} #{nid}.{key}: a list must be a link ["<id>", <int>]'
    duplicates = {t: ids for t, ids in _by_title(graph).items() if len(ids) > 1}
    assert not duplicates, f"{name}: titles must be unique: {duplicates}"


@pytest.mark.parametrize("name", NAMES)
def test_classes_are_core_or_locked(name):
    core, lock = _catalogue(), load_lock(LOCK_PATH)
    graph, manifest = _graph(name), _manifest(name)
    declared = {c["class"]: c["pack"] for c in manifest.get("custom_nodes") or []}
    used_custom = set()
    for nid, node in graph.items():
        cls = node["class_type"]
        if cls in core:
            continue
        pack = lock.pack_of(cls)
        assert pack is not None, f"{name} #{nid}: {cls} is neither core nor in a locked pack"
        assert declared.get(cls) == pack.pack, f"{name}: {cls} must be listed under custom_nodes with pack {pack.pack}"
        used_custom.add(cls)
    assert set(declared) == used_custom, f"{name}: custom_nodes lists classes the graph does not use"


@pytest.mark.parametrize("name", NAMES)
def test_links_inputs_and_widget_values_match_the_catalogue(name):
    catalogue = {**_catalogue(), **_custom_catalogue()}
    graph = _graph(name)
    problems = []
    for nid, node in graph.items():
        info = catalogue.get(node["class_type"])
        if info is None:  # custom class without a schema yet: only its links' sources are checked
            for key, value in node["inputs"].items():
                if _is_link(value) and value[0] not in graph:
                    problems.append(f"#{nid}.{key}: link to missing node {value[0]}")
            continue
        specs = _inputs(info)
        for key in node["inputs"]:
            if key not in specs:
                problems.append(f"#{nid} {node['class_type']}: unknown input {key!r}")
        for key in info["input"].get("required", {}):
            if key not in node["inputs"]:
                problems.append(f"#{nid} {node['class_type']}: required input {key!r} missing")
        for key, spec in specs.items():
            typ, combo, opts = _spec_type(spec)
            value = node["inputs"].get(key)
            is_widget = (typ in PRIMITIVES) and not opts.get("forceInput")
            if is_widget and key not in node["inputs"]:
                problems.append(f"#{nid} {node['class_type']}: widget {key!r} not exported")
                continue
            if value is None:
                continue
            if _is_link(value):
                src = graph.get(value[0])
                if src is None:
                    problems.append(f"#{nid}.{key}: link to missing node {value[0]}")
                    continue
                src_info = catalogue.get(src["class_type"])
                if src_info is None:
                    continue
                if not 0 <= value[1] < len(src_info["output"]):
                    problems.append(f"#{nid}.{key}: slot {value[1]} of {src['class_type']} does not exist")
                    continue
                out_type = src_info["output"][value[1]]
                accepted = set(str(typ).split(","))
                if typ != "*" and out_type != "*" and out_type not in accepted:
                    problems.append(f"#{nid}.{key}: {src['class_type']}[{value[1]}] is {out_type}, input wants {typ}")
                continue
            if not is_widget:
                problems.append(f"#{nid}.{key}: {typ} input must be a link, got {value!r}")
            elif typ == "COMBO":
                pair = (node["class_type"], key)
                file_input = pair in INPUT_FILE_INPUTS or pair in LOADER_INPUTS
                if not file_input and value not in combo:  # model/input file lists are empty in the catalogue
                    problems.append(f"#{nid}.{key}: {value!r} not in {combo[:8]}")
            elif typ in ("INT", "FLOAT"):
                wrong = isinstance(value, bool) or not isinstance(value, (int, float))
                if wrong or (typ == "INT" and not isinstance(value, int)):
                    problems.append(f"#{nid}.{key}: {value!r} is not {typ}")
                elif ("min" in opts and value < opts["min"]) or ("max" in opts and value > opts["max"]):
                    problems.append(f"#{nid}.{key}: {value} outside [{opts.get('min')}, {opts.get('max')}]")
            elif typ == "STRING" and not isinstance(value, str):
                problems.append(f"#{nid}.{key}: {value!r} is not a string")
            elif typ == "BOOLEAN" and not isinstance(value, bool):
                problems.append(f"#{nid}.{key}: {value!r} is not a boolean")
    assert not problems, f"{name}:\n" + "\n".join(problems)


@pytest.mark.parametrize("name", NAMES)
def test_every_node_feeds_an_output(name):
    catalogue = {**_catalogue(), **_custom_catalogue()}
    graph = _graph(name)
    outputs = [nid for nid, n in graph.items() if catalogue.get(n["class_type"], {}).get("output_node")]
    assert outputs, f"{name}: no output node"
    seen, stack = set(), list(outputs)
    while stack:
        nid = stack.pop()
        if nid in seen:
            continue
        seen.add(nid)
        stack.extend(v[0] for v in graph[nid]["inputs"].values() if _is_link(v))
    assert seen == set(graph), f"{name}: nodes that feed no output are never run: {sorted(set(graph) - seen)}"


@pytest.mark.parametrize("name", NAMES)
def test_save_nodes_use_a_reelforge_prefix(name):
    for node in _graph(name).values():
        if "filename_prefix" in node["inputs"]:
            assert node["inputs"]["filename_prefix"] == f"reelforge/{name}"
        if node["class_type"] == "SaveLoRANode":
            assert node["inputs"]["prefix"].startswith("loras/reelforge")


@pytest.mark.parametrize("name", NAMES)
def test_manifest_matches_its_graph(name):
    catalogue = {**_catalogue(), **_custom_catalogue()}
    graph, manifest = _graph(name), _manifest(name)
    titles = _by_title(graph)
    assert manifest["name"] == name
    assert manifest["kind"] in KINDS
    assert manifest.get("description")
    problems, names = [], set()
    for param in manifest["parameters"]:
        assert param["name"] not in names, f"{name}: duplicate parameter {param['name']}"
        names.add(param["name"])
        assert param["type"] in PARAM_TYPES, f"{name}.{param['name']}: type {param['type']}"
        assert param.get("description"), f"{name}.{param['name']}: no description"
        if param["type"] == "model":
            assert param.get("folder"), f"{name}.{param['name']}: a model parameter names its folder"
        if param["type"] == "choice":
            assert param.get("choices"), f"{name}.{param['name']}: a choice needs choices"
            if "default" in param:
                assert param["default"] in param["choices"]
        if "default" in param and param["type"] in ("int", "float"):
            assert param.get("min", param["default"]) <= param["default"] <= param.get("max", param["default"])
    for param, title, inp in _params(manifest):
        where = f"{name}.{param['name']} -> {title}.{inp}"
        if len(titles.get(title, [])) != 1:
            problems.append(f"{where}: title must exist exactly once")
            continue
        node = graph[titles[title][0]]
        if inp not in node["inputs"] or _is_link(node["inputs"][inp]):
            problems.append(f"{where}: not a widget input of the node")
            continue
        info = catalogue.get(node["class_type"])
        if info is None:
            continue
        typ, combo, opts = _spec_type(_inputs(info)[inp])
        if param["type"] in ("int", "float"):
            if typ not in ("INT", "FLOAT"):
                problems.append(f"{where}: {param['type']} bound to {typ}")
            for bound in ("min", "max"):
                if bound not in param:
                    problems.append(f"{where}: numeric parameter without {bound}")
            if "min" in opts and param.get("min", opts["min"]) < opts["min"]:
                problems.append(f"{where}: min {param['min']} below the node's {opts['min']}")
            if "max" in opts and param.get("max", opts["max"]) > opts["max"]:
                problems.append(f"{where}: max {param['max']} above the node's {opts['max']}")
        if param["type"] == "choice" and combo and not set(param["choices"]) <= set(combo):
            problems.append(f"{where}: choices not offered by the node: {set(param['choices']) - set(combo)}")
        if param["type"] == "string" and typ != "STRING":
            problems.append(f"{where}: string bound to {typ}")
        if "default" in param and node["inputs"][inp] != param["default"]:
            problems.append(f"{where}: default {param['default']!r} differs from the graph's {node['inputs'][inp]!r}")
    for out in manifest["outputs"]:
        assert out["kind"] in OUTPUT_KINDS
        ids = titles.get(out["node"], [])
        if len(ids) != 1 or not catalogue.get(graph[ids[0]]["class_type"], {}).get("output_node", True):
            problems.append(f"{name}: output {out['node']!r} is not a unique output node")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", NAMES)
def test_model_files_are_in_the_manifest_and_the_lock(name):
    lock = load_lock(LOCK_PATH)
    locked = {m.key: m for m in lock.models}
    graph, manifest = _graph(name), _manifest(name)
    listed = {(m["folder"], m["name"]) for m in manifest.get("models") or []}
    titles = {nid: n["_meta"]["title"] for nid, n in graph.items()}
    per_job = {(t, i) for p, t, i in _params(manifest) if p["type"] == "model"}
    named = set()
    for nid, node in graph.items():
        for key, value in node["inputs"].items():
            folder = LOADER_INPUTS.get((node["class_type"], key))
            if folder is None or _is_link(value):
                continue
            if (titles[nid], key) in per_job:  # e.g. a character LoRA, delivered per job
                continue
            named.add((folder, value))
    assert named <= listed, f"{name}: loader files missing from manifest models: {named - listed}"
    for key in listed:
        assert key in locked, f"{name}: {key} is not in lock.yaml"
        assert name in locked[key].used_by, f"lock.yaml: {key} used_by lacks {name}"


def test_lock_is_valid_and_consistent():
    lock = load_lock(LOCK_PATH)
    assert lock.comfyui.version == "0.3.64"
    keys = [m.key for m in lock.models]
    assert len(keys) == len(set(keys)), "duplicate model entries"
    used = set()
    for model in lock.models:
        assert model.url.startswith("https://"), model.name
        assert model.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", model.sha256), model.name
        assert model.size is None or model.size > 0
        assert model.license, f"{model.name}: license missing"
        assert set(model.used_by) <= set(NAMES), f"{model.name}: used_by names unknown templates"
        assert model.used_by, f"{model.name}: not used by any template"
        used.update(model.used_by)
    for pack in lock.custom_nodes:
        assert re.fullmatch(r"[0-9a-f]{40}", pack.commit), f"{pack.pack}: commit must be a full SHA"
        assert pack.repo.startswith("https://github.com/") and pack.classes
    for model in lock.models:
        for template in model.used_by:
            assert (model.folder, model.name) in {(m["folder"], m["name"]) for m in _manifest(template)["models"]}


def test_custom_schemas_come_from_the_locked_commits():
    lock = load_lock(LOCK_PATH)
    packs = {p.pack: p for p in lock.custom_nodes}
    for path in sorted((ROOT / "reelforge" / "preview" / "catalogue").glob("custom_*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        meta = data.get("__pack__")
        if not meta:
            continue
        assert meta["pack"] in packs, f"{path.name}: pack {meta['pack']} is not in lock.yaml"
        assert packs[meta["pack"]].commit == meta["commit"], f"{path.name}: schema read at another commit"
        assert set(data) - {"__pack__"} <= set(packs[meta["pack"]].classes)


def test_dockerfile_pins_match_the_lock():
    lock = load_lock(LOCK_PATH)
    text = (LOCK_PATH.parent / "Dockerfile").read_text(encoding="utf-8")
    assert f"ARG COMFYUI_COMMIT={lock.comfyui.commit}\n" in text
    for pack in lock.custom_nodes:
        assert pack.commit in text, f"Dockerfile does not pin {pack.pack} at {pack.commit}"


def _fetch_models():
    spec = importlib.util.spec_from_file_location("fetch_models", LOCK_PATH.parent / "fetch_models.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("fetch_models", module)  # dataclasses resolve their module by name
    spec.loader.exec_module(module)  # importing does not download anything
    return module


def test_fetch_models_plans_every_locked_file(tmp_path):
    fm = _fetch_models()
    lock = yaml.safe_load(LOCK_PATH.read_text(encoding="utf-8"))
    items = fm.plan(lock, tmp_path)
    assert len(items) == len(lock["models"])
    assert all(tmp_path in item.dest.parents for item in items)
    only = fm.plan(lock, tmp_path, {"music"})
    assert [i.name for i in only] == ["ace_step_v1_3.5b.safetensors"]
    assert only[0].dest == tmp_path / "checkpoints" / "ace_step_v1_3.5b.safetensors"
    assert not only[0].is_snapshot
    tts = {i.name: i for i in fm.plan(lock, tmp_path, {"voice_design"})}
    assert tts["Qwen3-TTS-12Hz-1.7B-VoiceDesign"].is_snapshot
    assert tts["Qwen3-TTS-12Hz-1.7B-VoiceDesign"].repo_id == "Qwen/Qwen3-TTS-12Hz-1.7B-VoiceDesign"


@pytest.mark.parametrize("bad", ["../escape.safetensors", "/etc/passwd", "a/../../b", "", "dir\\x.pth"])
def test_fetch_models_rejects_unsafe_names(tmp_path, bad):
    fm = _fetch_models()
    with pytest.raises(fm.LockFileError):
        fm.target_path(tmp_path, "checkpoints", bad)


def test_fetch_models_checks_size_and_digest(tmp_path):
    fm = _fetch_models()
    data = b"weights"
    dest = tmp_path / "vae" / "x.safetensors"
    dest.parent.mkdir()
    dest.write_bytes(data)
    good = fm.Download("vae", "x.safetensors", "https://e/x", hashlib.sha256(data).hexdigest(), len(data), dest)
    assert fm.is_complete(good)
    assert not fm.is_complete(fm.Download("vae", "x", "https://e/x", "0" * 64, len(data), dest))
    assert not fm.is_complete(fm.Download("vae", "x", "https://e/x", None, len(data) + 1, dest))
    with pytest.raises(fm.LockFileError):
        fm.plan({"models": [{"folder": "vae", "name": "x", "url": "http://e/x", "used_by": []}]}, tmp_path)
