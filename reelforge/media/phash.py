"""Perceptual hashes of images: the 64-bit pHash (imagehash) of a file, and the stage function around it.

``phash_stage`` is a CPU stage's engine call (tasks/stages.py runs it in a child process): it reads one input
image and returns its hash as the stage's record, storing no file.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import imagehash
from PIL import Image

from reelforge.records import StageOutput

__all__ = ["phash_file", "phash_stage"]


def phash_file(path: Path) -> tuple[str, int, int]:
    """``(pHash as 16 hex digits, width, height)`` of an image file."""
    with Image.open(path) as image:
        image.load()
        return str(imagehash.phash(image)), image.width, image.height


def phash_stage(inputs: Mapping[str, Path], params: Mapping[str, Any], out_dir: Path) -> StageOutput:
    """Stage function: the pHash of ``inputs["image"]`` as ``{"phash", "width", "height"}``."""
    digest, width, height = phash_file(inputs["image"])
    return StageOutput(record={"phash": digest, "width": width, "height": height})
