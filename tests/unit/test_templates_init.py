"""``reelforge templates init``: graphs kept byte for byte, manifests inferred, the lock extended, UI-format
workflows converted from object_info, and every bad input refused with one message naming the file and the node."""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from reelforge.cli import app
from reelforge.comfy.schema import SELF_VALIDATED_INPUTS
from reelforge.preview.registry import default_registry
from reelforge.templates import load_lock, load_template
from reelforge.templates.catalogue import offline_catalogue
from reelforge.templates.errors import InitRefused
from reelforge.templates.lock import DEFAULT_LOCK
from reelforge.templates.scaffold import init_template, lock_text
from reelforge.templates.sources import parse_ffmetadata
from reelforge.templates.uiformat import map_widgets

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "workflows"
FAMILIES = ["flux_custom_sampler", "sd35_triple_clip", "sdxl_controlnet", "wan_i2v", "stable_audio"]


@pytest.fixture
def lock(tmp_path: Path) -> Path:
    path = tmp_path / "lock.yaml"
    shutil.copy(DEFAULT_LOCK, path)
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "workflows"
    path.mkdir()
    return path


def params(manifest_path: Path) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in yaml.safe_load(manifest_path.read_text())["parameters"]}


def refused(file: Path, folder: Path, lock: Path, **kw: Any) -> str:
    with pytest.raises(InitRefused) as caught:
        init_template(file, kw.pop("name", "t"), folder=folder, lock_path=lock, **kw)
    assert list(folder.iterdir()) == []  # nothing written
    assert caught.value.file == str(file)
    return str(caught.value)


# -- the families ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_family_graph_is_kept_byte_for_byte_and_validates(family: str, folder: Path, lock: Path) -> None:
    source = FIXTURES / f"{family}.json"
    result = init_template(source, family, folder=folder, lock_path=lock)
    assert result.graph_path.read_bytes() == source.read_bytes()
    assert result.validated
    template = load_template(family, folder=folder)  # what `templates validate` loads
    new_lock = load_lock(lock)
    template.validate(offline_catalogue().object_info(), new_lock.models_by_folder(), lock=new_lock)
    assert {(m.folder, m.name) for m in template.models} <= {(m.folder, m.name) for m in new_lock.models}


def test_flux_custom_sampler_parameters(folder: Path, lock: Path) -> None:
    result = init_template(FIXTURES / "flux_custom_sampler.json", "flux", folder=folder, lock_path=lock)
    found = params(result.manifest_path)
    assert found["prompt"] == {
        "name": "prompt", "node": "Prompt", "input": "text", "type": "string",
        "default": "a red fox in the snow, photo", "description": "text of Prompt (CLIPTextEncode)",
    }
    assert "negative" not in found  # BasicGuider takes one conditioning
    assert (found["seed"]["node"], found["seed"]["input"], found["seed"]["default"]) == ("Noise", "noise_seed", 42)
    assert (found["seed"]["min"], found["seed"]["max"]) == (0, 18446744073709551615)
    assert found["steps"]["node"] == "Scheduler" and found["guidance"]["node"] == "Flux Guidance"
    assert (found["width"]["node"], found["width"]["default"]) == ("Empty Latent", 256)  # not ModelSamplingFlux's
    assert result.template.kind == "image"
    assert [o.title for o in result.template.outputs] == ["Save Image"]
    assert result.added_models == []  # Flux.1-dev is in the lock


def test_sd35_triple_clip_adds_missing_models_to_the_lock(folder: Path, lock: Path) -> None:
    before = lock.read_text()
    result = init_template(FIXTURES / "sd35_triple_clip.json", "sd35", folder=folder, lock_path=lock)
    found = params(result.manifest_path)
    assert (found["prompt"]["node"], found["negative"]["node"]) == ("Positive", "Negative")
    assert [str(m) for m in result.added_models] == [
        "checkpoints/sd3.5_large.safetensors", "text_encoders/clip_g.safetensors",
    ]
    after = lock.read_text()
    assert after.startswith(before)  # comments and entries kept, additions appended
    added = {(m.folder, m.name): m for m in load_lock(lock).models}
    entry = added[("checkpoints", "sd3.5_large.safetensors")]
    assert (entry.url, entry.sha256, entry.size, entry.used_by) == (None, None, None, ["sd35"])
    assert any("SaveLatent" in note for note in result.notes)  # kept, but not a typed output


