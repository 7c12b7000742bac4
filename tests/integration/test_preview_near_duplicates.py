"""The preview worker's near_duplicate fault: a saved image replaced by an earlier output, slightly altered."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from helpers import get_json, post_prompt
from PIL import Image, ImageDraw

from reelforge.media.phash import hamming, phash_file
from reelforge.preview.faults import NearDuplicate, parse_faults
from reelforge.preview.server import PreviewWorker

MakeWorker = Callable[..., Awaitable[PreviewWorker]]  # the ``make_worker`` fixture of conftest.py


def picture(path: Path, seed: int, size: tuple[int, int] = (320, 256)) -> Path:
    """A textured picture (so its pHash means something; a flat EmptyImage hashes like every other flat one)."""
    rng = np.random.default_rng(seed)
    pixels = rng.normal(128, 40, (size[1] // 16, size[0] // 16, 3)).clip(0, 255).astype(np.uint8)
    image = Image.fromarray(pixels).resize(size, Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        xs, ys = sorted(rng.integers(0, size[0], 2)), sorted(rng.integers(0, size[1], 2))
        draw.ellipse((xs[0], ys[0], xs[1], ys[1]), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    image.save(path)
    return path


def load_and_save(image: str, prefix: str) -> dict[str, Any]:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": image}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
    }


async def run(http: aiohttp.ClientSession, worker: PreviewWorker, graph: dict[str, Any]) -> Path:
    """Submit, wait for the history entry, return the saved file."""
    status, body = await post_prompt(http, worker.url, {"prompt": graph})
    assert status == 200, body
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        history = await get_json(http, f"{worker.url}/history/{body['prompt_id']}")
        if history:
            entry = history[body["prompt_id"]]
            assert entry["status"]["completed"], entry["status"]
            [image] = entry["outputs"]["2"]["images"]
            return worker.dirs.output / image["subfolder"] / image["filename"]
        await asyncio.sleep(0.02)
    raise AssertionError("prompt did not finish")


def test_fault_grammar() -> None:
    assert parse_faults("near_duplicate=0.3,seed=4").near_duplicate == 0.3
    assert parse_faults("").near_duplicate == 0.0
    for bad in ("near_duplicate=1.5", "near_duplicate=-0.1", "near_duplicate", "near_duplicate=x"):
        with pytest.raises(ValueError):
            parse_faults(bad)


async def test_armed_near_duplicate_replaces_the_next_saved_image(
    make_worker: MakeWorker, http: aiohttp.ClientSession
) -> None:
    worker = await make_worker()
    inputs = {name: picture(worker.dirs.input / f"{name}.png", seed) for seed, name in enumerate("abc")}
    worker.faults.near_duplicates(1)  # waits: the worker has no earlier output yet
    first = await run(http, worker, load_and_save("a.png", "first"))
    assert hamming(phash_file(first)[0], phash_file(inputs["a"])[0]) == 0  # its own image
    assert worker.faults.near_duplicates_made == []

    second = await run(http, worker, load_and_save("b.png", "second"))
    [made] = worker.faults.near_duplicates_made
    assert made == NearDuplicate(path=second, source=first, seed=made.seed)
    first_hash, second_hash = phash_file(first)[0], phash_file(second)[0]
    assert hamming(first_hash, second_hash) <= 10  # the regeneration path's radius; in practice 0-2
    assert hamming(second_hash, phash_file(inputs["b"])[0]) > 12  # not its own picture
    assert second.read_bytes() != first.read_bytes()
    with Image.open(second) as image:
        assert image.size == (320, 256)
        assert json.loads(image.info["prompt"])["1"]["inputs"]["image"] == "b.png"  # its own prompt's metadata

    third = await run(http, worker, load_and_save("c.png", "third"))  # the armed one is used up
    assert hamming(phash_file(third)[0], phash_file(inputs["c"])[0]) == 0
    assert len(worker.faults.near_duplicates_made) == 1


async def test_spec_rate_and_a_different_size(make_worker: MakeWorker, http: aiohttp.ClientSession) -> None:
    worker = await make_worker(faults="near_duplicate=1,seed=3")
    picture(worker.dirs.input / "a.png", 10)
    picture(worker.dirs.input / "b.png", 11, size=(400, 400))
    picture(worker.dirs.input / "c.png", 12)
    first = await run(http, worker, load_and_save("a.png", "x"))
    second = await run(http, worker, load_and_save("b.png", "x"))
    third = await run(http, worker, load_and_save("c.png", "x"))
    assert [(m.path, m.source) for m in worker.faults.near_duplicates_made] == [(second, first), (third, first)]
    for copy in (second, third):
        assert hamming(phash_file(copy)[0], phash_file(first)[0]) <= 10
        assert copy.read_bytes() != first.read_bytes()
    assert phash_file(second)[1:] == (400, 400)  # resized to what its own prompt made
    worker.faults.clear()
    fourth = await run(http, worker, load_and_save("c.png", "y"))
    assert hamming(phash_file(fourth)[0], phash_file(worker.dirs.input / "c.png")[0]) == 0
