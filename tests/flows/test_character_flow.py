from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from flows.character import character_flow


async def test_character_flow_base_then_variations_across_two_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REELFORGE_PREVIEW_LATENCY", "fixed:0.3")
    monkeypatch.setenv("REELFORGE_PREVIEW_WORKERS", "2")
    result = await character_flow(
        name="Test Person", character_type="kpop_idol", variations=4, width=320, height=256,
        out_dir=str(tmp_path / "out"),
    )
    assert result.family == "realistic"
    assert result.folder == tmp_path / "out" / "test-person"
    assert result.base.template == "character_base_realistic"
    assert [r.template for r in result.variations] == ["character_variation_realistic"] * 4
    assert len({r.worker for r in result.variations}) == 2, "variations should fan out over both workers"
    files = [result.base.files[0], *(r.files[0] for r in result.variations)]
    assert len(set(files)) == 5
    pixels = set()
    for path in files:
        assert path.is_file() and path.is_relative_to(result.folder)
        with Image.open(path) as image:
            assert image.size == (320, 256)  # variations keep the base image's size
            pixels.add(image.convert("RGB").tobytes())
    assert len(pixels) == 5, "every variation differs from the base and from each other"


async def test_character_flow_stylized_family_uses_sdxl_templates(tmp_path: Path) -> None:
    result = await character_flow(
        name="Bolt", character_type="mascot", variations=1, width=512, height=512, out_dir=str(tmp_path)
    )
    assert result.family == "stylized"
    assert result.base.template == "character_base_stylized"
    assert result.variations[0].template == "character_variation_stylized"
