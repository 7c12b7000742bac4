"""Typed templates: load-time checks, binding, version, validation against the offline catalogue, CLI."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from reelforge.cli import app
from reelforge.comfy.graph import ModelRef
from reelforge.templates.catalogue import core_catalogue, load_catalogue
from reelforge.templates.errors import Problem, TemplateError
from reelforge.templates.lock import ComfyLock
from reelforge.templates.template import Template, load_all, load_template, template_names, validate_on_worker

CKPT = "sd_xl_base_1.0.safetensors"


def node(class_type: str, title: str, **inputs: Any) -> dict[str, Any]:
    return {"class_type": class_type, "inputs": inputs, "_meta": {"title": title}}


def sdxl_graph() -> dict[str, Any]:
    return {
        "1": node("CheckpointLoaderSimple", "Load Checkpoint", ckpt_name=CKPT),
        "2": node("CLIPTextEncode", "Positive Prompt", text="a cat", clip=["1", 1]),
        "3": node("CLIPTextEncode", "Negative Prompt", text="", clip=["1", 1]),
        "4": node("EmptyLatentImage", "Latent", width=1024, height=1024, batch_size=1),
        "5": node(
            "KSampler",
            "Sampler",
            model=["1", 0],
            seed=0,
            steps=20,
            cfg=7.0,
            sampler_name="euler",
            scheduler="normal",
            positive=["2", 0],
            negative=["3", 0],
            latent_image=["4", 0],
            denoise=1.0,
        ),
        "6": node("VAEDecode", "Decode", samples=["5", 0], vae=["1", 2]),
        "7": node("SaveImage", "Save Image", images=["6", 0], filename_prefix="t2i"),
    }


def sdxl_manifest(name: str = "t2i") -> dict[str, Any]:
    return {
        "name": name,
        "kind": "image",
        "description": "test template",
        "parameters": [
            {"name": "prompt", "node": "Positive Prompt", "input": "text", "type": "string"},
            {"name": "negative", "node": "Negative Prompt", "input": "text", "type": "string", "default": "blurry"},
            {
                "name": "seed",
                "node": "Sampler",
                "input": "seed",
                "type": "int",
                "default": 0,
                "min": 0,
                "max": 2**64 - 1,
            },
            {"name": "steps", "node": "Sampler", "input": "steps", "type": "int", "default": 20, "min": 1, "max": 100},
            {
                "name": "cfg",
                "node": "Sampler",
                "input": "cfg",
                "type": "float",
                "default": 7.0,
                "min": 0.0,
                "max": 200.0,
            },
            {
                "name": "sampler",
                "node": "Sampler",
                "input": "sampler_name",
                "type": "choice",
                "choices": ["euler", "dpmpp_2m"],
                "default": "euler",
            },
            {
                "name": "size",
                "targets": [{"node": "Latent", "input": "width"}, {"node": "Latent", "input": "height"}],
                "type": "int",
                "default": 1024,
                "min": 64,
                "max": 4096,
            },
        ],
        "outputs": [{"node": "Save Image", "kind": "image"}],
        "models": [{"folder": "checkpoints", "name": CKPT}],
    }


def write(folder: Path, name: str, graph: Any, manifest: Any) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(graph, indent=2), encoding="utf-8")
    (folder / f"{name}.manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False), encoding="utf-8")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    wf = tmp_path / "workflows"
    write(wf, "t2i", sdxl_graph(), sdxl_manifest())
    return wf


@pytest.fixture
def t2i(folder: Path) -> Template:
    return load_template("t2i", folder=folder)


def load_errors(tmp_path: Path, graph: Any, manifest: Any, name: str = "bad") -> list[Problem]:
    write(tmp_path / "wf", name, graph, manifest)
    with pytest.raises(TemplateError) as info:
        load_template(name, folder=tmp_path / "wf")
    return info.value.problems


def find(problems: list[Problem], fragment: str) -> Problem:
    hits = [p for p in problems if fragment in p.message]
    assert hits, f"no problem mentions {fragment!r}: {[str(p) for p in problems]}"
    return hits[0]


# -- loading -----------------------------------------------------------------------------------------------


def test_load_exposes_the_template(t2i: Template, folder: Path) -> None:
    assert (t2i.name, t2i.kind) == ("t2i", "image")
    assert list(t2i.parameters) == ["prompt", "negative", "seed", "steps", "cfg", "sampler", "size"]
    assert t2i.required == ["prompt"]
    assert [(o.title, o.node_id, o.kind) for o in t2i.outputs] == [("Save Image", "7", "image")]
    assert t2i.models == [ModelRef(folder="checkpoints", name=CKPT)]
    assert t2i.custom_nodes == []
    assert "KSampler" in t2i.node_classes and "SaveImage" in t2i.node_classes
    assert len(t2i.version) == 64 and int(t2i.version, 16) >= 0
    assert t2i.node_id("Sampler") == "5"
    # by path too (either file), and load_all finds it
    assert load_template(folder / "t2i.manifest.yaml").version == t2i.version
    assert load_template(folder / "t2i.json").version == t2i.version
    assert list(load_all(folder)) == ["t2i"]


def test_every_load_problem_is_reported_together(tmp_path: Path) -> None:
    graph = sdxl_graph()
    graph["8"] = node("VAEDecode", "Decode", samples=["5", 0], vae=["1", 2])  # "Decode" used twice
    graph["9"] = node(
        "LoraLoader",
        "LoRA",
        model=["1", 0],
        clip=["1", 1],
        lora_name="style.safetensors",
        strength_model=1.0,
        strength_clip=1.0,
    )
    graph["10"] = node("IPAdapterAdvanced", "IPAdapter", model=["9", 0])  # custom class, undeclared
    manifest = sdxl_manifest(name="other_name")
    manifest["parameters"] += [
        {"name": "ghost", "node": "No Such Node", "input": "text", "type": "string", "default": "x"},
        {"name": "typo", "node": "Sampler", "input": "sed", "type": "int", "default": 1},
        {"name": "decode", "node": "Decode", "input": "samples", "type": "string", "default": "x"},
        {"name": "badtype", "node": "Sampler", "input": "denoise", "type": "number", "default": 1.0},
        {"name": "toolow", "node": "Latent", "input": "batch_size", "type": "int", "default": 0, "min": 1},
    ]
    manifest["outputs"].append({"node": "Latent", "kind": "image"})
    problems = load_errors(tmp_path, graph, manifest)
    text = "\n".join(str(p) for p in problems)

    assert find(problems, "does not match the file name").template == "bad"
    dup = find(problems, "node title is used by 2 nodes")
    assert dup.node_title == "Decode"
    ref_dup = [p for p in problems if p.parameter == "decode"]
    assert ref_dup and "not unique" in ref_dup[0].message and ref_dup[0].input == "samples"
    ghost = next(p for p in problems if p.parameter == "ghost")
    assert (ghost.node_title, ghost.input, ghost.message) == (
        "No Such Node",
        "text",
        "no node with this title in the graph",
    )
    typo = next(p for p in problems if p.parameter == "typo")
    assert (typo.node_title, typo.input) == ("Sampler", "sed")
    assert "has no input 'sed'" in typo.message
    badtype = next(p for p in problems if p.parameter == "badtype")
    assert "parameters.10.type" in badtype.message and "'number'" in badtype.message
    toolow = next(p for p in problems if p.parameter == "toolow")
    assert toolow.message == "default: value 0 is below the minimum 1"
    assert (toolow.node_title, toolow.input) == ("Latent", "batch_size")
    lora = find(problems, "loras/style.safetensors is loaded here but not listed under models")
    assert (lora.node_title, lora.input) == ("LoRA", "lora_name")
    custom = find(problems, "'IPAdapterAdvanced' is not in ComfyUI core")
    assert custom.node_title == "IPAdapter"
    assert find(problems, "not an output node").node_title == "Latent"
    assert len(str(TemplateError(problems)).splitlines()) == len(problems) >= 10
    assert "template 'bad', parameter 'typo' (node 'Sampler', input 'sed'): node (KSampler) has no input" in text


def test_declared_custom_class_loads_and_lists(tmp_path: Path) -> None:
    graph = {
        "1": node("LoadImage", "Reference", image="ref.png"),
        "2": node("MyCustomFilter", "Filter", image=["1", 0]),
        "3": node("SaveImage", "Save", images=["2", 0], filename_prefix="x"),
    }
    manifest = {
        "name": "custom",
        "kind": "image",
        "parameters": [{"name": "image", "node": "Reference", "input": "image", "type": "image"}],
        "outputs": [{"node": "Save", "kind": "image"}],
        "custom_nodes": [{"class": "MyCustomFilter", "pack": "my_pack"}],
    }
    write(tmp_path / "wf", "custom", graph, manifest)
    template = load_template("custom", folder=tmp_path / "wf")
    assert [(c.class_, c.pack) for c in template.custom_nodes] == [("MyCustomFilter", "my_pack")]
    # declaring a class that is not used, or a core class, is a problem
    manifest["custom_nodes"] += [{"class": "LoadImage", "pack": "x"}, {"class": "Unused", "pack": "x"}]
    problems = load_errors(tmp_path, graph, manifest, name="custom")
    assert "which is in ComfyUI core" in find(problems, "'LoadImage'").message
    assert "does not use" in find(problems, "'Unused'").message


def test_manifest_shape_rules(tmp_path: Path) -> None:
    manifest = sdxl_manifest(name="bad")
    manifest["parameters"] += [
        {"name": "x1", "node": "Sampler", "input": "denoise", "type": "float", "choices": [1.0], "default": 0.5},
        {"name": "x2", "node": "Save Image", "input": "filename_prefix", "type": "string", "min": 1, "default": "a"},
        {"name": "x3", "node": "Sampler", "input": "scheduler", "type": "choice", "default": "normal"},
        {"name": "x4", "node": "Latent", "input": "batch_size", "type": "int", "min": 2, "max": 1},
        {"name": "x5", "node": "Sampler", "input": "model", "type": "string", "default": "x"},
        {
            "name": "x6",
            "node": "Sampler",
            "input": "scheduler",
            "type": "choice",
            "choices": ["normal", "nope"],
            "default": "normal",
        },
        {"name": "x7", "type": "string", "node": "Sampler"},
        {"name": "prompt", "node": "Sampler", "input": "seed", "type": "int", "default": 1, "extra": 1},
    ]
    manifest["unexpected"] = True
    problems = load_errors(tmp_path, sdxl_graph(), manifest)
    by: dict[str, str] = {}
    for p in problems:
        if p.parameter:
            by[p.parameter] = by[p.parameter] + "\n" + p.message if p.parameter in by else p.message
    assert by["x1"] == "choices apply to choice parameters only, not float"
    assert by["x2"] == "min applies to int and float parameters only, not string"
    assert by["x3"] == "a choice parameter needs a non-empty choices list"
    assert by["x4"] == "min 2 is above max 1"
    assert by["x5"] == "this input is a link in the graph, not a value a parameter can set"
    assert "['nope'] are not accepted by KSampler.scheduler" in by["x6"]
    assert by["x7"] == "a parameter needs node and input (or targets)"
    assert "parameters.14.extra" in by["prompt"]
    assert find(problems, "manifest unexpected").parameter is None


def test_graph_file_problems(tmp_path: Path) -> None:
    wf = tmp_path / "wf"
    wf.mkdir()
    (wf / "nomanifest.json").write_text("{}", encoding="utf-8")
    (wf / "broken.json").write_text("{not json", encoding="utf-8")
    (wf / "broken.manifest.yaml").write_text("name: broken\n", encoding="utf-8")
    with pytest.raises(TemplateError) as info:
        load_all(wf)
    messages = [str(p) for p in info.value.problems]
    assert any("nomanifest" in m and "manifest" in m and "not found" in m for m in messages)
    assert any("broken" in m and "not valid JSON" in m for m in messages)
    graph = sdxl_graph()
    del graph["4"]["_meta"]
    problems = load_errors(tmp_path, graph, sdxl_manifest(name="bad"))
    assert find(problems, "has no _meta.title").node_id == "4"


def test_unreadable_files_are_problems_naming_the_file(folder: Path) -> None:
    write(folder, "latin", sdxl_graph(), sdxl_manifest(name="latin"))
    (folder / "latin.json").write_bytes(json.dumps(sdxl_graph()).encode("utf-8") + b"\xff")  # not UTF-8
    write(folder, "dir_graph", sdxl_graph(), sdxl_manifest(name="dir_graph"))
    (folder / "dir_graph.json").unlink()
    (folder / "dir_graph.json").mkdir()
    (folder / "dir_manifest.json").write_text(json.dumps(sdxl_graph()), encoding="utf-8")
    (folder / "dir_manifest.manifest.yaml").mkdir()
    (folder / "latin_manifest.json").write_text(json.dumps(sdxl_graph()), encoding="utf-8")
    (folder / "latin_manifest.manifest.yaml").write_bytes(b"name: latin_manifest\ndescription: caf\xe9\n")

    names = ["dir_graph", "dir_manifest", "latin", "latin_manifest", "t2i"]
    assert template_names(folder) == names
    with pytest.raises(TemplateError) as info:
        load_all(folder)
    by_template = {p.template: str(p) for p in info.value.problems}
    assert set(by_template) == {"dir_graph", "dir_manifest", "latin", "latin_manifest"}  # t2i loads
    assert f"graph file {folder / 'latin.json'} is not UTF-8 text" in by_template["latin"]
    assert f"graph file {folder / 'dir_graph.json'} is a directory" in by_template["dir_graph"]
    assert f"manifest {folder / 'dir_manifest.manifest.yaml'} is a directory" in by_template["dir_manifest"]
    assert f"manifest {folder / 'latin_manifest.manifest.yaml'} is not UTF-8 text" in by_template["latin_manifest"]
    with pytest.raises(TemplateError):
        load_template("latin", folder=folder)
    assert load_template("t2i", folder=folder).name == "t2i"

    result = CliRunner().invoke(app, ["templates", "list", "--folder", str(folder)])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == names
    assert lines[-1].split()[1:3] == ["image", load_template("t2i", folder=folder).version[:12]]
    assert all("FAILED TO LOAD (1 problem)" in line for line in lines[:-1])
    assert "is not UTF-8 text" in result.stderr and "Traceback" not in result.output


# -- binding -----------------------------------------------------------------------------------------------


def test_bind_returns_a_concrete_copy(t2i: Template) -> None:
    before = t2i.graph
    graph = t2i.bind({"prompt": "a dog", "seed": 42, "cfg": 5, "size": 768})
    assert graph["2"]["inputs"]["text"] == "a dog"
    assert graph["3"]["inputs"]["text"] == "blurry"  # default from the manifest
    assert graph["5"]["inputs"]["seed"] == 42
    assert graph["5"]["inputs"]["cfg"] == 5  # an int is a float
    assert (graph["4"]["inputs"]["width"], graph["4"]["inputs"]["height"]) == (768, 768)
    assert graph["2"]["inputs"]["clip"] == ["1", 1]  # links untouched
    graph["5"]["inputs"]["seed"] = 7
    assert t2i.graph == before  # the template's graph never changes
    assert t2i.bind({"prompt": "a dog"})["5"]["inputs"]["seed"] == 0


def test_bind_reports_every_problem(t2i: Template) -> None:
    with pytest.raises(TemplateError) as info:
        t2i.bind({"seed": -1, "steps": True, "cfg": "7.5", "sampler": "nope", "size": 10**6, "bogus": 1})
    problems = info.value.problems
    lines = str(info.value).splitlines()
    assert len(lines) == len(problems) == 7
    assert "template 't2i', parameter 'seed' (node 'Sampler', input 'seed'): value -1 is below the minimum 0" in lines
    assert "template 't2i', parameter 'steps' (node 'Sampler', input 'steps'): expected an int, got bool True" in lines
    assert "template 't2i', parameter 'cfg' (node 'Sampler', input 'cfg'): expected a float, got str '7.5'" in lines
    assert (
        "template 't2i', parameter 'sampler' (node 'Sampler', input 'sampler_name'): "
        "value 'nope' is not one of ['euler', 'dpmpp_2m']" in lines
    )
    assert any(p.parameter == "size" and "above the maximum 4096" in p.message for p in problems)
    assert any(p.parameter == "bogus" and p.message.startswith("unknown parameter") for p in problems)
    missing = next(p for p in problems if p.parameter == "prompt")
    assert (missing.message, missing.node_title, missing.input) == (
        "required parameter is missing",
        "Positive Prompt",
        "text",
    )


def test_bind_is_strict_about_types(t2i: Template) -> None:
    for params in (
        {"prompt": 5},
        {"prompt": "x", "seed": "3"},
        {"prompt": "x", "seed": 3.0},
        {"prompt": "x", "cfg": float("nan")},
        {"prompt": None},
    ):
        with pytest.raises(TemplateError):
            t2i.bind(params)
    assert t2i.bind({"prompt": "x", "seed": 2**64 - 1})["5"]["inputs"]["seed"] == 2**64 - 1


def test_image_and_audio_refs_must_be_strings(tmp_path: Path) -> None:
    graph = {
        "1": node("LoadImage", "Reference", image="placeholder.png"),
        "2": node("LoadAudio", "Voice", audio="voice.wav"),
        "3": node("SaveImage", "Save", images=["1", 0], filename_prefix="x"),
        "4": node("SaveAudio", "Save Audio", audio=["2", 0], filename_prefix="a"),
    }
    manifest = {
        "name": "refs",
        "kind": "image",
        "parameters": [
            {"name": "image", "node": "Reference", "input": "image", "type": "image"},
            {"name": "voice", "node": "Voice", "input": "audio", "type": "audio"},
        ],
        "outputs": [{"node": "Save", "kind": "image"}, {"node": "Save Audio", "kind": "audio"}],
    }
    write(tmp_path / "wf", "refs", graph, manifest)
    template = load_template("refs", folder=tmp_path / "wf")
    bound = template.bind({"image": "sub/face.png", "voice": "clip.wav [output]"})
    assert bound["1"]["inputs"]["image"] == "sub/face.png"
    with pytest.raises(TemplateError) as info:
        template.bind({"image": 3, "voice": "../../etc/passwd"})
    by = {p.parameter: p.message for p in info.value.problems}
    assert by["image"] == "expected an image file (a string), got int 3"
    assert "relative path" in by["voice"]


# -- version -----------------------------------------------------------------------------------------------


def test_version_follows_graph_and_manifest_only(tmp_path: Path) -> None:
    def version(graph: Any, manifest: Any, style: str = "block") -> str:
        wf = tmp_path / f"v{len(list(tmp_path.iterdir()))}"
        wf.mkdir()
        (wf / "t2i.json").write_text(json.dumps(graph) if style == "block" else json.dumps(graph, indent=4))
        text = yaml.safe_dump(manifest, sort_keys=style == "block", default_flow_style=style != "block")
        (wf / "t2i.manifest.yaml").write_text(text)
        return load_template("t2i", folder=wf).version

    base = version(sdxl_graph(), sdxl_manifest())
    assert version(sdxl_graph(), sdxl_manifest(), style="flow") == base  # formatting is not content
    graph = sdxl_graph()
    graph["5"]["inputs"]["steps"] = 21
    assert version(graph, sdxl_manifest()) != base
    manifest = sdxl_manifest()
    manifest["description"] = "changed"
    assert version(sdxl_graph(), manifest) != base


# -- validation against a worker's schema ------------------------------------------------------------------


def object_info() -> dict[str, Any]:
    return core_catalogue().object_info()


def test_validate_passes_and_returns_the_coerced_graph(t2i: Template) -> None:
    graph = t2i.validate(object_info(), {"checkpoints": [CKPT]}, {"prompt": "a fox", "cfg": 5})
    assert graph["2"]["inputs"]["text"] == "a fox"
    assert graph["5"]["inputs"]["cfg"] == 5.0 and isinstance(graph["5"]["inputs"]["cfg"], float)


def test_validate_reports_comfyui_errors_and_missing_models(t2i: Template) -> None:
    with pytest.raises(TemplateError) as info:
        t2i.validate(object_info(), {"checkpoints": ["other.safetensors"]}, {"prompt": "x", "cfg": 150.0})
    problems = info.value.problems
    big = next(p for p in problems if p.error_type == "value_bigger_than_max")
    assert (big.parameter, big.node_title, big.input, big.message) == (
        "cfg",
        "Sampler",
        "cfg",
        "Value 150.0 bigger than max of 100.0",
    )
    # The missing checkpoint is one problem naming folder and file (not also ComfyUI's combo error).
    about_ckpt = [p for p in problems if CKPT in p.message]
    assert len(about_ckpt) == 1 and len(problems) == 2, [str(p) for p in problems]
    (missing,) = about_ckpt
    assert missing.message == f"model file checkpoints/{CKPT} is not on the worker"
    assert (missing.node_title, missing.input, missing.error_type) == (
        "Load Checkpoint",
        "ckpt_name",
        "value_not_in_list",
    )


def test_a_model_file_loaded_twice_is_reported_once(tmp_path: Path) -> None:
    graph = sdxl_graph()
    graph["8"] = node("CheckpointLoaderSimple", "Second Checkpoint", ckpt_name=CKPT)
    graph["6"]["inputs"]["vae"] = ["8", 2]
    write(tmp_path / "wf", "t2i", graph, sdxl_manifest())
    template = load_template("t2i", folder=tmp_path / "wf")
    with pytest.raises(TemplateError) as info:
        template.validate(object_info(), {"checkpoints": []}, {"prompt": "x"})
    (problem,) = info.value.problems
    assert str(problem) == (
        "template 't2i' (node 'Load Checkpoint', input 'ckpt_name'): "
        f"value_not_in_list: model file checkpoints/{CKPT} is not on the worker"
    )


def test_validate_unknown_class_on_the_worker(t2i: Template) -> None:
    info = object_info()
    del info["KSampler"]
    with pytest.raises(TemplateError) as err:
        t2i.validate(info, {"checkpoints": [CKPT]})
    (problem,) = err.value.problems
    assert problem.error_type == "invalid_prompt"
    assert problem.message.startswith("Cannot execute because node KSampler does not exist: ")
    assert "ComfyUI core class" in problem.message
    assert (problem.node_id, problem.node_title) == ("5", "Sampler")


def test_validate_names_every_missing_custom_class_and_its_pack(tmp_path: Path) -> None:
    graph = sdxl_graph()
    graph["8"] = node("MyCustomFilter", "Filter", image=["6", 0])
    graph["9"] = node("IPAdapterUnifiedLoader", "IPAdapter Loader", preset="PLUS FACE (portraits)", model=["1", 0])
    graph["7"]["inputs"]["images"] = ["8", 0]
    graph["5"]["inputs"]["model"] = ["9", 0]
    manifest = sdxl_manifest()
    manifest["custom_nodes"] = [
        {"class": "MyCustomFilter", "pack": "my_pack"},
        {"class": "IPAdapterUnifiedLoader", "pack": "ComfyUI_IPAdapter_plus"},
    ]
    write(tmp_path / "wf", "t2i", graph, manifest)
    template = load_template("t2i", folder=tmp_path / "wf")
    lock = ComfyLock.model_validate(
        {
            "comfyui": {"repo": "r", "commit": "c", "version": "0.3.64"},
            "custom_nodes": [
                {
                    "pack": "ComfyUI_IPAdapter_plus",
                    "repo": "https://github.com/cubiq/ComfyUI_IPAdapter_plus",
                    "commit": "9d076a3df0d2763cef5510ec5ab807f6632c39f5",
                    "classes": ["IPAdapterUnifiedLoader"],
                }
            ],
        }
    )
    with pytest.raises(TemplateError) as err:
        template.validate(object_info(), {"checkpoints": [CKPT]}, {"prompt": "x"}, lock=lock)
    by_title = {p.node_title: p for p in err.value.problems}
    assert set(by_title) == {"Filter", "IPAdapter Loader"}  # ComfyUI itself names only the first
    assert all(p.error_type == "invalid_prompt" for p in by_title.values())
    loader = by_title["IPAdapter Loader"].message
    assert loader.startswith("Cannot execute because node IPAdapterUnifiedLoader does not exist: ")
    assert "custom node pack 'ComfyUI_IPAdapter_plus'" in loader
    assert "https://github.com/cubiq/ComfyUI_IPAdapter_plus @ 9d076a3df0d2" in loader
    assert "custom node pack 'my_pack'" in by_title["Filter"].message
    # The shipped template needs two classes of one pack: both are named against a core-only worker.
    shipped = load_template("keyframe_ipadapter")
    with pytest.raises(TemplateError) as err:
        shipped.validate(object_info())
    named = sorted(p.message.split()[4] for p in err.value.problems)
    assert named == ["IPAdapterAdvanced", "IPAdapterUnifiedLoader"]
    assert all("'ComfyUI_IPAdapter_plus'" in p.message for p in err.value.problems)


def test_validate_without_params_skips_inputs_a_job_supplies(tmp_path: Path) -> None:
    graph = sdxl_graph()
    graph["9"] = node(
        "LoraLoader",
        "LoRA",
        model=["1", 0],
        clip=["1", 1],
        lora_name="placeholder.safetensors",
        strength_model=1.0,
        strength_clip=1.0,
    )
    graph["5"]["inputs"]["model"] = ["9", 0]
    manifest = sdxl_manifest()
    manifest["parameters"].append(
        {"name": "lora", "node": "LoRA", "input": "lora_name", "type": "model", "folder": "loras"}
    )
    write(tmp_path / "wf", "t2i", graph, manifest)
    template = load_template("t2i", folder=tmp_path / "wf")  # a model parameter need not be in models
    models = {"checkpoints": [CKPT], "loras": ["hero.safetensors"]}
    assert template.validate(object_info(), models)["9"]["inputs"]["lora_name"] == "placeholder.safetensors"
    assert template.validate(object_info(), models, {"prompt": "x", "lora": "hero.safetensors"})
    with pytest.raises(TemplateError) as info:
        template.validate(object_info(), models, {"prompt": "x", "lora": "villain.safetensors"})
    assert {p.parameter for p in info.value.problems} == {"lora"}
    assert find(info.value.problems, "loras/villain.safetensors is not on the worker").input == "lora_name"


class FakeWorker:
    def __init__(self, info: dict[str, Any], models: dict[str, list[str]]) -> None:
        self.info = info
        self.files = models
        self.asked: list[str | None] = []

    async def object_info(self, refresh: bool = False) -> dict[str, Any]:
        return self.info

    async def models(self, folder: str | None = None) -> list[str]:
        self.asked.append(folder)
        return sorted(self.files) if folder is None else self.files[folder]


async def test_validate_on_worker(t2i: Template) -> None:
    worker = FakeWorker(object_info(), {"checkpoints": [CKPT], "loras": []})
    graph = await validate_on_worker(t2i, worker, {"prompt": "x"})
    assert graph["2"]["inputs"]["text"] == "x"
    assert "checkpoints" in worker.asked
    empty = FakeWorker(object_info(), {"loras": []})  # no checkpoints folder at all
    with pytest.raises(TemplateError) as info:
        await validate_on_worker(t2i, empty, {"prompt": "x"})
    assert find(info.value.problems, "is not on the worker")


# -- catalogue and CLI -------------------------------------------------------------------------------------


def test_catalogue_reads_custom_packs_with_pack_key(tmp_path: Path) -> None:
    custom = tmp_path / "cat"
    custom.mkdir()
    entry = {"input": {"required": {}}, "output": ["IMAGE"], "output_node": False}
    (custom / "custom_demo.json").write_text(
        json.dumps({"__pack__": {"pack": "demo", "repo": "r", "commit": "c"}, "DemoNode": entry})
    )
    (custom / "ignored.json").write_text(json.dumps({"Other": entry}))
    cat = load_catalogue(custom_dir=custom)
    assert "DemoNode" in cat and cat.packs["DemoNode"] == "demo" and "__pack__" not in cat
    assert "Other" not in cat and not cat.is_core("DemoNode") and cat.is_core("KSampler")
    assert len(core_catalogue().core) == 496


def test_cli_list_and_validate(folder: Path, tmp_path: Path) -> None:
    lock = tmp_path / "lock.yaml"
    lock_data = {
        "comfyui": {"repo": "r", "commit": "c", "version": "0.3.64"},
        "custom_nodes": [],
        "models": [{"folder": "checkpoints", "name": CKPT, "url": "https://example.invalid/x"}],
    }
    lock.write_text(yaml.safe_dump(lock_data))
    runner = CliRunner()
    listed = runner.invoke(app, ["templates", "list", "--folder", str(folder)])
    assert listed.exit_code == 0, listed.output
    version = load_template("t2i", folder=folder).version
    assert listed.output.split() == ["t2i", "image", version[:12], "7", "params"]
    ok = runner.invoke(app, ["templates", "validate", "--folder", str(folder), "--lock", str(lock)])
    assert ok.exit_code == 0, ok.output
    assert "ok      t2i" in ok.output
    lock_data["models"] = []
    lock.write_text(yaml.safe_dump(lock_data))
    bad = runner.invoke(app, ["templates", "validate", "t2i", "--folder", str(folder), "--lock", str(lock)])
    assert bad.exit_code == 1
    assert f"model file checkpoints/{CKPT} is not on the worker" in bad.output
    assert "value_not_in_list" in bad.output


def test_cli_reports_load_failures(tmp_path: Path, folder: Path) -> None:
    manifest = sdxl_manifest(name="broken")
    manifest["parameters"][0]["node"] = "Missing"
    write(folder, "broken", sdxl_graph(), manifest)
    result = CliRunner().invoke(app, ["templates", "list", "--folder", str(folder)])
    assert result.exit_code == 1
    assert "broken" in result.output and "FAILED TO LOAD" in result.output


def test_problem_str_without_parameter() -> None:
    problem = Problem(template="t", node_title="N", input="i", error_type="value_not_in_list", message="m")
    assert str(problem) == "template 't' (node 'N', input 'i'): value_not_in_list: m"
    assert str(Problem(template="t", message="m")) == "template 't': m"
    assert copy.copy(problem) == problem
