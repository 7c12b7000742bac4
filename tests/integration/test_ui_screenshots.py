"""The Prefect UI in a real browser: bench/ui_screenshots.py's ``capture`` against a real ``prefect server`` and
a real character run; every screenshot exists and shows a page, the gallery's thumbnails decoded in the page.

Opt-in (a few minutes, a server, Chromium): ``pytest -m ui`` or ``REELFORGE_UI_TESTS=1``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from PIL import Image

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

from ui_screenshots import SHOTS, capture, chromium_binary  # noqa: E402

pytestmark = [pytest.mark.ui, pytest.mark.timeout(900)]


@pytest.fixture(autouse=True)
def _opted_in(request: pytest.FixtureRequest) -> None:
    if os.environ.get("REELFORGE_UI_TESTS") != "1" and "ui" not in (request.config.option.markexpr or ""):
        pytest.skip("UI screenshots are opt-in: pytest -m ui, or REELFORGE_UI_TESTS=1")
    if chromium_binary() is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium)")


def not_blank(path: Path) -> tuple[int, float]:
    """(distinct colours, share of the most common colour) of a PNG, on a 4x downscale."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        small = image.convert("RGB").reduce(4)
    colours = small.getcolors(maxcolors=small.width * small.height) or []
    top = max(count for count, _ in colours)
    return len(colours), top / (small.width * small.height)


def test_ui_screenshots(tmp_path: Path) -> None:
    found = capture(tmp_path / "shots", tmp_path / "work", variations=2, size=256)

    assert found.result["state"] == "Completed"
    assert set(found.shots) == set(SHOTS)
    for name, path in found.shots.items():
        assert path.exists() and path.stat().st_size > 10_000, name
        colours, top = not_blank(path)
        assert colours > 50 and top < 0.97, (name, colours, top)  # a blank page: 1 colour, ~1.0
    # The progress was photographed while the run was going, part way through.
    assert found.state_at_shot == "RUNNING"
    assert found.progress_at_shot is not None and 0 < found.progress_at_shot < 100
    # base + 2 variations + the LoRA test images at least; each decoded in the page before the shot.
    assert found.gallery_images >= 3
    with Image.open(found.shots["gallery"]) as gallery:
        colours, _ = not_blank(found.shots["gallery"])
        assert gallery.height >= 1000 and colours > 500  # pictures, not only text on a dark page
