"""ComfyUI 0.3.64 prompt validation: every error type and message of the captured c.4 table, coercion,
order of checks, partial targets and the 200-with-node_errors case."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from captured import MISSING_HEIGHT_400
from PIL import Image

from reelforge.preview.registry import NodeClass, NodeRegistry, NodeResult, WorkerDirs, default_registry
from reelforge.preview.validation import ValidationOutcome, validate_node_input, validate_prompt


@pytest.fixture
def dirs(tmp_path: Path) -> WorkerDirs:
    d = WorkerDirs(tmp_path / "worker")
    d.create()
    return d


@pytest.fixture
def reg() -> NodeRegistry:
    return default_registry()


def run(
    prompt: dict[str, Any], reg: NodeRegistry, dirs: WorkerDirs, targets: list[str] | None = None
) -> ValidationOutcome:
    return validate_prompt(prompt, reg, dirs, targets)


def empty(width: Any = 64, height: Any = 48, **extra: Any) -> dict[str, Any]:
    inputs = {"width": width, "height": height, "batch_size": 1, "color": 0, **extra}
    return {"class_type": "EmptyImage", "inputs": inputs}


def save(src: Any, prefix: str = "t") -> dict[str, Any]:
    return {"class_type": "SaveImage", "inputs": {"images": src, "filename_prefix": prefix}}


def only_error(outcome: ValidationOutcome, node_id: str) -> dict[str, Any]:
    errors = outcome.node_errors[node_id]["errors"]
    assert len(errors) == 1, errors
    return dict(errors[0])


# -- top-level checks and their order ---------------------------------------------------------------------


def test_valid_prompt_passes_and_lists_outputs(reg: NodeRegistry, dirs: WorkerDirs) -> None:
    out = run(
        {
            "1": empty(),
            "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
            "3": save(["2", 0]),
        },
        reg,
        dirs,
    )
    assert out.ok is True
    assert out.error == {}
    assert out.node_errors == {}
    assert out.outputs_to_execute == ["3"]


def test_missing_class_type(reg: NodeRegistry, dirs: WorkerDirs) -> None:
    out = run({"1": empty(), "2": {"inputs": {}}, "3": save(["1", 0])}, reg, dirs)
    assert out.ok is False
    assert out.error == {
        "type": "invalid_prompt",
        "message": "Cannot execute because a node is missing the class_type property.",
        "details": "Node ID '#2'",
        "extra_info": {},
    }
    assert out.node_errors == {}


def test_unknown_class_exact_c4_response(reg: NodeRegistry, dirs: WorkerDirs) -> None:
    out = run({"1": empty(), "2": {"class_type": "NoSuchNode", "inputs": {"image": ["1", 0]}}}, reg, dirs)
    assert out.response_body() == {
        "error": {
            "type": "invalid_prompt",
            "message": "Cannot execute because node NoSuchNode does not exist.",
            "details": "Node ID '#2'",
            "extra_info": {},
        },
        "node_errors": {},
    }


def test_unknown_class_checked_on_disconnected_nodes_too(reg: NodeRegistry, dirs: WorkerDirs) -> None:
    out = run({"1": empty(), "2": save(["1", 0]), "9": {"class_type": "Nope", "inputs": {}}}, reg, dirs)
    assert out.error["type"] == "invalid_prompt"
    assert out.error["details"] == "Node ID '#9'"


def test_class_checks_run_node_by_node_in_graph_order(reg: NodeRegistry, dirs: WorkerDirs) -> None:
    a = run({"1": {"class_type": "Nope", "inputs": {}}, "2": {"inputs": {}}}, reg, dirs)
    assert a.error["message"] == "Cannot execute because node Nope does not exist."
    b = run({"2": {"inputs": {}}, "1": {"class_type": "Nope", "inputs": {}}}, reg, dirs)
    assert b.error["message"] == "Cannot execute because a node is missing the class_type property."


def test_unknown_class_is_reported_before_missing_outputs(reg: NodeRegistry, dirs: WorkerDirs) -> None:
    out = run({"1": empty(), "2": {"class_type": "Nope", "inputs": {}}}, reg, dirs)
    assert out.error["type"] == "invalid_prompt"


def test_no_outputs(reg: NodeRegistry, dirs: WorkerDirs) -> None:
    out = run({"1": empty(width=0)}, reg, dirs)  # invalid, but never validated: nothing to execute
    assert out.response_body() == {
        "error": {
            "type": "prompt_no_outputs",
            "message": "Prompt has no outputs",
            "details": "",
            "extra_info": {},
        },
        "node_errors": {},
    }


# -- per-input errors --------------------------------------------------------------------------------------


def test_required_input_missing_upstream_exact_c4_response(reg: NodeRegistry, dirs: WorkerDirs) -> None:
    node = empty()
    del node["inputs"]["height"]
    out = run({"1": node, "2": save(["1", 0])}, reg, dirs)
    assert out.ok is False
    assert out.response_body() == MISSING_HEIGHT_400


def test_required_input_missing_on_output_joins_top_level_details(
    reg: NodeRegistry, dirs: WorkerDirs
) -> None:
    out = run({"1": empty(), "2": {"class_type": "SaveImage", "inputs": {"filename_prefix": "x"}}}, reg, dirs)
    assert out.error["type"] == "prompt_outputs_failed_validation"
    assert out.error["details"] == "Required input is missing: images"
    assert only_error(out, "2")["type"] == "required_input_missing"
    assert out.node_errors["2"]["dependent_outputs"] == ["2"]


def test_link_to_absent_node_on_output(reg: NodeRegistry, dirs: WorkerDirs) -> None:
    out = run({"2": save(["99", 0])}, reg, dirs)
    err = only_error(out, "2")
    assert err["type"] == "exception_during_validation"
    assert err["message"] == "Exception when validating node"
    assert err["details"] == "'99'"
    assert err["extra_info"]["exception_type"] == "KeyError"
    assert isinstance(err["extra_info"]["traceback"], list) and err["extra_info"]["traceback"]
    assert out.error["details"] == "Exception when validating node: '99'"


def test_link_to_absent_node_upstream_is_reported_on_the_upstream_node(
    reg: NodeRegistry, dirs: WorkerDirs
) -> None:
    prompt = {"2": {"class_type": "ImageInvert", "inputs": {"image": ["99", 0]}}, "3": save(["2", 0])}
    out = run(prompt, reg, dirs)
    assert set(out.node_errors) == {"2"}
    err = only_error(out, "2")
    assert err["type"] == "exception_during_inner_validation"
    assert err["message"] == "Exception when validating inner node"
    assert err["details"] == "'99'"
    assert err["extra_info"]["input_name"] == "images"  # the input of node 3 through which it was reached
    assert err["extra_info"]["exception_type"] == "KeyError"
    assert err["extra_info"]["linked_node"] == ["2", 0]
    assert out.node_errors["2"]["dependent_outputs"] == ["3"]
    assert out.node_errors["2"]["class_type"] == "ImageInvert"
    assert out.error["details"] == ""  # the output itself has no error of its own


def test_bad_linked_input(reg: NodeRegistry, dirs: WorkerDirs) -> None:
    out = run({"1": empty(), "2": save(["1", 0, 5])}, reg, dirs)
    err = only_error(out, "2")
    assert err["type"] == "bad_linked_input"
    assert err["message"] == "Bad linked input, must be a length-2 list of [node_id, slot_index]"
    assert err["details"] == "images"
    assert err["extra_info"]["received_value"] == ["1", 0, 5]


def test_bad_output_slot(reg: NodeRegistry, dirs: WorkerDirs) -> None:
    out = run({"1": empty(), "2": save(["1", 3])}, reg, dirs)
    err = only_error(out, "2")
    assert err["type"] == "exception_during_validation"
    assert err["details"] == "tuple index out of range"
    assert err["extra_info"]["exception_type"] == "IndexError"


def test_link_with_int_node_id_or_string_slot(reg: NodeRegistry, dirs: WorkerDirs) -> None:
    int_id = only_error(run({"1": empty(), "2": save([1, 0])}, reg, dirs), "2")
    assert (int_id["type"], int_id["details"]) == ("exception_during_validation", "1")
    str_slot = only_error(run({"1": empty(), "2": save(["1", "0"])}, reg, dirs), "2")
    assert str_slot["details"] == "tuple indices must be integers or slices, not str"
    assert str_slot["extra_info"]["exception_type"] == "TypeError"


def test_return_type_mismatch(reg: NodeRegistry, dirs: WorkerDirs) -> None:
    prompt = {
        "1": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 8, "height": 8}},
        "2": save(["1", 0]),
    }
    err = only_error(run(prompt, reg, dirs), "2")
    assert err["type"] == "return_type_mismatch"
    assert err["message"] == "Return type mismatch between linked nodes"
    assert err["details"] == "images, received_type(MASK) mismatch input_type(IMAGE)"
    assert err["extra_info"]["received_type"] == "MASK"
    assert err["extra_info"]["linked_node"] == ["1", 0]


def test_value_smaller_than_min_and_bigger_than_max(reg: NodeRegistry, dirs: WorkerDirs) -> None:
    small = only_error(run({"1": empty(width=0), "2": save(["1", 0])}, reg, dirs), "1")
    assert small["type"] == "value_smaller_than_min"
    assert small["message"] == "Value 0 smaller than min of 1"
    assert small["details"] == "width"
    assert small["extra_info"]["received_value"] == 0
    big = only_error(run({"1": empty(width=100000), "2": save(["1", 0])}, reg, dirs), "1")
    assert big["type"] == "value_bigger_than_max"
    assert big["message"] == "Value 100000 bigger than max of 16384"


def test_invalid_input_type(reg: NodeRegistry, dirs: WorkerDirs) -> None:
    err = only_error(run({"1": empty(width="abc"), "2": save(["1", 0])}, reg, dirs), "1")
    assert err["type"] == "invalid_input_type"
    assert err["message"] == "Failed to convert an input value to a INT value"
    assert err["details"] == "width, abc, invalid literal for int() with base 10: 'abc'"
    assert err["extra_info"]["exception_message"] == "invalid literal for int() with base 10: 'abc'"


def test_value_not_in_list(reg: NodeRegistry, dirs: WorkerDirs) -> None:
    scale = {
        "class_type": "ImageScale",
        "inputs": {"image": ["1", 0], "upscale_method": "nope", "width": 8, "height": 8, "crop": "disabled"},
    }
    err = only_error(run({"1": empty(), "2": scale, "3": save(["2", 0])}, reg, dirs), "2")
    assert err["type"] == "value_not_in_list"
    assert err["message"] == "Value not in list"
    assert (
        err["details"]
        == "upscale_method: 'nope' not in ['nearest-exact', 'bilinear', 'area', 'bicubic', 'lanczos']"
    )
    assert err["extra_info"]["input_config"][0] == ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]


def test_load_image_missing_file_is_custom_validation_failed(reg: NodeRegistry, dirs: WorkerDirs) -> None:
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "does_not_exist.png"}},
        "2": save(["1", 0]),
    }
    err = only_error(run(prompt, reg, dirs), "1")
    assert err == {
        "type": "custom_validation_failed",
        "message": "Custom validation failed for node",
        "details": "image - Invalid image file: does_not_exist.png",
        "extra_info": {"input_name": "image"},
    }


def test_load_image_files_are_re_read_per_request(reg: NodeRegistry, dirs: WorkerDirs) -> None:
    prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": "later.png"}}, "2": save(["1", 0])}
    assert run(prompt, reg, dirs).ok is False
    Image.new("RGB", (4, 4)).save(dirs.input / "later.png")
    assert run(prompt, reg, dirs).ok is True
    assert reg.get("LoadImage") is not None
    combos = reg.classes["LoadImage"].object_info(dirs)["input"]["required"]["image"][0]
    assert combos == ["later.png"]


def test_load_image_subfolder_and_annotated_names_pass(reg: NodeRegistry, dirs: WorkerDirs) -> None:
    (dirs.input / "sub").mkdir()
    Image.new("RGB", (4, 4)).save(dirs.input / "sub" / "in_sub.png")
    Image.new("RGB", (4, 4)).save(dirs.output / "made.png")
    for name in ("sub/in_sub.png", "made.png [output]"):
        prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": name}}, "2": save(["1", 0])}
        assert run(prompt, reg, dirs).ok is True, name
    escape = {"1": {"class_type": "LoadImage", "inputs": {"image": "../../etc/passwd"}}, "2": save(["1", 0])}
    assert run(escape, reg, dirs).ok is False


# -- coercion ---------------------------------------------------------------------------------------------


def test_widget_values_are_coerced_into_the_returned_graph(reg: NodeRegistry, dirs: WorkerDirs) -> None:
    prompt = {"1": empty(width="8", height=8.7, batch_size=True), "2": save(["1", 0], prefix="p")}
    prompt["2"]["inputs"]["filename_prefix"] = 123
    original = copy.deepcopy(prompt)
    out = run(prompt, reg, dirs)
    assert out.ok is True
    inputs = out.coerced["1"]["inputs"]
    assert (inputs["width"], inputs["height"], inputs["batch_size"]) == (8, 8, 1)
    assert type(inputs["width"]) is int and type(inputs["batch_size"]) is int
    assert out.coerced["2"]["inputs"]["filename_prefix"] == "123"
    assert prompt == original  # the caller's graph is not mutated


def test_float_coercion_and_float_min(reg: NodeRegistry, dirs: WorkerDirs) -> None:
    good: dict[str, Any] = {
        "1": {"class_type": "SolidMask", "inputs": {"value": "0.25", "width": 4, "height": 4}}
    }
    good["2"] = {"class_type": "MaskToImage", "inputs": {"mask": ["1", 0]}}
    good["3"] = save(["2", 0])
    out = run(good, reg, dirs)
    assert out.ok is True and out.coerced["1"]["inputs"]["value"] == 0.25
    bad = copy.deepcopy(good)
    bad["1"]["inputs"]["value"] = -1
    err = only_error(run(bad, reg, dirs), "1")
    assert err["message"] == "Value -1.0 smaller than min of 0.0"


# -- custom node classes for the generic rules ----------------------------------------------------------


def _noop(ctx: Any, inputs: dict[str, Any]) -> NodeResult:
    return NodeResult()


def custom_registry() -> NodeRegistry:
    reg = NodeRegistry()
    many = [f"m{i:02}.safetensors" for i in range(25)]

    def add(name: str, schema: dict[str, Any], **kw: Any) -> None:
        reg.register(NodeClass(name=name, schema=schema, run=_noop, **kw))

    add("Src", {"input": {"required": {}}, "output": ["IMAGE,MASK"], "output_node": False})
    add("Any", {"input": {"required": {}}, "output": ["*"], "output_node": False})
    add("Str", {"input": {"required": {}}, "output": ["STRING"], "output_node": False})
    add(
        "Sink",
        {
            "input": {
                "required": {
                    "anything": ["*"],
                    "union": ["MASK,LATENT"],
                    "flag": ["BOOLEAN", {"default": False}],
                    "text": ["STRING", {}],
                    "big": [many],
                    "new_combo": ["COMBO", {"options": ["a", "b"]}],
                    "values": ["FLOAT", {"min": 0.0, "max": 1.0}],
                },
                "optional": {"opt": ["INT", {"min": 5}]},
                "hidden": {"prompt": "PROMPT", "unique_id": "UNIQUE_ID"},
            },
            "output": [],
            "output_node": True,
        },
    )
    add(
        "Checked",
        {
            "input": {"required": {"a": ["INT", {"min": 10}], "b": [["x", "y"]], "c": ["INT", {"max": 3}]}},
            "output": [],
            "output_node": True,
        },
        validate_inputs=lambda dirs, inputs: True if inputs.get("a") == 1 else "bad a/b",
        validated_inputs=frozenset({"a", "b"}),
    )
    add(
        "Dyn",
        {"input": {"required": {"name": [[]]}}, "output": [], "output_node": True},
        combos=lambda d: {"name": many},
    )
    return reg


def sink(**over: Any) -> dict[str, Any]:
    inputs = {
        "anything": ["a", 0],
        "union": ["s", 0],
        "flag": 0,
        "text": 5,
        "big": "m03.safetensors",
        "new_combo": "b",
        "values": 0.5,
        **over,
    }
    return {"class_type": "Sink", "inputs": inputs}


def test_any_type_union_types_and_both_combo_forms(dirs: WorkerDirs) -> None:
    reg = custom_registry()
    prompt = {"a": {"class_type": "Str", "inputs": {}}, "s": {"class_type": "Src", "inputs": {}}, "o": sink()}
    out = validate_prompt(prompt, reg, dirs)
    assert out.ok is True, out.node_errors
    assert out.coerced["o"]["inputs"]["flag"] is False
    assert out.coerced["o"]["inputs"]["text"] == "5"
    # an "Any" output feeds a typed input too
    prompt2 = {
        "a": {"class_type": "Any", "inputs": {}},
        "s": {"class_type": "Any", "inputs": {}},
        "o": sink(),
    }
    assert validate_prompt(prompt2, reg, dirs).ok is True
    # STRING into MASK,LATENT is rejected
    prompt3 = {
        "a": {"class_type": "Str", "inputs": {}},
        "s": {"class_type": "Str", "inputs": {}},
        "o": sink(),
    }
    err = only_error(validate_prompt(prompt3, reg, dirs), "o")
    assert err["details"] == "union, received_type(STRING) mismatch input_type(MASK,LATENT)"


def test_validate_node_input_rules() -> None:
    assert validate_node_input("IMAGE", "IMAGE")
    assert validate_node_input("*", "MASK") and validate_node_input("MASK", "*")
    assert validate_node_input("IMAGE,MASK", "MASK")
    assert not validate_node_input("IMAGE,MASK", "MASK", strict=True)
    assert not validate_node_input("MASK", "IMAGE")
    assert not validate_node_input("STRING", ["a", "b"])


def test_new_combo_form_and_long_lists_are_not_echoed(dirs: WorkerDirs) -> None:
    reg = custom_registry()
    base = {"a": {"class_type": "Str", "inputs": {}}, "s": {"class_type": "Src", "inputs": {}}}
    err = only_error(validate_prompt({**base, "o": sink(new_combo="c")}, reg, dirs), "o")
    assert err["details"] == "new_combo: 'c' not in ['a', 'b']"
    err = only_error(validate_prompt({**base, "o": sink(big="zz.safetensors")}, reg, dirs), "o")
    assert err["details"] == "big: 'zz.safetensors' not in (list of length 25)"
    assert err["extra_info"]["input_config"] is None
    # dynamic combo filled from NodeClass.combos at validation time
    dyn = validate_prompt({"d": {"class_type": "Dyn", "inputs": {"name": "m24.safetensors"}}}, reg, dirs)
    assert dyn.ok is True


def test_value_wrapper_optional_and_hidden_inputs(dirs: WorkerDirs) -> None:
    reg = custom_registry()
    base = {"a": {"class_type": "Str", "inputs": {}}, "s": {"class_type": "Src", "inputs": {}}}
    out = validate_prompt({**base, "o": sink(text={"__value__": [1, 2]})}, reg, dirs)
    assert out.ok is True
    assert out.coerced["o"]["inputs"]["text"] == "[1, 2]"  # unwrapped, then str() like ComfyUI
    err = only_error(validate_prompt({**base, "o": sink(opt=1)}, reg, dirs), "o")
    assert (err["type"], err["details"]) == ("value_smaller_than_min", "opt")
    # hidden inputs are never validated, unknown inputs pass through untouched
    out = validate_prompt({**base, "o": sink(prompt="x", unique_id=[1, 2, 3], extra="free")}, reg, dirs)
    assert out.ok is True
    assert out.coerced["o"]["inputs"]["unique_id"] == [1, 2, 3]


def test_custom_validation_skips_builtin_checks_of_its_inputs(dirs: WorkerDirs) -> None:
    reg = custom_registry()
    # a=1 is below min 10 and b="zz" is not in the list, but both are validated by the node itself
    out = validate_prompt({"n": {"class_type": "Checked", "inputs": {"a": 1, "b": "zz", "c": 1}}}, reg, dirs)
    assert out.ok is True
    # c is not covered by the custom function: built-in max applies
    out = validate_prompt({"n": {"class_type": "Checked", "inputs": {"a": 1, "b": "zz", "c": 9}}}, reg, dirs)
    assert only_error(out, "n")["type"] == "value_bigger_than_max"
    # a failing custom function reports one error per input it declares
    out = validate_prompt({"n": {"class_type": "Checked", "inputs": {"a": 2, "b": "x", "c": 1}}}, reg, dirs)
    details = [e["details"] for e in out.node_errors["n"]["errors"]]
    assert details == ["a - bad a/b", "b - bad a/b"]
    assert out.error["details"] == (
        "Custom validation failed for node: a - bad a/b\nCustom validation failed for node: b - bad a/b"
    )


def test_custom_validation_with_a_declared_input_absent_raises_like_comfyui(dirs: WorkerDirs) -> None:
    reg = custom_registry()
    out = validate_prompt({"n": {"class_type": "Checked", "inputs": {"a": 1, "c": 1}}}, reg, dirs)
    err = only_error(out, "n")
    assert err["type"] == "exception_during_validation"
    assert err["details"] == "Checked.VALIDATE_INPUTS() missing 1 required positional argument: 'b'"


# -- several outputs, partial targets, 200 with node_errors ------------------------------------------------


def test_one_good_one_bad_output_is_ok_with_node_errors(reg: NodeRegistry, dirs: WorkerDirs) -> None:
    prompt = {"1": empty(), "2": save(["1", 0]), "3": empty(width=0), "4": save(["3", 0])}
    out = run(prompt, reg, dirs)
    assert out.ok is True
    assert out.error == {}
    assert out.outputs_to_execute == ["2"]
    assert list(out.node_errors) == ["3"]
    assert out.node_errors["3"]["dependent_outputs"] == ["4"]
    assert out.node_errors["3"]["class_type"] == "EmptyImage"
    assert out.node_errors["3"]["errors"][0]["type"] == "value_smaller_than_min"


def test_shared_upstream_error_lists_every_dependent_output(reg: NodeRegistry, dirs: WorkerDirs) -> None:
    prompt = {"1": empty(width=0), "2": save(["1", 0]), "3": save(["1", 0])}
    out = run(prompt, reg, dirs)
    assert out.ok is False
    assert out.node_errors["1"]["dependent_outputs"] == ["2", "3"]
    assert set(out.node_errors) == {"1"}  # downstream outputs are invalid only because of node 1


def test_earlier_failing_node_collects_later_failing_outputs_too(reg: NodeRegistry, dirs: WorkerDirs) -> None:
    # ComfyUI appends each failing output to every failing node validated so far
    prompt = {"1": empty(width=0), "2": save(["1", 0]), "3": {"class_type": "SaveImage", "inputs": {}}}
    out = run(prompt, reg, dirs)
    assert out.node_errors["1"]["dependent_outputs"] == ["2", "3"]
    assert out.node_errors["3"]["dependent_outputs"] == ["3"]
    assert (
        out.error["details"]
        == "Required input is missing: images\nRequired input is missing: filename_prefix"
    )


def test_disconnected_invalid_nodes_are_not_validated(reg: NodeRegistry, dirs: WorkerDirs) -> None:
    out = run({"1": empty(), "2": save(["1", 0]), "7": empty(width="zzz")}, reg, dirs)
    assert out.ok is True and out.node_errors == {}
    assert out.coerced["7"]["inputs"]["width"] == "zzz"  # never coerced either


def test_partial_targets(reg: NodeRegistry, dirs: WorkerDirs) -> None:
    prompt = {"1": empty(), "2": save(["1", 0]), "3": empty(width=0), "4": save(["3", 0])}
    out = run(prompt, reg, dirs, targets=["2"])
    assert out.ok is True and out.outputs_to_execute == ["2"] and out.node_errors == {}
    out = run(prompt, reg, dirs, targets=["4"])
    assert out.ok is False and out.error["type"] == "prompt_outputs_failed_validation"
    out = run(prompt, reg, dirs, targets=["1"])  # not an output node
    assert out.error["type"] == "prompt_no_outputs"


def test_optional_input_may_be_absent(reg: NodeRegistry, dirs: WorkerDirs) -> None:
    prompt = {
        "1": empty(),
        "2": {"class_type": "CreateVideo", "inputs": {"images": ["1", 0], "fps": "8"}},
        "3": {
            "class_type": "SaveVideo",
            "inputs": {"video": ["2", 0], "filename_prefix": "v", "format": "auto", "codec": "h264"},
        },
    }
    out = run(prompt, reg, dirs)
    assert out.ok is True, out.node_errors
    assert out.coerced["2"]["inputs"]["fps"] == 8.0
    prompt["3"]["inputs"]["codec"] = "vp9"
    err = only_error(run(prompt, reg, dirs), "3")
    assert err["details"] == "codec: 'vp9' not in ['auto', 'h264']"


def test_outcome_is_json_serialisable(reg: NodeRegistry, dirs: WorkerDirs) -> None:
    import json

    out = run({"1": empty(width=0), "2": save(["99", 0]), "3": save(["1", 0])}, reg, dirs)
    text = json.dumps(out.response_body())
    assert "value_smaller_than_min" in text and "exception_during_validation" in text
