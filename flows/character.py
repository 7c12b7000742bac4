"""Character flow: the whole character, every step a stage (tasks/stage.py), cached by content.

    base image -> pHash, dedup against the whole store (near-duplicate: regenerate with a new seed), then both
    at once:
    (a) N variations, each hashed and deduplicated the same way
        -> training set (images + captions) -> LoRA training (ComfyUI's trainer, or an external one)
        -> LoRA validation -> versioned LoRA record -> delivery to the workers (shared folder or fetch by URL)
        -> test images with the LoRA -> identity score against the references -> verdict
    (b) voice (designed, or cloned from a reference clip) -> intro clip (the base image speaking its line)
    -> the character manifest -> ``reelforge.character.ready`` or ``reelforge.character.lora_failed``

Running the flow again with the same spec serves every stage from the cache and writes a new character version
(a manifest) pointing at the same artifacts; a changed input re-executes only what depends on it. The version
is reserved when the run starts, so two runs of one character become v1 and v2.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

from prefect import flow
from pydantic import BaseModel, Field
from rich.console import Console
from rich.table import Table

from reelforge.characters import CharacterPrompts, CharacterSpec, Gender, StyleFamily, build_prompts
from reelforge.dedup import Match, PhashEntry, PhashIndex
from reelforge.engine import Engine, open_engine
from reelforge.errors import InputRejected
from reelforge.hashing import sha256_file
from reelforge.jobs import validate_on_pool
from reelforge.liveness import Holder, make_job_dir
from reelforge.lora import LoraFields, TrainingConfig, latest_lora, record_verdict, store_lora
from reelforge.media import MediaCheckFailed, audio_stage, frames_for
from reelforge.settings import Settings
from reelforge.storage import (
    ArtifactRef,
    ArtifactStore,
    Manifest,
    StageRecord,
    character_manifest_key,
    character_prefix,
    character_stage_prefix,
    content_key,
    run_manifest_key,
    write_manifest,
)
from tasks.artifacts import job_rows, publish_summary
from tasks.cancellation import cancel_scope, on_cancellation, on_crashed
from tasks.context import current_flow_run_id
from tasks.events import character_lora_failed, character_ready
from tasks.gpu import template_named
from tasks.progress import FlowProgress
from tasks.stage import Stage, StageRunner
from tasks.stages import AUDIO_CHECK, DATASET, IDENTITY, LORA_CHECK, LORA_TRAIN_EXTERNAL, PHASH, VIDEO_CHECK

__all__ = ["CharacterResult", "character_flow", "print_summary"]

TALKING_FPS = 16.0  # the talking_video template's frame rate (Wan runs at 16 fps)
A = TypeVar("A")
B = TypeVar("B")


class CharacterResult(BaseModel):
    """Where a character version's artifacts are, what its LoRA scored, and what ran vs came from cache."""

    name: str
    slug: str
    family: StyleFamily
    version: int
    base: ArtifactRef
    variations: list[ArtifactRef]
    phashes: dict[str, str]  # artifact key -> 64-bit perceptual hash (hex)
    regenerated: list[dict[str, Any]] = Field(default_factory=list)  # near-duplicates made again
    lora: dict[str, Any] | None = None  # the LoRA record: version, file key, sha256, family, rank
    verdict: dict[str, Any] | None = None  # identity score, threshold, scorer, passed, failing test images
    voice: ArtifactRef | None = None
    voice_seconds: float | None = None
    intro: ArtifactRef | None = None
    jobs: list[dict[str, Any]]  # one row per stage (tasks.artifacts.job_rows)
    executed: int
    cached: int
    gpu_seconds: float
    cost: float
    manifest_key: str
    manifest_uri: str
    run_manifest_key: str | None = None
    flow_run_id: str | None = None


