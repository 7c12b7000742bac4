from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from flows.demo import demo_flow
from reelforge.demo import demo_color


async def test_demo_flow_runs_jobs_across_two_preview_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REELFORGE_PREVIEW_LATENCY", "fixed:0.2")
    monkeypatch.setenv("REELFORGE_PREVIEW_WORKERS", "2")
    records = await demo_flow(jobs=4, out_dir=str(tmp_path / "out"))

    assert sorted(r.job_id for r in records) == [f"demo-{i:03d}" for i in range(4)]
    assert len({r.worker for r in records}) == 2, "jobs should spread over both workers"
    for index, record in enumerate(sorted(records, key=lambda r: r.job_id)):
        assert len(record.files) == 1 and record.files[0].is_file()
        assert record.files[0].parent == tmp_path / "out"
        with Image.open(record.files[0]) as image:
            assert image.size == (512, 512)
            color = demo_color(index)
            expected = tuple(255 - ((color >> s) & 0xFF) for s in (16, 8, 0))
            pixel = image.convert("RGB").getpixel((10, 10))
            # ComfyUI truncates (not rounds) floats to uint8, so an inverted channel can be one lower.
            assert isinstance(pixel, tuple)
            assert all(e - 1 <= p <= e for p, e in zip(pixel, expected, strict=True)), (pixel, expected)
        assert not record.cached
        assert record.gpu_seconds > 0.1
