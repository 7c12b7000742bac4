"""The whole character under Prefect's harness: LoRA, verdict, voice, intro; what a change re-executes; dedup."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tasks.events
from flows.character import CharacterResult, character_flow
from reelforge.lora import read_lora
from reelforge.media import run_ffmpeg
from reelforge.media.probe import probe
from reelforge.preview import PreviewWorker, PreviewWorkerThread
from reelforge.storage import LocalStore, read_manifest

SMALL: dict[str, Any] = {"width": 256, "height": 256, "lora_steps": 8, "lora_rank": 4}


@pytest.fixture(scope="module")
def workers() -> Iterator[list[PreviewWorkerThread]]:
    threads = [PreviewWorkerThread(PreviewWorker(latency="instant", name=f"whole{i}")) for i in range(2)]
    for thread in threads:
        thread.start()
    yield threads
    for thread in threads:
        thread.stop()


@pytest.fixture
def env(workers: list[PreviewWorkerThread], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Real workers outside the flow; their shared LoRA folder is each one's models/loras/shared."""
    shared = tmp_path / "shared-loras"
    shared.mkdir()
    for worker in workers:
        loras = worker.worker.root / "models" / "loras"
        loras.mkdir(parents=True, exist_ok=True)
        link = loras / "shared"
        if link.is_symlink():
            link.unlink()
        link.symlink_to(shared, target_is_directory=True)
    monkeypatch.setenv("REELFORGE_COMFY_URLS", ",".join(w.url for w in workers))
    monkeypatch.setenv("REELFORGE_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("REELFORGE_LORA_SHARED_DIR", str(shared))
    monkeypatch.setenv("REELFORGE_LORA_SHARED_PREFIX", "shared/")
    monkeypatch.setenv("REELFORGE_DEDUP_RETRIES", "0")  # counts below must not depend on image likeness
    return tmp_path / "store"


def executed(result: CharacterResult) -> list[str]:
    prefix = f"{result.slug}-v{result.version}-"
    return sorted(str(r["job"]).removeprefix(prefix) for r in result.jobs if r["status"] == "executed")


async def test_the_whole_character_and_what_a_change_re_executes(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    emitted: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(tasks.events, "emit_event", lambda event, **kw: emitted.append((event, kw)))
    first = await character_flow(name="Whole Person", variations=3, **SMALL)
    store = LocalStore(env)
    # The LoRA: trained on the variations, validated, on record, tested, scored.
    assert first.lora is not None and first.lora["family"] == "sdxl" and first.lora["rank"] == 4
    record = read_lora(store, first.slug, first.lora["version"])
    assert record.character == "Whole Person" and record.verdict == "accepted" and record.test_scores
    assert first.verdict is not None and first.verdict["passed"] and first.verdict["score"] >= 0.7
    # The voice and the intro clip: stored, and the clip verified (video + audio, as long as the line).
    assert first.voice is not None and first.voice_seconds and first.voice_seconds > 0.5
    assert first.intro is not None
    clip = probe(store.path_for(first.intro.key))
    assert clip.has_video and clip.has_audio and clip.duration_s is not None
    assert clip.duration_s >= first.voice_seconds - 1 / 16
    manifest = read_manifest(store, first.manifest_key)
    assert {s.stage for s in manifest.stages} >= {
        "character_base_realistic", "character_variation_realistic", "phash", "dataset", "lora_train",
        "lora_check", "lora_test", "identity", "voice_design", "audio_check", "talking_video", "video_check",
    }
    assert manifest.details["verdict"]["passed"] and manifest.details["lora"]["record_key"] == record.record_key
    ready = [kw for event, kw in emitted if event == "reelforge.character.ready"]
    assert ready and ready[0]["payload"]["identity_score"] == first.verdict["score"]
    assert not [e for e, _ in emitted if e == "reelforge.character.lora_failed"]
    assert not list((env.parent / "shared-loras").glob("rf-*")), "the LoRA leaves the shared folder after use"

    # Only the voice description changes: only voice and intro (and their checks) run again.
    voiced = await character_flow(name="Whole Person", variations=3, voice="a deep calm voice, slow pace", **SMALL)
    assert executed(voiced) == ["intro", "intro-check", "voice", "voice-check"]

    # One more variation: it and what depends on the set run; base, earlier variations, voice and intro do not.
    more = await character_flow(name="Whole Person", variations=4, voice="a deep calm voice, slow pace", **SMALL)
    assert executed(more) == [
        "dataset", "identity", "lora-check", "test00", "test01", "test02", "test03", "train", "var03", "var03-phash",
    ]
    assert more.lora is not None and more.lora["version"] == first.lora["version"] + 1


async def test_a_failed_identity_test_is_a_clear_verdict(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    emitted: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(tasks.events, "emit_event", lambda event, **kw: emitted.append((event, kw)))
    monkeypatch.setenv("REELFORGE_IDENTITY_THRESHOLD", "0.999")
    result = await character_flow(name="Strict Person", variations=2, intro=False, **SMALL)
    assert result.verdict is not None and not result.verdict["passed"]
    assert result.verdict["threshold"] == 0.999 and result.verdict["failing"]
    failed = [kw for event, kw in emitted if event == "reelforge.character.lora_failed"]
    assert failed and failed[0]["payload"]["score"] == result.verdict["score"]
    assert read_lora(LocalStore(env), result.slug).verdict == "rejected"


async def test_near_duplicates_are_regenerated_and_noted(
    env: Path, workers: list[PreviewWorkerThread], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REELFORGE_DEDUP_RETRIES", "2")
    first = await character_flow(name="Dup Source", variations=1, lora=False, intro=False, **SMALL)
    for worker in workers:
        worker.worker.faults.near_duplicates(1)  # the next image each worker saves: an earlier one, altered
    second = await character_flow(name="Dup Copy", variations=1, lora=False, intro=False, **SMALL)
    noted = [r for r in second.regenerated if "attempt" in r]
    assert noted, "a near-duplicate of an image in the store must be made again"
    earlier = {first.base.key, *(v.key for v in first.variations)}
    assert any(r["duplicate_of"] in earlier or r["duplicate_of"].startswith("characters/dup-copy/") for r in noted)
    assert all(r["distance"] <= 10 for r in noted)
    manifest = read_manifest(LocalStore(env), second.manifest_key)
    assert manifest.details["regenerated"] == second.regenerated
    assert any("-r1" in str(r["job"]) for r in second.jobs)


async def test_a_cloned_voice_and_a_reference_clip_that_is_not_audio(env: Path, tmp_path: Path) -> None:
    clip = tmp_path / "ref.wav"
    run_ffmpeg(["-y", "-f", "lavfi", "-i", "sine=frequency=220:sample_rate=24000", "-t", "3", str(clip)])
    cloned = await character_flow(name="Echo Person", variations=1, lora=False, intro=False, voice_ref=str(clip),
                                  **SMALL)
    assert any(r["stage"] == "voice_clone" for r in cloned.jobs) and cloned.voice is not None
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("this is not a sound")
    with pytest.raises(ValueError, match=r"voice_ref: '.*notes\.wav' not a readable media file"):
        await character_flow(name="Echo Person", variations=1, lora=False, intro=False, voice_ref=str(not_audio),
                             **SMALL)
    assert json.loads((env / cloned.manifest_key).read_text())["name"] == "Echo Person"


TRAINER = r"""
import os, sys
import numpy as np
import yaml
from safetensors.numpy import save_file

with open(sys.argv[1]) as f:
    job = yaml.safe_load(f)
process = job["config"]["process"][0]
rank, steps, name = process["network"]["linear"], process["train"]["steps"], job["config"]["name"]
images = [p for p in os.listdir(process["datasets"][0]["folder_path"]) if p.endswith(".png")]
for step in range(1, steps + 1):
    print(f"{name}: {step}/{steps}", flush=True)
target = os.path.join(process["training_folder"], name, name + ".safetensors")
os.makedirs(os.path.dirname(target), exist_ok=True)
rng = np.random.default_rng(len(images))
tensors = {}
modules = (("lora_unet_double_blocks_0_img_attn_qkv", 96, 32), ("lora_unet_single_blocks_0_linear2", 32, 64))
for module, out_f, in_f in modules:
    tensors[module + ".lora_down.weight"] = rng.standard_normal((rank, in_f)).astype(np.float16)
    tensors[module + ".lora_up.weight"] = rng.standard_normal((out_f, rank)).astype(np.float16)
    tensors[module + ".alpha"] = np.array(rank, dtype=np.float16)
save_file(tensors, target)
"""


async def test_an_external_trainer_behind_the_same_stage(
    env: Path, tmp_path: Path, workers: list[PreviewWorkerThread], monkeypatch: pytest.MonkeyPatch
) -> None:
    script = tmp_path / "trainer.py"
    script.write_text(TRAINER)
    monkeypatch.setenv("REELFORGE_LORA_TRAINER_CMD", f"{sys.executable} {script} {{config}}")
    monkeypatch.setenv("REELFORGE_LORA_FAMILY", "flux")
    monkeypatch.setenv("REELFORGE_LORA_BASE_MODEL", "black-forest-labs/FLUX.1-dev")
    sent = sum(w.stats.prompts_executed for w in workers)
    result = await character_flow(name="Outside Person", variations=2, intro=False, **SMALL)
    assert result.lora is not None and result.lora["family"] == "flux"
    record = read_lora(LocalStore(env), result.slug)
    assert record.training.trainer == "external" and record.base_model == "black-forest-labs/FLUX.1-dev"
    assert "lora_train_external" in {r["stage"] for r in result.jobs}
    assert "lora_train" not in {r["stage"] for r in result.jobs}
    # base, 2 variations, 4 test images and the voice went to the workers; the training did not.
    assert sum(w.stats.prompts_executed for w in workers) - sent == 8
