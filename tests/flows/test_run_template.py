"""``reelforge run template`` as a user runs it (a subprocess against this session's Prefect test server and a
preview worker outside it): a template made by ``templates init`` runs as a cached stage, its outputs are stored
with lineage, and bad ``--set`` / ``--input`` values are refused naming the parameter (exit 2, nothing queued)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from test_cli_run import REELFORGE, cli_env

from reelforge.preview.server import PreviewWorker, PreviewWorkerThread
from reelforge.templates import load_lock
from reelforge.templates.lock import DEFAULT_LOCK
from reelforge.templates.scaffold import init_template

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "workflows"
pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``sdxl_controlnet`` (an input image, two outputs) made by init, with its lock."""
    root = tmp_path_factory.mktemp("templates")
    folder = root / "workflows"
    folder.mkdir()
    shutil.copy(DEFAULT_LOCK, root / "lock.yaml")
    init_template(FIXTURES / "sdxl_controlnet.json", "sdxl_cn", folder=folder, lock_path=root / "lock.yaml")
    return root


@pytest.fixture(scope="module")
def worker(templates: Path) -> Iterator[PreviewWorkerThread]:
    thread = PreviewWorkerThread(PreviewWorker(name="tpl", lock=load_lock(templates / "lock.yaml")))
    thread.start()
    yield thread
    thread.stop()


def run_cli(args: list[str], tmp_path: Path, worker: PreviewWorkerThread) -> subprocess.CompletedProcess[str]:
    env = cli_env(tmp_path, worker) | {"COLUMNS": "200"}
    return subprocess.run([REELFORGE, "run", "template", *args], env=env, capture_output=True, text=True, timeout=180)


def _hint(path: Path) -> Path:
    Image.new("RGB", (80, 48), (30, 120, 200)).save(path)
    return path


def test_runs_as_a_cached_stage_with_outputs_and_lineage(
    templates: Path, worker: PreviewWorkerThread, tmp_path: Path
) -> None:
    hint = _hint(tmp_path / "hint.png")
    args = ["sdxl_cn", "--folder", str(templates / "workflows"), "--set", "prompt=a lighthouse", "--set", "seed=77",
            "--set", "width=128", "--set", "height=96", "--set", "steps=2", "--input", f"image={hint}"]
    first = run_cli([*args, "--json"], tmp_path, worker)
    assert first.returncode == 0, first.stderr[-3000:]
    data: dict[str, Any] = json.loads(first.stdout)
    assert (data["state"], data["executed"], data["cached"]) == ("Completed", 1, 0)
    result = data["result"]
    assert result["params"] == {"prompt": "a lighthouse", "seed": 77, "width": 128, "height": 96, "steps": 2}
    outputs = {o["node"]: o for o in result["outputs"]}
    assert set(outputs) == {"Save Image", "Save Hint"}
    with Image.open(outputs["Save Image"]["uri"].removeprefix("file://")) as image:
        assert image.size == (128, 96)
        embedded = json.loads(image.text["prompt"])
    assert embedded["9"]["inputs"]["seed"] == 77 and embedded["2"]["inputs"]["text_g"] == "a lighthouse"
    with Image.open(outputs["Save Hint"]["uri"].removeprefix("file://")) as image:
        assert image.size == (80, 48)  # the uploaded control image went through Canny
    assert all(o["key"].startswith("templates/sdxl_cn/outputs/") for o in outputs.values())
    stored_input = result["inputs"]["image"]
    assert stored_input["key"].startswith("templates/sdxl_cn/inputs/")
    manifest = json.loads(Path(data["manifest_uri"].removeprefix("file://")).read_text())
    (stage,) = manifest["stages"]
    assert stage["stage"] == "sdxl_cn" and stage["params"]["seed"] == 77
    assert stage["inputs"]["image"]["sha256"] == stored_input["sha256"]  # lineage: which file made it
    assert {o["key"] for o in stage["outputs"]} == {o["key"] for o in outputs.values()}
    assert stage["job"]["worker"]
    again = run_cli(args, tmp_path, worker)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "1 stage: cached" in again.stdout
    assert outputs["Save Image"]["uri"] in again.stdout.replace("\n", "")  # the same stored file, printed


def test_bad_sets_and_inputs_name_the_parameter(templates: Path, worker: PreviewWorkerThread, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not an image")
    args = ["sdxl_cn", "--folder", str(templates / "workflows"), "--set", "colour=red", "--set", "steps=zero",
            "--set", "width=99999", "--set", "seed", "--input", f"image={tmp_path / 'notes.txt'}",
            "--input", f"cfg={tmp_path / 'notes.txt'}"]
    bad = run_cli(args, tmp_path, worker)
    assert bad.returncode == 2, bad.stderr[-3000:]
    err = " ".join(bad.stderr.split())
    assert "--set colour=red: template 'sdxl_cn' has no parameter 'colour' (parameters: prompt, negative," in err
    assert "--set steps=zero: parameter 'steps' (int): expected an int, got 'zero'" in err
    assert "--set width=99999: parameter 'width': value 99999 is above the maximum 16384" in err
    assert "--set 'seed': expected PARAM=VALUE" in err
    assert f"--input image={tmp_path / 'notes.txt'}: the image file for parameter 'image' is not an image" in err
    assert "--input cfg=" in err and "parameter 'cfg' is a float, not a file: --set cfg=VALUE" in err
    missing = run_cli(["sdxl_cn", "--folder", str(templates / "workflows")], tmp_path, worker)
    assert missing.returncode == 2
    assert "parameter 'image' of template 'sdxl_cn' is required: --input image=FILE" in " ".join(missing.stderr.split())
    unknown = run_cli(["no_such_template", "--folder", str(templates / "workflows")], tmp_path, worker)
    assert unknown.returncode == 2
    assert "template 'no_such_template' cannot be loaded" in " ".join(unknown.stderr.split())
    assert not (tmp_path / "store" / "templates").exists()  # nothing stored, nothing ran