def test_sdxl_controlnet_prompt_through_controlnet_and_input_image(folder: Path, lock: Path) -> None:
    result = init_template(FIXTURES / "sdxl_controlnet.json", "sdxl", folder=folder, lock_path=lock)
    found = params(result.manifest_path)
    assert found["prompt"]["targets"] == [{"node": "SDXL Prompt", "input": "text_g"},
                                          {"node": "SDXL Prompt", "input": "text_l"}]
    assert found["negative"]["node"] == "Negative Prompt"
    assert found["image"]["type"] == "image" and "default" not in found["image"]  # an input artifact: required
    assert result.template.required == ["image"]
    assert [str(m) for m in result.added_models] == ["controlnet/controlnet-canny-sdxl-1.0.safetensors"]


def test_wan_video_and_audio_kinds(folder: Path, lock: Path) -> None:
    wan = init_template(FIXTURES / "wan_i2v.json", "wan", folder=folder, lock_path=lock)
    assert wan.template.kind == "video"
    assert {o.title: o.kind for o in wan.template.outputs} == {
        "Save Video": "video", "Save WEBP": "image", "Save WEBM": "video"}
    assert params(wan.manifest_path)["length"]["default"] == 17
    audio = init_template(FIXTURES / "stable_audio.json", "audio", folder=folder, lock_path=lock)
    assert audio.template.kind == "audio"
    found = params(audio.manifest_path)
    assert (found["prompt"]["node"], found["negative"]["node"]) == ("Positive", "Negative")  # through conditioning
    assert found["seconds"]["type"] == "float"


def test_lora_and_primitive_parameters(folder: Path, lock: Path, tmp_path: Path) -> None:
    graph = json.loads((FIXTURES / "sd35_triple_clip.json").read_text())
    graph["11"] = {"inputs": {"model": ["1", 0], "lora_name": "ink.safetensors", "strength_model": 0.8},
                   "class_type": "LoraLoaderModelOnly", "_meta": {"title": "Style LoRA"}}
    graph["12"] = {"inputs": {"value": 5}, "class_type": "PrimitiveInt", "_meta": {"title": "Steps Count"}}
    graph["5"]["inputs"]["model"] = ["11", 0]
    graph["7"]["inputs"]["steps"] = ["12", 0]
    path = tmp_path / "lora.json"
    path.write_text(json.dumps(graph))
    found = params(init_template(path, "lora", folder=folder, lock_path=lock).manifest_path)
    assert found["lora"] == {"name": "lora", "node": "Style LoRA", "input": "lora_name", "type": "model",
                             "folder": "loras", "default": "ink.safetensors",
                             "description": "LoRA file of Style LoRA (a name in the worker's loras folder)"}
    assert found["lora_strength"]["default"] == 0.8
    assert found["steps_count"]["node"] == "Steps Count" and "steps" not in found  # a link is not a parameter
    assert ("loras", "ink.safetensors") in {(m.folder, m.name) for m in load_lock(lock).models}


def test_same_name_on_several_nodes_takes_the_titles(folder: Path, lock: Path, tmp_path: Path) -> None:
    graph = json.loads((FIXTURES / "sd35_triple_clip.json").read_text())
    graph["11"] = {**json.loads(json.dumps(graph["7"])), "_meta": {"title": "Second Pass"}}
    graph["11"]["inputs"]["latent_image"] = ["7", 0]
    graph["8"]["inputs"]["samples"] = ["11", 0]
    path = tmp_path / "two.json"
    path.write_text(json.dumps(graph))
    found = params(init_template(path, "two", folder=folder, lock_path=lock).manifest_path)
    assert {"seed_ksampler", "seed_second_pass", "steps_ksampler", "steps_second_pass"} <= set(found)
    assert "seed" not in found


