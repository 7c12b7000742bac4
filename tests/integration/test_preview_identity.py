"""Identity on a real preview worker: a character's base and variations (no LoRA) are its references; test
images of the lora_test template score high with the character's LoRA and low with no LoRA, another
character's LoRA or a LoRA from elsewhere (default ``appearance`` scorer; docs/identity.md).

The character LoRAs are written here the way the preview trainer is meant to write them (the mean subject card
of the training images in the file's metadata, ``learn_identity``); the last test runs the real lora_train
template and is expected to fail until TrainLoraNode records that card (see its reason).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import save_file

from reelforge.characters import CharacterSpec, build_prompts
from reelforge.comfy import ComfyClient, WorkerPool
from reelforge.identity import AppearanceScorer, IdentityScores, scorer_by_name
from reelforge.jobs import run_template
from reelforge.preview.render.image import learn_identity
from reelforge.preview.server import PreviewWorker
from reelforge.preview.values import identity_metadata
from reelforge.templates import load_template

pytestmark = pytest.mark.timeout(240)

SIZE = 512  # small enough for CPU, above lora_test's minimum
VARIATIONS = 3


def _lora_file(folder: Path, name: str, metadata: dict[str, str] | None = None) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(name))
    tensors = {"diffusion_model.x.lora_down.weight": rng.standard_normal((4, 8)).astype(np.float32),
               "diffusion_model.x.lora_up.weight": rng.standard_normal((8, 4)).astype(np.float32)}
    save_file(tensors, str(folder / name), metadata=metadata)
    return name


async def _one(pool: WorkerPool, template: str, params: dict[str, object], dest: Path, job: str,
               inputs: dict[str, Path] | None = None) -> Path:
    run = await run_template(pool, load_template(template), params, job_id=job, dest_dir=dest, inputs=inputs)
    (file,) = run.files
    return file.path


async def _character(pool: WorkerPool, spec: CharacterSpec, dest: Path) -> tuple[list[Path], list[str]]:
    """Base + variations of ``spec`` (realistic templates, as the character flow runs them); its test prompts."""
    prompts = build_prompts(spec, variations=VARIATIONS, tests=3)
    base = await _one(pool, "character_base_realistic",
                      {"prompt": prompts.base, "seed": spec.seed, "width": SIZE, "height": SIZE, "steps": 4},
                      dest, f"{spec.slug}-base")
    variations = [
        await _one(pool, "character_variation_realistic",
                   {"prompt": v.prompt, "seed": spec.seed + 1 + i, "steps": 4}, dest, f"{spec.slug}-var{i}",
                   inputs={"image": base})
        for i, v in enumerate(prompts.variations)
    ]
    return [base, *variations], prompts.tests


def _learned_lora(folder: Path, name: str, training_images: list[Path]) -> str:
    """A character LoRA as the preview trainer would write it from these training images."""
    pixels = np.stack([np.asarray(Image.open(p).convert("RGB"), np.float32) / 255 for p in training_images])
    return _lora_file(folder, name, identity_metadata(learn_identity(pixels)))


async def _tests(pool: WorkerPool, prompts: list[str], dest: Path, tag: str, lora: str, strength: float) -> list[Path]:
    return [
        await _one(pool, "lora_test",
                   {"prompt": prompt, "lora": lora, "lora_strength": strength, "lora_clip_strength": strength,
                    "seed": 40 + i, "steps": 4, "width": SIZE, "height": SIZE},
                   dest, f"test-{tag}-{i}")
        for i, prompt in enumerate(prompts)
    ]


def _scores(result: IdentityScores) -> list[float]:
    return [c.score if c.score is not None else -1.0 for c in result.candidates]


async def test_right_lora_scores_high_no_or_other_lora_low(tmp_path: Path) -> None:
    root = tmp_path / "worker"
    loras = root / "models" / "loras"
    mina = CharacterSpec(name="Mina Park", character_type="kpop_idol", age=23, gender="female", seed=7)
    joon = CharacterSpec(name="Joon Seo", character_type="rapper", age=27, gender="male", seed=8)
    async with PreviewWorker(root) as worker, ComfyClient(worker.url) as client, WorkerPool([client]) as pool:
        mina_refs, mina_tests = await _character(pool, mina, tmp_path / "mina")
        joon_refs, _ = await _character(pool, joon, tmp_path / "joon")
        # Each character's LoRA learns from its variations (the training set), not from its base image.
        mina_lora = _learned_lora(loras, "mina_park.safetensors", mina_refs[1:])
        joon_lora = _learned_lora(loras, "joon_seo.safetensors", joon_refs[1:])
        stranger = _lora_file(loras, "downloaded_style.safetensors")  # a LoRA from elsewhere: no learned card
        out = tmp_path / "tests"
        right = await _tests(pool, mina_tests, out, "right", mina_lora, 1.0)
        none = await _tests(pool, mina_tests, out, "none", mina_lora, 0.0)  # ComfyUI skips a 0-strength LoRA
        other = await _tests(pool, mina_tests, out, "other", joon_lora, 1.0)
        elsewhere = await _tests(pool, mina_tests, out, "elsewhere", stranger, 1.0)

    scorer = scorer_by_name()
    assert isinstance(scorer, AppearanceScorer) and scorer.threshold == 0.7
    results = {tag: scorer.score(mina_refs, files)
               for tag, files in (("right", right), ("none", none), ("other", other), ("elsewhere", elsewhere))}
    print({tag: _scores(r) for tag, r in results.items()})
    assert results["right"].passed and min(_scores(results["right"])) >= 0.85, _scores(results["right"])
    for tag in ("none", "other", "elsewhere"):
        result = results[tag]
        assert not result.passed and result.failing == [c.path for c in result.candidates]
        assert max(_scores(result)) < 0.6, (tag, _scores(result))
    # The references hang together: each variation scores high against the base alone.
    assert scorer.score(mina_refs[:1], mina_refs[1:]).passed
    assert not scorer.score(mina_refs[:1], joon_refs[1:]).candidates[0].passed
    # Half strength: half the card is the LoRA's, half the picture's own subject: in between.
    async with PreviewWorker(root) as worker, ComfyClient(worker.url) as client, WorkerPool([client]) as pool:
        half = await _tests(pool, mina_tests[:1], out, "half", mina_lora, 0.5)
    half_score = scorer.score(mina_refs, half).candidates[0].score or 0.0
    assert max(_scores(results["none"])) < half_score < min(_scores(results["right"]))


async def test_lora_trained_on_the_variations_carries_the_identity(tmp_path: Path) -> None:
    spec = CharacterSpec(name="Ana Lima", character_type="influencer", age=30, gender="female", seed=3)
    root = tmp_path / "worker"
    async with PreviewWorker(root) as worker, ComfyClient(worker.url) as client, WorkerPool([client]) as pool:
        refs, tests = await _character(pool, spec, tmp_path / "ana")
        prompts = build_prompts(spec, variations=VARIATIONS)
        training = [(path, v.caption) for path, v in zip(refs[1:], prompts.variations, strict=True)]
        await run_template(pool, load_template("lora_train"), {"steps": 4, "rank": 4}, job_id="train",
                           dest_dir=tmp_path / "train", folders={"folder": training})
        (trained,) = (root / "output" / "loras").glob("*.safetensors")
        images = await _tests(pool, tests[:2], tmp_path / "tests", "trained", trained.name, 1.0)
    assert scorer_by_name().score(refs, images).passed
