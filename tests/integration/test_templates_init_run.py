"""The model-family graphs of tests/fixtures/workflows go through ``templates init``, validate against a preview
worker that knows the extended lock, run with their outputs checked, and the files they wrote (PNG, mp4, WebP,
MP3) give the same template again through ``templates init``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from reelforge.comfy.client import ComfyClient
from reelforge.comfy.pool import WorkerPool
from reelforge.jobs import run_template
from reelforge.media.probe import probe
from reelforge.preview.server import PreviewWorker
from reelforge.templates import load_lock, load_template, validate_on_worker
from reelforge.templates.lock import DEFAULT_LOCK
from reelforge.templates.scaffold import init_template

pytestmark = pytest.mark.timeout(120)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "workflows"
SMALL: dict[str, dict[str, Any]] = {
    "flux_custom_sampler": {"width": 128, "height": 96, "steps": 2, "batch_size": 1, "seed": 9},
    "sd35_triple_clip": {"width": 128, "height": 96, "steps": 2},
    "sdxl_controlnet": {"width": 128, "height": 96, "steps": 2},
    "wan_i2v": {"width": 96, "height": 64, "length": 9, "steps": 2},
    "stable_audio": {"seconds": 2.0, "steps": 2},
}


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path]:
    folder = tmp_path / "workflows"
    folder.mkdir()
    lock = tmp_path / "lock.yaml"
    shutil.copy(DEFAULT_LOCK, lock)
    return folder, lock


def _upload_source(tmp_path: Path) -> Path:
    path = tmp_path / "start.png"
    Image.new("RGB", (96, 64), (200, 60, 40)).save(path)
    return path


def _check(kind: str, title: str, path: Path, params: dict[str, Any]) -> None:
    if kind == "image" and path.suffix == ".png":
        with Image.open(path) as image:
            if title in ("Save Hint",):
                assert image.size == (96, 64)  # the uploaded control image
            else:
                assert image.size == (params["width"], params["height"])
    elif kind == "image":  # animated WebP of the video
        with Image.open(path) as image:
            assert image.size == (params["width"], params["height"]) and image.n_frames == params["length"]
    elif kind == "video":
        (video,) = probe(path).video
        assert video.frame_count == params["length"] and (video.width, video.height) == (96, 64)
    elif kind == "audio":  # the preview is of the 1 s trim
        seconds = 1.0 if title == "Preview Audio" else params["seconds"]
        assert probe(path).duration_s == pytest.approx(seconds, abs=0.15)


@pytest.mark.parametrize("family", sorted(SMALL))
async def test_family_inits_validates_runs_and_inits_again_from_its_output(
    family: str, setup: tuple[Path, Path], tmp_path: Path
) -> None:
    folder, lock = setup
    init_template(FIXTURES / f"{family}.json", family, folder=folder, lock_path=lock)
    template = load_template(family, folder=folder)
    params = dict(SMALL[family])
    async with PreviewWorker(tmp_path / "worker", lock=load_lock(lock)) as worker, ComfyClient(worker.url) as client:
        if "image" in template.parameters:
            source = _upload_source(tmp_path)
            params["image"] = (await client.upload(source, filename=source.name)).ref
        await validate_on_worker(template, client)  # the template as written: required inputs unchecked
        await validate_on_worker(template, client, params)
        async with WorkerPool([client]) as pool:
            run = await run_template(pool, template, params, job_id=family, dest_dir=tmp_path / "out")
    by_node = {f.node_id: f.path for f in run.files}
    for output in template.outputs:
        assert output.node_id in by_node, f"{family}: nothing from {output.title}"
        _check(output.kind, output.title, by_node[output.node_id], params)
    # A file the worker wrote gives the same graph back (is_changed removed), with the bound values as defaults.
    bound = template.bind(params)
    for output in template.outputs:
        path = by_node[output.node_id]
        again = init_template(path, f"{family}_again", folder=folder, lock_path=lock, force=True)
        embedded = json.loads(again.graph_path.read_text())
        for node_id, node in embedded.items():  # the pool stamps each job's prefixes with its prompt id
            prefix = node["inputs"].get("filename_prefix")
            if isinstance(prefix, str):
                assert prefix.startswith(f"{bound[node_id]['inputs']['filename_prefix']}_")
                node["inputs"]["filename_prefix"] = bound[node_id]["inputs"]["filename_prefix"]
        assert embedded == bound, f"{family}: {path.name}"
        defaults = again.template.defaults
        for name, value in params.items():
            if name in defaults:
                assert defaults[name] == value
        assert again.template.kind == template.kind
