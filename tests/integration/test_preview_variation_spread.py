"""Variations of one base image on the preview worker are as far apart in pHash as a diffusion model's: the
character flow's near-duplicate check (radius ``dedup_radius``) keeps them, and a low denoise stays close."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from reelforge.characters import CharacterSpec, build_prompts
from reelforge.comfy.client import ComfyClient
from reelforge.comfy.pool import WorkerPool
from reelforge.jobs import run_template
from reelforge.media.phash import hamming, phash_file
from reelforge.preview.server import PreviewWorker
from reelforge.settings import CharacterSettings
from reelforge.templates.template import load_all

pytestmark = pytest.mark.timeout(240)

SIZE = 384
COUNT = 12


async def test_variations_of_one_base_are_not_near_duplicates(tmp_path: Path) -> None:
    templates = load_all()
    spec = CharacterSpec(name="Mina Park", character_type="kpop_idol", age=21, gender="female")
    prompts = build_prompts(spec, variations=COUNT)
    radius = CharacterSettings().dedup_radius
    async with PreviewWorker(tmp_path / "worker") as worker, ComfyClient(worker.url) as client:
        async with WorkerPool([client]) as pool:
            base = await run_template(
                pool, templates["character_base_realistic"],
                {"prompt": prompts.base, "seed": 7, "width": SIZE, "height": SIZE, "steps": 2},
                job_id="base", dest_dir=tmp_path / "base",
            )
            base_file = base.files[0].path
            ref = (await client.upload(base_file, filename="base.png")).ref

            async def variation(i: int, prompt: str, denoise: float) -> Path:
                record = await run_template(
                    pool, templates["character_variation_realistic"],
                    {"prompt": prompt, "image": ref, "seed": 100 + i, "steps": 2, "denoise": denoise},
                    job_id=f"v{i}-{denoise}", dest_dir=tmp_path / f"v{i}-{denoise}",
                )
                return record.files[0].path

            files = [await variation(i, p.prompt, 0.55) for i, p in enumerate(prompts.variations)]
            faint = await variation(0, prompts.variations[0].prompt, 0.1)

    hashes = [phash_file(f)[0] for f in files]
    distances = [hamming(a, b) for a, b in itertools.combinations(hashes, 2)]
    close = [d for d in distances if d <= radius]
    assert not close, f"{len(close)} of {len(distances)} pairs within radius {radius}: {sorted(distances)[:8]}"
    assert sum(distances) / len(distances) > 2 * radius, sorted(distances)
    base_hash = phash_file(base_file)[0]
    # A low denoise keeps the start picture: much closer to the base than a default variation is.
    assert hamming(phash_file(faint)[0], base_hash) < min(hamming(h, base_hash) for h in hashes)