class _Run:
    """What the steps of one character run share: the engine, the stages, where things go."""

    def __init__(self, engine: Engine, stages: StageRunner, spec: CharacterSpec, prompts: CharacterPrompts,
                 version: int, index: PhashIndex) -> None:
        self.engine = engine
        self.stages = stages
        self.spec = spec
        self.prompts = prompts
        self.version = version
        self.index = index
        self.tag = f"{spec.slug}-v{version}"
        self.regenerated: list[dict[str, Any]] = []

    @property
    def store(self) -> ArtifactStore:
        return self.engine.store

    def place(self, stage: str) -> str:
        return character_stage_prefix(self.spec.slug, self.version, stage)

    async def gpu(self, template: str, params: dict[str, Any], stage: str, job: str,
                  inputs: dict[str, ArtifactRef] | None = None) -> StageRecord:
        return await self.stages.run(Stage.gpu(template), params, place=self.place(stage), job_id=f"{self.tag}-{job}",
                                     inputs=inputs)

    async def cpu(self, stage: Stage, params: dict[str, Any], job: str, inputs: dict[str, ArtifactRef],
                  place: str = "checks") -> StageRecord:
        return await self.stages.run(stage, params, place=self.place(place), job_id=f"{self.tag}-{job}", inputs=inputs)

    async def unique_images(
        self, template: str, requests: list[tuple[dict[str, Any], str, str, dict[str, ArtifactRef] | None]]
    ) -> list[tuple[StageRecord, StageRecord]]:
        """Images that are no near-duplicates of anything in the store, each with its pHash stage.

        ``requests``: (params, stage, job, inputs) per image. They are made at once; then checked one by one, in
        order (so a run decides the same way every time), against the store-wide index; a near-duplicate is made
        again with a new seed, at most ``REELFORGE_DEDUP_RETRIES`` times, and what it duplicated is noted.
        """
        settings = self.engine.settings.character
        chosen: dict[int, tuple[StageRecord, StageRecord]] = {}
        pending = list(range(len(requests)))
        for attempt in range(settings.dedup_retries + 1):
            made = await asyncio.gather(*(self._hashed_image(template, requests[i], attempt) for i in pending))
            again = []
            for i, (image, hashed) in zip(pending, made, strict=True):
                out = image.outputs[0]
                twins = await asyncio.to_thread(self._twins, hashed, out.sha256, settings.dedup_radius)
                if twins and attempt < settings.dedup_retries:
                    again.append(i)
                    self.regenerated.append({"job": requests[i][2], "attempt": attempt + 1, "artifact": out.key,
                                             "duplicate_of": twins[0].entry.artifact_key,
                                             "distance": twins[0].distance})
                    continue
                if twins:
                    self.regenerated.append({"job": requests[i][2], "kept": out.key, "reason": "retries exhausted",
                                             "duplicate_of": twins[0].entry.artifact_key,
                                             "distance": twins[0].distance})
                chosen[i] = (image, hashed)
            pending = again
            if not pending:
                break
        return [chosen[i] for i in range(len(requests))]

    async def _hashed_image(
        self, template: str, request: tuple[dict[str, Any], str, str, dict[str, ArtifactRef] | None], attempt: int
    ) -> tuple[StageRecord, StageRecord]:
        params, stage, job, inputs = request
        suffix = f"-r{attempt}" if attempt else ""
        made = await self.gpu(template, {**params, "seed": int(params["seed"]) + 7919 * attempt}, stage,
                              job + suffix, inputs)
        hashed = await self.cpu(PHASH, {}, f"{job}{suffix}-phash", {"image": made.refs[0]}, place="hashes")
        return made, hashed

    def _twins(self, hashed: StageRecord, sha256: str, radius: int) -> list[Match]:
        """Index the image first, then look: of two runs making the same image at once, at least the second to
        look sees the first (index, then look; never look, then index)."""
        phash = hashed.record["phash"]
        self.index.refresh()
        if not any(m.entry.artifact_sha256 == sha256 for m in self.index.near(phash, 0)):
            self.index.add([PhashEntry.from_stage(hashed)])  # every hash ever stored, each artifact once
        self.index.refresh()  # what other runs indexed meanwhile: the look comes after our own entry is stored
        # The same artifact from an earlier run of this spec is not a duplicate: it is this image.
        return [m for m in self.index.near(phash, radius) if m.entry.artifact_sha256 != sha256]


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
    variations: Annotated[int, Field(ge=1, le=500, description="variation images of the base")] = 4,
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] = 0,
    width: Annotated[int, Field(ge=64, le=4096, multiple_of=8)] = 1024,
    height: Annotated[int, Field(ge=64, le=4096, multiple_of=8)] = 1024,
    lora: Annotated[bool, Field(description="train, validate, deliver and test an identity LoRA")] = True,
    lora_steps: Annotated[int, Field(ge=1, le=20000, description="LoRA training steps")] = 200,
    lora_rank: Annotated[int, Field(ge=1, le=128, description="LoRA rank")] = 8,
    voice: Annotated[str | None, Field(description="voice description (default: from type, gender and age)")] = None,
    voice_ref: Annotated[str | None, Field(description="a reference clip to clone the voice from (file)")] = None,
    intro: Annotated[bool, Field(description="an intro clip: the base image speaking its sample line")] = True,
) -> CharacterResult:
    """Generate one whole character: images, an identity LoRA it can trust, a voice and an intro clip.

    Outputs go to the artifact store (``REELFORGE_STORE``: a folder or ``s3://bucket/prefix``).
    """
    settings = Settings.load()
    if variations > settings.character.max_variations:
        most = settings.character.max_variations
        raise InputRejected(f"variations: {variations} is above REELFORGE_MAX_VARIATIONS={most}")
    spec = CharacterSpec(
        name=name, character_type=character_type, age=age, gender=gender, custom_prompt=custom_prompt,
        style=style, seed=seed,
    )
    reference_clip = _voice_reference(voice_ref)
    prompts = build_prompts(spec, variations=variations)
    if voice is not None:
        prompts = prompts.model_copy(update={"voice": voice})
    flow_run_id = current_flow_run_id()
    async with open_engine(settings) as engine, cancel_scope(engine.pool, shared=engine.borrowed):
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
            index = await asyncio.to_thread(PhashIndex.load, store, writer_id=flow_run_id or uuid.uuid4().hex)
            run = _Run(engine, stages, spec, prompts, version, index)
            templates = _templates(spec, lora=lora, voice_clone=reference_clip is not None, intro=intro)
            # Fail before any GPU time is spent if a template does not fit the workers (classes, inputs, models).
            await validate_on_pool(engine.pool, [template_named(t) for t in templates])
            progress.plan(2 * (1 + variations) + (5 + len(prompts.tests) if lora else 0) + 2 + (2 if intro else 0))
            result = await _character(run, width=width, height=height, lora=lora, lora_steps=lora_steps,
                                      lora_rank=lora_rank, reference_clip=reference_clip, intro=intro)
        except BaseException as exc:
            # This version will never get its manifest: say so now rather than when this process is gone.
            with contextlib.suppress(Exception):
                await asyncio.to_thread(store.abandon, folder, version, reason=f"{type(exc).__name__}: {exc}"[:500])
            raise
        finally:
            await progress.close()

        records = sorted(stages.records, key=lambda r: r.job_id)
        manifest = Manifest(
            subject=spec.slug, kind="character", name=spec.name, version=version, stages=records,
            details={
                "spec": spec.model_dump(mode="json"), "prompts": prompts.model_dump(mode="json"),
                "regenerated": run.regenerated, "lora": result["lora"], "verdict": result["verdict"],
                "voice_seconds": result["voice_seconds"],
            },
        )
        manifest_key = character_manifest_key(spec.slug, version)
        manifest_ref = await asyncio.to_thread(write_manifest, store, manifest, manifest_key)
        run_key = None
        if flow_run_id:
            run_key = run_manifest_key(flow_run_id)
            run_manifest = Manifest(subject=flow_run_id, kind="run", name=spec.name, stages=records)
            await asyncio.to_thread(write_manifest, store, run_manifest, run_key)
        await publish_summary(records, store, key=f"character-{spec.slug}", title=f"{spec.name} v{version}")
    verdict = result["verdict"]
    if verdict is not None and not verdict["passed"]:
        character_lora_failed(spec.slug, version, manifest_ref, name=spec.name, verdict=verdict)
    character_ready(
        spec.slug, version, manifest_ref, name=spec.name, executed=stages.executed, cached=stages.cached,
        score=verdict["score"] if verdict else None,
    )
    print(f"{len(records)} stages: {stages.executed} executed, {stages.cached} cached")
    if verdict is not None:
        print(_verdict_line(verdict))
    print(f"{spec.name} v{version}: manifest {manifest_ref.uri}")
    return CharacterResult(
        name=spec.name, slug=spec.slug, family=spec.family, version=version,
        base=result["base"], variations=result["variations"], phashes=result["phashes"],
        regenerated=run.regenerated, lora=result["lora"], verdict=verdict, voice=result["voice"],
        voice_seconds=result["voice_seconds"], intro=result["intro"], jobs=job_rows(records),
        executed=stages.executed, cached=stages.cached, gpu_seconds=manifest.total_gpu_seconds,
        cost=manifest.total_cost, manifest_key=manifest_ref.key, manifest_uri=manifest_ref.uri,
        run_manifest_key=run_key, flow_run_id=flow_run_id,
    )


