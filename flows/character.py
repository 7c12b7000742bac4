"""Character flow (first slice): a base image, then N variations of it fanned out across the worker pool."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from prefect import flow, get_run_logger
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from reelforge.characters.prompts import build_prompts
from reelforge.characters.spec import CharacterSpec, Gender, StyleFamily
from reelforge.comfy.collect import JobRecord, validate_on_pool
from reelforge.comfy.fleet import open_fleet
from reelforge.settings import WorkerSettings
from reelforge.templates.template import load_template
from tasks.comfy import run_template_job


class CharacterImages(BaseModel):
    """Where a character's images are and what they cost."""

    name: str
    slug: str
    family: StyleFamily
    folder: Path
    base: JobRecord
    variations: list[JobRecord]


@flow(name="reelforge-character", log_prints=True)
async def character_flow(
    name: str = "Mina Park",
    character_type: str = "kpop_idol",
    age: int | None = 22,
    gender: Gender | None = "female",
    custom_prompt: str = "",
    style: StyleFamily | None = None,
    variations: int = 4,
    seed: int = 0,
    width: int = 1024,
    height: int = 1024,
    out_dir: str = "character-output",
) -> CharacterImages:
    """Generate the base image of one character, then ``variations`` image-to-image variations of it."""
    spec = CharacterSpec(
        name=name, character_type=character_type, age=age, gender=gender, custom_prompt=custom_prompt,
        style=style, seed=seed,
    )
    prompts = build_prompts(spec, variations=variations)
    folder = await asyncio.to_thread(lambda: (Path(out_dir) / spec.slug).resolve())
    size = {"width": width, "height": height}
    # Flux (realistic) takes no negative prompt; SDXL (stylized) does.
    negative = {"negative": prompts.negative} if spec.family == "stylized" else {}
    base_template, variation_template = f"character_base_{spec.family}", f"character_variation_{spec.family}"
    async with open_fleet(WorkerSettings()) as pool:
        # Fail before any GPU time is spent if a template does not fit the workers (classes, inputs, models).
        await validate_on_pool(pool, [load_template(base_template), load_template(variation_template)])
        base = await run_template_job(
            pool,
            base_template,
            {"prompt": prompts.base, "seed": seed, **negative, **size},
            f"{spec.slug}-base",
            folder / "base",
        )
        base_image = base.files[0]
        records = await asyncio.gather(
            *(
                run_template_job(
                    pool,
                    variation_template,
                    {"prompt": v.prompt, "seed": seed + 1 + i, **negative},
                    f"{spec.slug}-var{i:02d}",
                    folder / "variations",
                    {"image": base_image},
                )
                for i, v in enumerate(prompts.variations)
            )
        )
    get_run_logger().info("%s: base + %d variations in %s", spec.name, len(records), folder)
    return CharacterImages(
        name=spec.name, slug=spec.slug, family=spec.family, folder=folder, base=base, variations=list(records)
    )


def print_summary(result: CharacterImages, console: Console) -> None:
    table = Table(title=f"{result.name} ({result.family})")
    for column in ("job", "template", "worker", "GPU s", "wall s", "file"):
        table.add_column(column)
    for r in [result.base, *result.variations]:
        name = ", ".join(f.name for f in r.files)
        table.add_row(r.job_id, r.template or "", r.worker, f"{r.gpu_seconds:.2f}", f"{r.wall_s:.2f}", name)
    console.print(table)
    total = result.base.gpu_seconds + sum(r.gpu_seconds for r in result.variations)
    console.print(f"{1 + len(result.variations)} jobs, {total:.2f} GPU-seconds in all.")
    console.print(f"Images are in {result.folder}")


def main() -> int:
    result = asyncio.run(character_flow())
    print_summary(result, Console())
    return 0


if __name__ == "__main__":
    sys.exit(main())
