"""The CPU stages: each one line on the stage mechanism (its engine call, its version, its kind).

Bump a stage's ``version`` when its engine function changes what it returns for the same inputs: its cached
results are then computed again.
"""

from __future__ import annotations

from reelforge.media import phash_stage
from reelforge.training import dataset_stage
from tasks.stage import Stage

__all__ = ["DATASET", "PHASH"]

PHASH = Stage.cpu("phash", version="1", fn=phash_stage, process=True)
"""64-bit perceptual hash of one stored image (``inputs["image"]``): record ``{"phash", "width", "height"}``."""

DATASET = Stage.cpu("dataset", version="1", fn=dataset_stage)
"""A training set (deterministic zip of images + captions) from ``inputs`` (in name order) and
``params {"trigger", "captions"}``: record ``{"images", "trigger", "index"}``."""