def _templates(spec: CharacterSpec, *, lora: bool, voice_clone: bool, intro: bool) -> list[str]:
    names = [f"character_base_{spec.family}", f"character_variation_{spec.family}"]
    if lora:
        names += ["lora_train", "lora_test"]
    names.append("voice_clone" if voice_clone else "voice_design")
    if intro:
        names.append("talking_video")
    return names


def _voice_reference(voice_ref: str | None) -> Path | None:
    """The reference clip as a readable local file, or a field error before anything runs."""
    if voice_ref is None or not voice_ref.strip():
        return None
    path = Path(voice_ref).expanduser()
    if not path.is_file():
        raise InputRejected(f"voice_ref: {voice_ref!r} is not a readable file")
    try:
        with path.open("rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise InputRejected(f"voice_ref: {voice_ref!r} cannot be read ({exc.strerror})") from exc
    try:
        audio_stage({"audio": path}, {"min_s": 1.0}, path.parent)  # the same check the stage makes, up front
    except MediaCheckFailed as exc:
        raise InputRejected(f"voice_ref: {voice_ref!r} {exc.message}") from exc
    return path


async def _character(run: _Run, *, width: int, height: int, lora: bool, lora_steps: int, lora_rank: int,
                     reference_clip: Path | None, intro: bool) -> dict[str, Any]:
    spec, prompts = run.spec, run.prompts
    # Flux (realistic) takes no negative prompt; SDXL (stylized) does.
    negative = {"negative": prompts.negative} if spec.family == "stylized" else {}
    ((base, base_hash),) = await run.unique_images(
        f"character_base_{spec.family}",
        [({"prompt": prompts.base, "seed": spec.seed, **negative, "width": width, "height": height}, "base", "base",
          None)],
    )
    base_image = base.refs[0]

    async def images() -> tuple[list[ArtifactRef], dict[str, str], Any, Any]:
        pairs = await run.unique_images(
            f"character_variation_{spec.family}",
            [({"prompt": v.prompt, "seed": spec.seed + 1 + i, **negative}, "variations", f"var{i:02d}",
              {"image": base_image}) for i, v in enumerate(prompts.variations)],
        )
        accepted = [made.refs[0] for made, _ in pairs]
        phashes = {h.inputs["image"].key: str(h.record["phash"]) for h in [base_hash, *(h for _, h in pairs)]}
        lora_record, verdict = (await _lora(run, accepted, base_image, lora_steps, lora_rank)) if lora else (None, None)
        return accepted, phashes, lora_record, verdict

    async def voice() -> tuple[ArtifactRef, float, ArtifactRef | None]:
        voice_audio, seconds = await _voice(run, reference_clip)
        clip = await _intro(run, base_image, voice_audio, seconds, width, height) if intro else None
        return voice_audio, seconds, clip

    # Both need only the base image: the voice and the (long, single) intro job run beside the variations and the
    # LoRA, so a character's longest chain is the images' and the fleet has work from both.
    (accepted, phashes, lora_record, verdict), (voice_audio, seconds, clip) = await both(images(), voice())
    return {"base": base_image, "variations": accepted, "phashes": phashes, "lora": lora_record,
            "verdict": verdict, "voice": voice_audio, "voice_seconds": seconds, "intro": clip}


async def both(first: Coroutine[Any, Any, A], second: Coroutine[Any, Any, B]) -> tuple[A, B]:
    """Run two branches at once; when one fails, cancel the other (its prompts are taken back) and raise the
    failure itself (not an ExceptionGroup: the run's state message names what went wrong)."""
    one, two = asyncio.ensure_future(first), asyncio.ensure_future(second)
    branches: tuple[asyncio.Future[Any], ...] = (one, two)
    try:
        _, pending = await asyncio.wait(branches, return_when=asyncio.FIRST_EXCEPTION)
    except BaseException:  # this run was cancelled: so are both branches
        for branch in branches:
            branch.cancel()
        await asyncio.gather(*branches, return_exceptions=True)
        raise
    failed = next((b for b in branches if b.done() and not b.cancelled() and b.exception() is not None), None)
    if failed is not None:
        for branch in pending:
            branch.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        raise failed.exception()  # type: ignore[misc]
    return one.result(), two.result()


async def _lora(run: _Run, accepted: list[ArtifactRef], base: ArtifactRef, steps: int,
                rank: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Training set -> training -> validation -> record -> delivery -> test images -> identity verdict."""
    spec, prompts, engine = run.spec, run.prompts, run.engine
    images = {f"image{i:03d}": ref for i, ref in enumerate(accepted)}
    captions = [v.caption for v in prompts.variations]
    dataset = await run.cpu(DATASET, {"trigger": prompts.trigger, "captions": captions}, "dataset", images,
                            place="dataset")
    train = template_named("lora_train")
    character = engine.settings.character
    family = character.lora_family
    command = character.lora_trainer_cmd
    base_model = (character.lora_base_model if command else None) or train.models[0].name
    training = TrainingConfig(steps=steps, rank=rank, learning_rate=1e-4, base_model=base_model,
                              resolution=1024, trainer="comfyui", seed=spec.seed, trigger_word=prompts.trigger)
    if command:  # a studio's own trainer (ai-toolkit, sd-scripts), behind the same stage interface
        training = training.model_copy(update={"trainer": "external"})
        trained = await run.cpu(
            LORA_TRAIN_EXTERNAL,
            {"command": command, "config": training.model_dump(mode="json"), "family": family,
             "format": character.lora_trainer_format,
             "timeout_s": engine.settings.limits.timeout_lora_s},
            "train", {"dataset": dataset.refs[0]}, place="lora",
        )
    else:
        trained = await run.gpu("lora_train", {"steps": steps, "rank": rank, "learning_rate": training.learning_rate,
                                               "seed": spec.seed}, "lora", "train", inputs={"folder": dataset.refs[0]})
    lora_ref = trained.refs[0]
    checked = await run.cpu(LORA_CHECK, {"rank": rank, "family": family}, "lora-check", {"lora": lora_ref})
    local = await asyncio.to_thread(_local_copy, run.store, lora_ref)
    record = await asyncio.to_thread(
        store_lora, run.store, local,
        LoraFields(character=spec.name, slug=spec.slug, character_type=spec.character_type,
                   character_version=run.version, base_model=training.base_model, family=family,
                   training=training, dataset_sha256=dataset.outputs[0].sha256),
    )
    holder = Holder.current(flow_run_id=current_flow_run_id(), label=f"lora test {spec.slug}")
    async with engine.lora_delivery(lora_ref).mounted(local, lora_ref.sha256, holder, pool=engine.pool) as name:
        size = {"width": 512, "height": 512}
        tests = await asyncio.gather(*(
            run.gpu("lora_test", {"prompt": prompt, "lora": name, "seed": spec.seed + 100 + i, **size},
                    "lora-test", f"test{i:02d}")
            for i, prompt in enumerate(prompts.tests)
        ))
    references = {"ref000": base, **{f"ref{i + 1:03d}": ref for i, ref in enumerate(accepted)}}
    candidates = {f"test{i:03d}": t.refs[0] for i, t in enumerate(tests)}
    scored = await run.cpu(IDENTITY, {"scorer": character.identity_scorer, "threshold": character.identity_threshold},
                           "identity", {**references, **candidates})
    scores = scored.record
    verdict = {
        "score": round(float(scores["overall"]), 4), "threshold": scores["threshold"], "scorer": scores["scorer"],
        "passed": bool(scores["passed"]),
        "failing": [candidates[n].key for n in scores["failing"] if n in candidates],
        "per_image": {candidates[c["path"]].key: c["score"] for c in scores["candidates"] if c["path"] in candidates},
    }
    await asyncio.to_thread(_write_verdict, run.store, record.slug, record.version, verdict)
    lora_info = {"version": record.version, "file_key": record.file_key, "sha256": record.sha256,
                 "family": record.family, "rank": checked.record.get("rank"), "size": record.size,
                 "record_key": record.record_key}
    return lora_info, verdict


def _local_copy(store: ArtifactStore, ref: ArtifactRef) -> Path:
    """The stored file on local disk: the store's own file, or a download into a job folder."""
    path_for = getattr(store, "path_for", None)
    if callable(path_for):
        path = Path(path_for(ref.key))
        if path.is_file():
            return path
    return store.get_file(ref.key, make_job_dir() / ref.name)


def _write_verdict(store: ArtifactStore, slug: str, version: int, verdict: dict[str, Any]) -> None:
    """The LoRA version's verdict, written once (a cached re-run finds it there already)."""
    current = latest_lora(store, slug)
    if current is not None and current.version == version and current.verdict is not None:
        return
    record_verdict(store, slug, version, verdict="accepted" if verdict["passed"] else "rejected",
                   test_scores=verdict["per_image"],
                   note=f"{verdict['scorer']}: {verdict['score']} (threshold {verdict['threshold']})")


async def _voice(run: _Run, reference_clip: Path | None) -> tuple[ArtifactRef, float]:
    """A designed or cloned voice speaking the sample line; stored audio whose duration is checked."""
    spec, prompts = run.spec, run.prompts
    if reference_clip is None:
        made = await run.gpu("voice_design", {"text": prompts.sample_line, "voice": prompts.voice,
                                              "seed": spec.seed}, "voice", "voice")
    else:
        sha, _ = await asyncio.to_thread(sha256_file, reference_clip)
        stored = await asyncio.to_thread(
            run.store.put_file, reference_clip, content_key(run.place("voice-ref"), sha, reference_clip.suffix)
        )
        await run.cpu(AUDIO_CHECK, {"min_s": 1.0}, "voice-ref-check", {"audio": stored})  # refuses non-audio
        made = await run.gpu("voice_clone", {"text": prompts.sample_line, "seed": spec.seed}, "voice", "voice",
                             inputs={"audio": stored})
    audio = made.refs[0]
    facts = await run.cpu(AUDIO_CHECK, {"min_s": 0.3}, "voice-check", {"audio": audio})
    return audio, float(facts.record["duration_s"])


async def _intro(run: _Run, base: ArtifactRef, audio: ArtifactRef, seconds: float, width: int,
                 height: int) -> ArtifactRef:
    """The base image speaking the sample line, with a frame count that holds the whole line."""
    talking = template_named("talking_video")
    frames = frames_for(seconds, TALKING_FPS, maximum=talking.parameters["length"].max)  # type: ignore[arg-type]
    size = {"width": _multiple(width, 16, 320, 1280), "height": _multiple(height, 16, 320, 1280)}
    made = await run.gpu("talking_video", {"prompt": f"{run.spec.name} talking to the camera, natural gestures",
                                           "seed": run.spec.seed, "length": frames, "fps": TALKING_FPS, **size},
                         "intro", "intro", inputs={"image": base, "audio": audio})
    clip = made.refs[0]
    await run.cpu(VIDEO_CHECK, {"duration_s": frames / TALKING_FPS}, "intro-check", {"video": clip})
    return clip


def _multiple(value: int, step: int, low: int, high: int) -> int:
    return max(low, min(high, value // step * step))


def _verdict_line(verdict: dict[str, Any]) -> str:
    word = "passed" if verdict["passed"] else "FAILED"
    line = f"LoRA identity test {word}: {verdict['scorer']} score {verdict['score']:.3f}"
    line += f" (threshold {verdict['threshold']})"
    if verdict["failing"]:
        line += f"; failing test images: {', '.join(k.rsplit('/', 1)[-1] for k in verdict['failing'])}"
    return line


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
    if result.regenerated:
        console.print(f"{len(result.regenerated)} near-duplicate image(s) regenerated (see the manifest)")
    if result.verdict is not None:
        style = "green" if result.verdict["passed"] else "bold red"
        console.print(f"[{style}]{_verdict_line(result.verdict)}[/]", highlight=False)
    if result.voice is not None:
        console.print(f"voice: {result.voice_seconds:.2f} s, {result.voice.uri}", soft_wrap=True)
    if result.intro is not None:
        console.print(f"intro clip: {result.intro.uri}", soft_wrap=True)
    console.print(f"images: {result.base.uri.rsplit('/', 2)[0]}/", soft_wrap=True)
    console.print(f"manifest: {result.manifest_uri}", soft_wrap=True)
