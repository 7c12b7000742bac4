"""Character flow: a base image, N variations of it fanned out across the worker pool, their perceptual hashes.

Every step is a stage (tasks/stage.py): cached by content, so running the flow again with the same spec serves
every stage from Prefect's cache (``N stages: 0 executed, N cached``) and only writes a new character version
(a manifest) pointing at the same artifacts. The version number is reserved atomically when the run starts,
so two runs of one character become v1 and v2. Artifacts land under
``characters/<slug>/v<version>/<stage>/`` when first made; a later version's manifest lists the records it
reused, wherever they were first stored.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated, Any

from prefect import flow
from pydantic import BaseModel, Field
from rich.console import Console
from rich.table import Table

from reelforge.characters import CharacterSpec, Gender, StyleFamily, build_prompts
from reelforge.engine import open_engine
from reelforge.jobs import validate_on_pool
from reelforge.liveness import Holder
from reelforge.settings import Settings
from reelforge.storage import (
    ArtifactRef,
    Manifest,
    StageRecord,
    character_manifest_key,
    character_prefix,
    character_stage_prefix,
    run_manifest_key,
    write_manifest,
)
from tasks.artifacts import job_rows, publish_summary
from tasks.cancellation import cancel_scope, on_cancellation, on_crashed
from tasks.context import current_flow_run_id
from tasks.events import character_ready
from tasks.gpu import template_named
from tasks.progress import FlowProgress
from tasks.stage import Stage, StageRunner
from tasks.stages import PHASH

__all__ = ["CharacterResult", "character_flow", "print_summary"]


class CharacterResult(BaseModel):
    """Where a character version's artifacts are, and how many of its stages ran vs came from cache."""

    name: str
    slug: str
    family: StyleFamily
    version: int
    base: ArtifactRef
    variations: list[ArtifactRef]
    phashes: dict[str, str]  # artifact key -> 64-bit perceptual hash (hex)
    jobs: list[dict[str, Any]]  # one row per stage (tasks.artifacts.job_rows)
    executed: int
    cached: int
    gpu_seconds: float
    cost: float
    manifest_key: str
    manifest_uri: str
    run_manifest_key: str | None = None
    flow_run_id: str | None = None


