"""A finished prompt's saved models (SaveLoRANode lists nothing in history: found through /models) are asked
for again after a 500, never run again; when the worker keeps failing, OutputFetchFailed carries the result so
the stage's retry resumes the download (the soak saw LoRA trainings run twice before this)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reelforge.comfy.client import ComfyClient
from reelforge.comfy.datasets import upload_captioned_folder
from reelforge.comfy.pool import WorkerPool
from reelforge.jobs import OutputFetchFailed, fetch_outputs, run_template
from reelforge.preview.server import PreviewWorker
from reelforge.templates.template import load_template


async def test_saved_lora_listing_is_retried_not_the_training(tmp_path: Path) -> None:
    template = load_template("lora_train")
    async with PreviewWorker(tmp_path / "w") as worker, ComfyClient(worker.url) as client:
        rng = np.random.default_rng(3)
        items = []
        for i in range(3):
            path = tmp_path / f"set{i}.png"
            Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
            items.append((path, f"rfperson, pose {i}"))
        dataset = await upload_captioned_folder(client, items)
        async with WorkerPool([client]) as pool:
            params = {"folder": dataset, "steps": 2, "width": 64, "height": 64}
            run = await run_template(pool, template, params, job_id="train", dest_dir=tmp_path / "first")
            assert any(f.path.suffix == ".safetensors" for f in run.files)
            executed = worker.stats.prompts_executed
            worker.faults.http500_next(2)  # the next /models/loras answers 500 twice
            again = await fetch_outputs(pool, run.result, tmp_path / "again", backoff_s=0.01)
            assert [f.path.name for f in again] == [f.path.name for f in run.files]
            worker.faults.set_http500_rate(1.0)
            with pytest.raises(OutputFetchFailed) as failed:
                await fetch_outputs(pool, run.result, tmp_path / "third", retries=2, backoff_s=0.01)
            assert failed.value.result.prompt_id == run.result.prompt_id  # the retry resumes, not re-runs
            worker.faults.set_http500_rate(0.0)
            assert worker.stats.prompts_executed == executed
