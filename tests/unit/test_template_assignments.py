"""``--set`` / ``--input`` of ``reelforge run template`` typed by the manifest, every problem named at once."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from reelforge.errors import InputRejected
from reelforge.templates import load_template
from reelforge.templates.assignments import parse_assignments


def test_values_are_typed_by_the_manifest(tmp_path: Path) -> None:
    template = load_template("keyframe_pose")  # strings, ints, floats, choices, an image
    image = tmp_path / "pose.png"
    Image.new("RGB", (8, 8)).save(image)
    params, files = parse_assignments(
        template, ["prompt=a=b c", "seed=12", "pose_strength=0.5", "width=512", "lora=mina.safetensors"],
        [f"pose={image}", f"reference={image}"],
    )
    assert params == {"prompt": "a=b c", "seed": 12, "pose_strength": 0.5, "width": 512, "lora": "mina.safetensors"}
    assert files == {"pose": image, "reference": image}


def test_bool_and_choice() -> None:
    from reelforge.templates.assignments import typed
    from reelforge.templates.manifest import Parameter

    flag = Parameter(name="f", type="bool", node="n", input="i")
    assert [typed(flag, v) for v in ("true", "No", "1", "off")] == [True, False, True, False]
    with pytest.raises(ValueError, match="expected true or false"):
        typed(flag, "maybe")
    choice = Parameter(name="c", type="choice", node="n", input="i", choices=["euler", 2, True])
    assert (typed(choice, "euler"), typed(choice, "2"), typed(choice, "true")) == ("euler", 2, True)
    with pytest.raises(ValueError, match="not one of"):
        typed(choice, "heun")


def test_every_problem_names_its_parameter(tmp_path: Path) -> None:
    template = load_template("keyframe_pose")
    missing = tmp_path / "missing.png"
    with pytest.raises(InputRejected) as caught:
        parse_assignments(
            template, ["seed=-1", "seed=2", "nope=1", "pose_strength=nan"], [f"pose={missing}", "oops", "seed=a.png"]
        )
    lines = str(caught.value).split("; ")
    assert "--set seed=-1: parameter 'seed': value -1 is below the minimum 0" in lines
    assert "--set seed=2: parameter 'seed' is given twice" in lines
    assert "--set nope=1: template 'keyframe_pose' has no parameter 'nope' (parameters: prompt, pose," in lines[2]
    assert "--set pose_strength=nan: parameter 'pose_strength' (float): expected a finite number, got 'nan'" in lines
    assert "--input seed=a.png: parameter 'seed' is given twice" in lines
    assert f"--input pose={missing}: the image file for parameter 'pose' does not exist" in lines
    assert "--input 'oops': expected PARAM=FILE" in lines
    assert "parameter 'prompt' of template 'keyframe_pose' is required: --set prompt=VALUE" in lines


def test_a_file_parameter_is_not_set_by_value() -> None:
    with pytest.raises(InputRejected, match=r"--set pose=x.png: parameter 'pose' takes an image file: --input pose="):
        parse_assignments(load_template("keyframe_pose"), ["prompt=p", "pose=x.png"], [])
