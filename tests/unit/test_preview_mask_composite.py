"""MaskComposite on the preview worker: ComfyUI's ``combine`` (source placed at x, y on a copy of the destination,
clipped to it, combined inside that rectangle only, clamped to 0..1), as keyframe_two_shot's half masks use it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from reelforge.preview.registry import ExecContext, NodeRegistry, WorkerDirs, default_registry


@pytest.fixture(scope="module")
def reg() -> NodeRegistry:
    return default_registry()


def call(reg: NodeRegistry, tmp_path: Path, name: str, **inputs: Any) -> np.ndarray:
    cls = reg.get(name)
    assert cls is not None, name
    ctx = ExecContext(prompt_id="p", node_id="1", prompt={}, extra_pnginfo=None, dirs=WorkerDirs(tmp_path))
    (out,) = cls.run(ctx, inputs).outputs
    return np.asarray(out)


def test_half_masks_from_solid_masks(reg: NodeRegistry, tmp_path: Path) -> None:
    canvas = call(reg, tmp_path, "SolidMask", value=0.0, width=8, height=4)
    half = call(reg, tmp_path, "SolidMask", value=1.0, width=4, height=4)
    left = call(reg, tmp_path, "MaskComposite", destination=canvas, source=half, x=0, y=0, operation="add")
    right = call(reg, tmp_path, "MaskComposite", destination=canvas, source=half, x=4, y=0, operation="add")
    assert left.shape == right.shape == (1, 4, 8) and left.dtype == np.float32
    assert (left[..., :4] == 1).all() and (left[..., 4:] == 0).all()
    assert (right[..., :4] == 0).all() and (right[..., 4:] == 1).all()
    assert (canvas == 0).all()  # the destination is copied, never changed


def test_source_is_clipped_and_only_its_rectangle_changes(reg: NodeRegistry, tmp_path: Path) -> None:
    destination = np.full((1, 3, 5), 0.5, np.float32)
    source = np.full((1, 2, 4), 0.75, np.float32)
    out = call(reg, tmp_path, "MaskComposite", destination=destination, source=source, x=3, y=2, operation="add")
    expected = destination.copy()
    expected[:, 2:3, 3:5] = 1.0  # 0.5 + 0.75 clamped; the source's overhang is dropped
    assert np.array_equal(out, expected)
    sub = call(reg, tmp_path, "MaskComposite", destination=destination, source=source, x=0, y=0, operation="subtract")
    assert np.allclose(sub[:, :2, :4], 0.0) and np.allclose(sub[:, 2:, :], 0.5) and np.allclose(sub[:, :, 4:], 0.5)
    mul = call(reg, tmp_path, "MaskComposite", destination=destination, source=source, x=1, y=1, operation="multiply")
    assert np.allclose(mul[:, 1:3, 1:5], 0.375) and mul[0, 0, 0] == 0.5


@pytest.mark.parametrize(("operation", "expected"), [("and", [0, 0, 1, 0]), ("or", [0, 1, 1, 1]),
                                                     ("xor", [0, 1, 0, 1])])
def test_logical_operations_round_first(reg: NodeRegistry, tmp_path: Path, operation: str,
                                        expected: list[int]) -> None:
    destination = np.array([[[0.2, 0.4, 0.9, 0.7]]], np.float32)
    source = np.array([[[0.1, 0.8, 0.6, 0.3]]], np.float32)  # rounded: 0 1 1 0 (the destination: 0 0 1 1)
    out = call(reg, tmp_path, "MaskComposite", destination=destination, source=source, x=0, y=0, operation=operation)
    assert out.tolist() == [[[float(v) for v in expected]]]