# Cancelling, crashing or timing out removes this run's prompts from every worker: in the flow body
# (cancel_scope) and, for runs from a deployment, again from the hooks in the serving/worker process.
@flow(name="reelforge-character", log_prints=True, on_cancellation=[on_cancellation], on_crashed=[on_crashed])
async def character_flow(
    name: str = "Mina Park",
    character_type: str = "kpop_idol",
    age: Annotated[int | None, Field(ge=1, le=120)] = 22,
    gender: Gender | None = "female",
    custom_prompt: str = "",
    style: StyleFamily | None = None,
    variations: Annotated[int, Field(ge=0, le=200, description="variation images of the base")] = 4,
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] = 0,
    width: Annotated[int, Field(ge=64, le=4096, multiple_of=8)] = 1024,
    height: Annotated[int, Field(ge=64, le=4096, multiple_of=8)] = 1024,
) -> CharacterResult:
    """Generate one character: a base image, then ``variations`` image-to-image variations of it.

    Outputs go to the artifact store (``REELFORGE_STORE``: a folder or ``s3://bucket/prefix``).
    """
    spec = CharacterSpec(
        name=name, character_type=character_type, age=age, gender=gender, custom_prompt=custom_prompt,
        style=style, seed=seed,
    )
    prompts = build_prompts(spec, variations=variations)
    settings = Settings.load()
    size = {"width": width, "height": height}
    # Flux (realistic) takes no negative prompt; SDXL (stylized) does.
    negative = {"negative": prompts.negative} if spec.family == "stylized" else {}
    base_stage = Stage.gpu(f"character_base_{spec.family}")
    variation_stage = Stage.gpu(f"character_variation_{spec.family}")
    flow_run_id = current_flow_run_id()
    async with open_engine(settings) as engine, cancel_scope(engine.pool):
        store = engine.store
        folder = character_prefix(spec.slug)
        await asyncio.to_thread(store.mark_abandoned, folder)
        version = await asyncio.to_thread(
            store.reserve_version, folder, Holder.current(flow_run_id=flow_run_id, label=spec.name)
        )
        progress = FlowProgress(description=f"{spec.name} v{version}: stages done")
        await progress.start()
        try:
            stages = await StageRunner.create(engine, progress=progress)
            # Fail before any GPU time is spent if a template does not fit the workers (classes, inputs, models).
            await validate_on_pool(
                engine.pool, [template_named(base_stage.name), template_named(variation_stage.name)]
            )
            progress.plan(2 * (1 + len(prompts.variations)))
            tag = f"{spec.slug}-v{version}"
            hashes_at = character_stage_prefix(spec.slug, version, "hashes")
            base = await stages.run(
                base_stage,
                {"prompt": prompts.base, "seed": seed, **negative, **size},
                place=character_stage_prefix(spec.slug, version, "base"),
                job_id=f"{tag}-base",
            )
            base_image = base.refs[0]

            async def variation(i: int, prompt: str) -> tuple[StageRecord, StageRecord]:
                made = await stages.run(
                    variation_stage,
                    {"prompt": prompt, "seed": seed + 1 + i, **negative},
                    place=character_stage_prefix(spec.slug, version, "variations"),
                    job_id=f"{tag}-var{i:02d}",
                    inputs={"image": base_image},
                )
                hashed = await _phash(stages, made, hashes_at, f"{tag}-var{i:02d}-phash")
                return made, hashed

            base_hash, pairs = await asyncio.gather(
                _phash(stages, base, hashes_at, f"{tag}-base-phash"),
                asyncio.gather(*(variation(i, v.prompt) for i, v in enumerate(prompts.variations))),
            )
        except BaseException as exc:
            # This version will never get its manifest: say so now rather than when this process is gone.
            with contextlib.suppress(Exception):
                await asyncio.to_thread(store.abandon, folder, version, reason=f"{type(exc).__name__}: {exc}"[:500])
            raise
        finally:
            await progress.close()

        records = stages.records
        made = [base, *(m for m, _ in pairs)]
        hashes = {h.inputs["image"].key: str(h.record["phash"]) for h in [base_hash, *(h for _, h in pairs)]}
        manifest = Manifest(
            subject=spec.slug, kind="character", name=spec.name, version=version, stages=records,
            details={"spec": spec.model_dump(mode="json"), "prompts": prompts.model_dump(mode="json")},
        )
        manifest_ref = await asyncio.to_thread(
            write_manifest, store, manifest, character_manifest_key(spec.slug, version)
        )
        run_key = None
        if flow_run_id:
            run_key = run_manifest_key(flow_run_id)
            run_manifest = Manifest(subject=flow_run_id, kind="run", name=spec.name, stages=records)
            await asyncio.to_thread(write_manifest, store, run_manifest, run_key)
        await publish_summary(records, store, key=f"character-{spec.slug}", title=f"{spec.name} v{version}")
    character_ready(
        spec.slug, version, manifest_ref, name=spec.name, executed=stages.executed, cached=stages.cached
    )
    print(f"{len(records)} stages: {stages.executed} executed, {stages.cached} cached")
    print(f"{spec.name} v{version}: manifest {manifest_ref.uri}")
    return CharacterResult(
        name=spec.name,
        slug=spec.slug,
        family=spec.family,
        version=version,
        base=base_image,
        variations=[m.refs[0] for m in made[1:]],
        phashes=hashes,
        jobs=job_rows(records),
        executed=stages.executed,
        cached=stages.cached,
        gpu_seconds=manifest.total_gpu_seconds,
        cost=manifest.total_cost,
        manifest_key=manifest_ref.key,
        manifest_uri=manifest_ref.uri,
        run_manifest_key=run_key,
        flow_run_id=flow_run_id,
    )


async def _phash(stages: StageRunner, image: StageRecord, place: str, job_id: str) -> StageRecord:
    """The perceptual hash of a stage's first image (a CPU stage in a child process; it stores no file)."""
    return await stages.run(PHASH, {}, inputs={"image": image.refs[0]}, place=place, job_id=job_id)


def print_summary(result: CharacterResult, console: Console) -> None:
    """The table ``reelforge run character`` and ``make demo`` print: one row per stage, then the totals."""
    table = Table(title=f"{result.name} v{result.version} ({result.family})", title_justify="left")
    for column in ("job", "stage", "worker", "GPU s", "status", "output"):
        table.add_column(column, overflow="fold")
    prefix = f"{result.slug}-v{result.version}-"
    for row in result.jobs:
        output = str(row["outputs"]).split(",")[0]
        table.add_row(
            str(row["job"]).removeprefix(prefix), str(row["stage"]).removeprefix("character_"), str(row["worker"]),
            f"{row['gpu_seconds']:.2f}", str(row["status"]), output.rsplit("/", 1)[-1],
        )
    console.print(table)
    total = result.executed + result.cached
    console.print(
        f"{total} stages: {result.executed} executed, {result.cached} cached"
        + (" (everything came from the cache)" if total and result.cached == total else "")
        + f"; {result.gpu_seconds:.2f} GPU-seconds, cost {result.cost:.4f} in this run"
    )
    console.print(f"images: {result.base.uri.rsplit('/', 2)[0]}/", soft_wrap=True)
    console.print(f"manifest: {result.manifest_uri}", soft_wrap=True)
