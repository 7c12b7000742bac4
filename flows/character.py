"""Character flow: a base image, then N variations of it fanned out across the worker pool, all in the store.

Every GPU job goes through ``tasks.gpu.gpu_job``: cached by content, so running the flow again with the same
spec serves every job from Prefect's cache (``N jobs: 0 executed, N cached``) and only writes a new character
version (manifest) pointing at the same artifacts. Artifacts land under ``characters/<slug>/v<version>/<stage>/``
when first made; a later version's manifest lists the records it reused, wherever they were first stored.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from prefect import flow
from prefect.context import FlowRunContext
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from reelforge.characters.prompts import build_prompts
from reelforge.characters.spec import CharacterSpec, Gender, StyleFamily
from reelforge.comfy.collect import validate_on_pool
from reelforge.comfy.fleet import open_fleet
from reelforge.settings import Settings
from reelforge.storage import open_store
from reelforge.storage.base import ArtifactRef
from reelforge.storage.keys import character_prefix
from reelforge.storage.lineage import Manifest, character_manifest_key, run_manifest_key, write_manifest
from reelforge.templates.template import load_template
from tasks.artifacts import job_rows, publish_summary
from tasks.cancellation import cancel_scope, on_cancellation, on_crashed
from tasks.events import character_ready
from tasks.gpu import GpuJobResult, GpuJobs, JobRuntime
from tasks.progress import FlowProgress


class CharacterResult(BaseModel):
    """Where a character version's artifacts are, and how many of its jobs ran vs came from cache."""

    name: str
    slug: str
    family: StyleFamily
    version: int
    base: ArtifactRef
    variations: list[ArtifactRef]
    jobs: list[dict[str, Any]]  # one row per GPU job (tasks.artifacts.job_rows)
    executed: int
    cached: int
    gpu_seconds: float
    cost: float
    manifest_key: str
    manifest_uri: str
    run_manifest_key: str | None = None


def _flow_run_id() -> str | None:
    ctx = FlowRunContext.get()
    return str(ctx.flow_run.id) if ctx and ctx.flow_run else None


# Cancelling, crashing or timing out removes this run's prompts from every worker: in the flow body
# (cancel_scope) and, for runs from a deployment, again from the hooks in the serving/worker process.
@flow(
    name="reelforge-character", log_prints=True, on_cancellation=[on_cancellation], on_crashed=[on_crashed]
)
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
) -> CharacterResult:
    """Generate the base image of one character, then ``variations`` image-to-image variations of it.

    Outputs go to the artifact store (``REELFORGE_STORE``: a folder or ``s3://bucket/prefix``).
    """
    settings = Settings.load()
    store_settings = settings.store
    spec = CharacterSpec(
        name=name, character_type=character_type, age=age, gender=gender, custom_prompt=custom_prompt,
        style=style, seed=seed,
    )
    prompts = build_prompts(spec, variations=variations)
    store = await asyncio.to_thread(open_store, store_settings)
    version = await asyncio.to_thread(store.next_version, character_prefix(spec.slug))
    prefix = character_prefix(spec.slug, version)
    size = {"width": width, "height": height}
    # Flux (realistic) takes no negative prompt; SDXL (stylized) does.
    negative = {"negative": prompts.negative} if spec.family == "stylized" else {}
    base_template, variation_template = f"character_base_{spec.family}", f"character_variation_{spec.family}"
    progress = FlowProgress(description=f"{spec.name} v{version}: GPU jobs done")
    await progress.start()
    try:
        async with open_fleet(settings.workers) as pool, cancel_scope(pool):
            jobs = await GpuJobs.create(JobRuntime(pool, store, settings.limits, progress=progress), store_settings)
            # Fail before any GPU time is spent if a template does not fit the workers (classes, inputs, models).
            await validate_on_pool(pool, [load_template(base_template), load_template(variation_template)])
            progress.plan(1 + len(prompts.variations))
            base = await jobs.run(
                base_template,
                {"prompt": prompts.base, "seed": seed, **negative, **size},
                prefix=f"{prefix}base",
                job_id=f"{spec.slug}-v{version}-base",
            )
            base_image = base.refs[0]
            results: list[GpuJobResult] = list(
                await asyncio.gather(
                    *(
                        jobs.run(
                            variation_template,
                            {"prompt": v.prompt, "seed": seed + 1 + i, **negative},
                            prefix=f"{prefix}variations",
                            job_id=f"{spec.slug}-v{version}-var{i:02d}",
                            inputs={"image": base_image},
                        )
                        for i, v in enumerate(prompts.variations)
                    )
                )
            )
    finally:
        await progress.close()

    all_jobs = [base, *results]
    records = [record for job in all_jobs for record in job.outputs]
    flow_run_id = _flow_run_id()
    manifest_ref = await asyncio.to_thread(
        write_manifest,
        store,
        Manifest(subject=spec.slug, kind="character", artifacts=records),
        character_manifest_key(spec.slug, version),
    )
    run_key = None
    if flow_run_id:
        run_key = run_manifest_key(flow_run_id)
        await asyncio.to_thread(
            write_manifest, store, Manifest(subject=flow_run_id, kind="run", artifacts=records), run_key
        )
    await publish_summary(all_jobs, store, key=f"character-{spec.slug}", title=f"{spec.name} v{version}")
    character_ready(
        spec.slug, version, manifest_ref, name=spec.name, executed=jobs.executed, cached=jobs.cached
    )
    print(f"{len(all_jobs)} jobs: {jobs.executed} executed, {jobs.cached} cached")
    print(f"{spec.name} v{version}: manifest {manifest_ref.uri}")
    return CharacterResult(
        name=spec.name,
        slug=spec.slug,
        family=spec.family,
        version=version,
        base=base_image,
        variations=[r.refs[0] for r in results],
        jobs=job_rows(all_jobs),
        executed=jobs.executed,
        cached=jobs.cached,
        gpu_seconds=sum(j.gpu_seconds for j in all_jobs if j.executed),
        cost=sum(j.cost for j in all_jobs if j.executed),
        manifest_key=manifest_ref.key,
        manifest_uri=manifest_ref.uri,
        run_manifest_key=run_key,
    )


def print_summary(result: CharacterResult, console: Console) -> None:
    table = Table(title=f"{result.name} v{result.version} ({result.family})")
    for column in ("job", "template", "worker", "GPU s", "cost", "status", "artifact"):
        table.add_column(column)
    for row in result.jobs:
        table.add_row(
            str(row["job"]), str(row["template"]), str(row["worker"]), f"{row['gpu_seconds']:.2f}",
            f"{row['cost']:.4f}", str(row["status"]), str(row["outputs"]),
        )
    console.print(table)
    total = result.executed + result.cached
    console.print(
        f"{total} jobs: {result.executed} executed, {result.cached} cached"
        + (" (every GPU job came from the cache)" if total and result.cached == total else "")
    )
    console.print(f"{result.gpu_seconds:.2f} GPU-seconds spent in this run; manifest: {result.manifest_uri}")


def main() -> int:
    result = asyncio.run(character_flow())
    print_summary(result, Console())
    return 0


if __name__ == "__main__":
    sys.exit(main())