# -- UI format ------------------------------------------------------------------------------------------------


def test_ui_workflow_is_converted_from_object_info(folder: Path, lock: Path) -> None:
    result = init_template(FIXTURES / "sdxl_ui.json", "ui", folder=folder, lock_path=lock)
    graph = json.loads(result.graph_path.read_text())
    assert sorted(graph, key=int) == ["1", "2", "3", "4", "5", "6", "7", "14", "15"]  # muted, bypassed, virtual gone
    sampler = graph["5"]
    assert sampler["inputs"] == {  # control_after_generate skipped; the seed from the PrimitiveNode
        "seed": 777, "steps": 20, "cfg": 7.5, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
        "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0]}
    assert sampler["_meta"] == {"title": "KSampler"}
    assert graph["6"]["inputs"]["vae"] == ["1", 2]  # through the Reroute
    assert graph["7"]["inputs"]["images"] == ["6", 0]  # around the bypassed ImageInvert
    assert graph["14"]["inputs"] == {"image": "example.png"}  # the upload button's value left out
    assert graph["6"]["_meta"]["title"] == "VAE Decode" and graph["2"]["_meta"]["title"] == "Positive"
    assert result.validated


def test_widget_layouts() -> None:
    info = offline_catalogue().object_info()
    assert map_widgets("KSampler", info["KSampler"], [1, "fixed", 20, 7.0, "euler", "normal", 1.0])["seed"] == 1
    assert "do not match" in str(map_widgets("KSampler", info["KSampler"], [1, 20, 7.0, "euler", "normal", 1.0]))
    assert "do not match" in str(map_widgets("KSampler", info["KSampler"], [1, "fixed", 20, 7.0, "nope", "normal", 1]))
    mask = info["LoadImageMask"]
    assert map_widgets("LoadImageMask", mask, ["a.png", "image", "alpha"]) == {"image": "a.png", "channel": "alpha"}
    assert map_widgets("LoadImageMask", mask, ["a.png", "alpha", "image"]) == {"image": "a.png", "channel": "alpha"}
    assert map_widgets("LoadImageMask", mask, ["a.png", "red"]) == {"image": "a.png", "channel": "red"}
    assert map_widgets("RandomNoise", info["RandomNoise"], [5, "increment"]) == {"noise_seed": 5}
    assert map_widgets("SaveLoRANode", info["SaveLoRANode"], ["loras/x"]) == {"prefix": "loras/x"}  # forceInput


def test_ui_workflow_that_cannot_be_converted_says_how_to_export(folder: Path, lock: Path, tmp_path: Path) -> None:
    workflow = json.loads((FIXTURES / "sdxl_ui.json").read_text())
    workflow["nodes"][4]["widgets_values"] = [123, 20, 7.5, "euler", "normal", 1.0]  # a version without control
    workflow["nodes"][2]["type"] = "SomePackEncoder"
    path = tmp_path / "bad_ui.json"
    path.write_text(json.dumps(workflow))
    message = refused(path, folder, lock)
    assert "node #5 (KSampler): its 6 widget values do not match the widgets of KSampler" in message
    assert "node #3 (SomePackEncoder 'Negative'): class 'SomePackEncoder' has no schema here" in message
    assert message.count("Export (API)") == 2
    workflow = json.loads((FIXTURES / "sdxl_ui.json").read_text())
    workflow["definitions"] = {"subgraphs": [{"id": "x"}]}
    path.write_text(json.dumps(workflow))
    assert "subgraphs" in refused(path, folder, lock) and "Export (API)" in refused(path, folder, lock)


def test_pack_named_by_the_ui_workflow_is_added_to_the_lock(folder: Path, lock: Path, tmp_path: Path) -> None:
    graph = json.loads((FIXTURES / "sd35_triple_clip.json").read_text())
    graph["11"] = {"inputs": {"images": ["8", 0]}, "class_type": "FancySaver", "_meta": {"title": "Fancy"}}
    workflow = {"nodes": [{"id": 11, "type": "FancySaver", "properties": {
        "cnr_id": "fancy-nodes", "aux_id": "someone/ComfyUI-Fancy", "ver": "0123abcd"}}], "links": []}
    png = tmp_path / "fancy.png"
    info = _pnginfo({"prompt": json.dumps(graph), "workflow": json.dumps(workflow)})
    Image.new("RGB", (8, 8)).save(png, pnginfo=info)
    result = init_template(png, "fancy", folder=folder, lock_path=lock)
    assert result.added_packs == ["fancy-nodes"] and not result.validated
    assert any("--worker" in note for note in result.notes)
    pack = next(p for p in load_lock(lock).custom_nodes if p.pack == "fancy-nodes")
    assert (pack.repo, pack.commit, pack.classes) == ("https://github.com/someone/ComfyUI-Fancy", "0123abcd",
                                                      ["FancySaver"])
    assert [(c.class_, c.pack) for c in result.template.custom_nodes] == [("FancySaver", "fancy-nodes")]


# -- media files ComfyUI wrote --------------------------------------------------------------------------------


def _pnginfo(texts: dict[str, str]) -> Any:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, value in texts.items():
        info.add_text(key, value)
    return info


def test_png_prompt_is_kept_and_is_changed_removed(folder: Path, lock: Path, tmp_path: Path) -> None:
    text = (FIXTURES / "sdxl_controlnet.json").read_text()
    compact = json.dumps(json.loads(text))  # what SaveImage embeds: json.dumps(prompt)
    png = tmp_path / "ComfyUI_00001_.png"
    Image.new("RGB", (8, 8)).save(png, pnginfo=_pnginfo({"prompt": compact, "workflow": "{}"}))
    result = init_template(png, "from_png", folder=folder, lock_path=lock)
    assert result.graph_path.read_text() == compact and result.source == "PNG metadata"
    embedded = json.loads(compact)
    embedded["4"]["is_changed"] = ["0" * 64]  # LoadImage's fingerprint, as execution leaves it
    Image.new("RGB", (8, 8)).save(png, pnginfo=_pnginfo({"prompt": json.dumps(embedded)}))
    result = init_template(png, "from_png", folder=folder, lock_path=lock, force=True)
    assert result.graph_path.read_text() == compact
    assert any("is_changed" in note and "node #4 (LoadImage 'Control Image')" in note for note in result.notes)


def test_animated_png_comf_chunk_and_latent_header(folder: Path, lock: Path, tmp_path: Path) -> None:
    compact = json.dumps(json.loads((FIXTURES / "flux_custom_sampler.json").read_text()))
    png = tmp_path / "anim.png"
    Image.new("RGB", (8, 8)).save(png)
    data = png.read_bytes()
    body = b"prompt\0" + compact.encode("latin-1")
    chunk = struct.pack(">I", len(body)) + b"comf" + body + struct.pack(">I", zlib.crc32(b"comf" + body))
    png.write_bytes(data[:-12] + chunk + data[-12:])  # after IDAT, before IEND
    assert init_template(png, "apng", folder=folder, lock_path=lock).graph_path.read_text() == compact
    header = json.dumps({"__metadata__": {"prompt": compact}, "latent_tensor": {
        "dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    latent = tmp_path / "x_00001_.latent"
    latent.write_bytes(struct.pack("<Q", len(header)) + header + b"\0\0\0\0")
    result = init_template(latent, "latent", folder=folder, lock_path=lock)
    assert result.graph_path.read_text() == compact and result.source == "latent file metadata"


def test_ffmetadata_escapes() -> None:
    text = ';FFMETADATA1\nPROMPT={"a": "x\\=y\\;z\\#\\\\"}\nencoder=Lavf\n[STREAM]\nprompt=no\nworkflow={}\n'
    assert parse_ffmetadata(text) == {"prompt": '{"a": "x=y;z#\\"}', "encoder": "Lavf", "workflow": "{}"}
    assert parse_ffmetadata('workflow={"n": "a\\\nb"}\n') == {"workflow": '{"n": "a\nb"}'}


# -- bad input: one message naming the file and the node ------------------------------------------------------


def _graph(tmp_path: Path, name: str, change: Any) -> Path:
    graph = json.loads((FIXTURES / "flux_custom_sampler.json").read_text())
    change(graph)
    path = tmp_path / name
    path.write_text(json.dumps(graph))
    return path


def test_neither_graph_nor_media(folder: Path, lock: Path, tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("just some text")
    assert "neither a ComfyUI workflow (JSON) nor an image, audio or video file" in refused(path, folder, lock)
    path.write_text("[1, 2]")
    assert "is JSON but not a ComfyUI graph (a list)" in refused(path, folder, lock)
    path.write_text("{not json")
    assert "looks like JSON but is not valid JSON" in refused(path, folder, lock)


def test_png_without_prompt(folder: Path, lock: Path, tmp_path: Path) -> None:
    png = tmp_path / "photo.png"
    Image.new("RGB", (8, 8)).save(png, pnginfo=_pnginfo({"Software": "GIMP"}))
    message = refused(png, folder, lock)
    assert message.startswith(f"{png}: PNG carries no ComfyUI 'prompt' metadata (tags found: Software)")


def test_cycle_and_missing_link(folder: Path, lock: Path, tmp_path: Path) -> None:
    cycle = _graph(tmp_path, "cycle.json", lambda g: g["4"]["inputs"].update(clip=["13", 0]))
    message = refused(cycle, folder, lock)
    assert "the graph has a cycle (node #4 (CLIPTextEncode 'Prompt') -> node #13 (VAEDecode 'Decode')" in message
    missing = _graph(tmp_path, "missing.json", lambda g: g["13"]["inputs"].update(vae=["99", 0]))
    assert "node #13 (VAEDecode 'Decode') input 'vae' links to node #99, which is not in the graph" in refused(
        missing, folder, lock)
    slot = _graph(tmp_path, "slot.json", lambda g: g["13"]["inputs"].update(vae=["3", 4]))
    assert "links to output 4 of node #3 (VAELoader 'Load VAE'), which has 1 output" in refused(slot, folder, lock)
    shape = _graph(tmp_path, "shape.json", lambda g: g["13"]["inputs"].update(vae=[3, 0]))
    assert "node #13 (VAEDecode 'Decode') input 'vae': [3, 0] is not a link" in refused(shape, folder, lock)


def test_no_output_node_and_unknown_class(folder: Path, lock: Path, tmp_path: Path) -> None:
    no_output = _graph(tmp_path, "no_output.json", lambda g: g.pop("14"))
    assert "the graph has no output node" in refused(no_output, folder, lock)
    unknown = _graph(tmp_path, "unknown.json", lambda g: g.update(
        {"15": {"class_type": "MysteryNode", "inputs": {}, "_meta": {"title": "Mystery"}}}))
    message = refused(unknown, folder, lock)
    assert f"{unknown}: node #15 (MysteryNode 'Mystery'): class 'MysteryNode' is not in ComfyUI 0.3.64 core" in message
    assert "deployments/comfyui/lock.yaml" in message
    no_class = _graph(tmp_path, "no_class.json", lambda g: g["4"].pop("class_type"))
    assert "node #4 has no class_type" in refused(no_class, folder, lock)


def test_ambiguities_name_the_nodes_and_the_fix(folder: Path, lock: Path, tmp_path: Path) -> None:
    def same_titles(g: dict[str, Any]) -> None:
        g["3"]["_meta"]["title"] = g["4"]["_meta"]["title"] = "CLIP Text Encode (Prompt)"

    graph = json.loads((FIXTURES / "sd35_triple_clip.json").read_text())
    same_titles(graph)
    path = tmp_path / "titles.json"
    path.write_text(json.dumps(graph))
    message = refused(path, folder, lock)
    assert "2 nodes share the title 'CLIP Text Encode (Prompt)' (node #3 (CLIPTextEncode" in message
    assert "node #4 (CLIPTextEncode 'CLIP Text Encode (Prompt)')" in message and "rename them in ComfyUI" in message
    graph = json.loads((FIXTURES / "sd35_triple_clip.json").read_text())
    graph["7"]["inputs"]["negative"] = ["3", 0]  # one encoder on both sides
    graph["3"]["_meta"]["title"] = "Text"
    path.write_text(json.dumps(graph))
    message = refused(path, folder, lock)
    assert "node #3 (CLIPTextEncode 'Text') feeds both positive and negative inputs" in message
    no_title = _graph(tmp_path, "untitled.json", lambda g: g["4"].pop("_meta"))
    assert "node #4 (CLIPTextEncode) has no _meta.title" in refused(no_title, folder, lock)


def test_existing_template_name_and_bad_name(folder: Path, lock: Path) -> None:
    source = FIXTURES / "flux_custom_sampler.json"
    init_template(source, "flux", folder=folder, lock_path=lock)
    with pytest.raises(InitRefused, match="exists already"):
        init_template(source, "flux", folder=folder, lock_path=lock)
    with pytest.raises(InitRefused, match=r"--name '\.\./x'"):
        init_template(source, "../x", folder=folder, lock_path=lock)


def test_cli_exit_codes(folder: Path, lock: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["templates", "init", "--folder", str(folder), "--lock", str(lock)]
    ok = runner.invoke(app, [*base, str(FIXTURES / "wan_i2v.json"), "--name", "wan"])
    assert ok.exit_code == 0, ok.output
    assert "param   image" in ok.output and "kind video" in ok.output and "added diffusion_models/wan2.1" in ok.output
    cycle = _graph(tmp_path, "cycle.json", lambda g: g["4"]["inputs"].update(clip=["13", 0]))
    bad = runner.invoke(app, [*base, str(cycle), "--name", "cycle"])
    assert bad.exit_code == 2
    assert f"error: {cycle}: the graph has a cycle" in bad.output
    checked = runner.invoke(app, ["templates", "validate", "wan", "--folder", str(folder), "--lock", str(lock)])
    assert checked.exit_code == 0 and "ok      wan" in checked.output


def test_lock_text_appends_to_an_empty_list() -> None:
    text = "comfyui:\n  repo: r\n  commit: c\n  version: v\ncustom_nodes: []\nmodels:\n  - folder: vae\n    name: a\n"
    from reelforge.templates.lock import CustomNodePack, ModelFile

    out = lock_text(text, [ModelFile(folder="vae", name="b")], [CustomNodePack(pack="p", repo="r", commit="c")])
    data = yaml.safe_load(out)
    assert [m["name"] for m in data["models"]] == ["a", "b"] and data["custom_nodes"][0]["pack"] == "p"


def test_self_validated_inputs_match_the_preview_loaders() -> None:
    """Every loader whose file input the node validates itself (the preview worker's own classes) is skipped
    by offline validation too, LoadLatent included."""
    registry = default_registry()
    own = {c.name: c.validated_inputs for c in registry if not c.generic and c.validated_inputs}
    assert own == {k: v for k, v in SELF_VALIDATED_INPUTS.items() if k in own}
    assert set(own) == set(SELF_VALIDATED_INPUTS)
    assert SELF_VALIDATED_INPUTS["LoadLatent"] == frozenset({"latent"})
