"""The video flow under Prefect's harness on preview workers: a whole small production with a character (LoRA
keyframes, a chained scene, first/last frame, lip sync in two windows), two speakers lip-synced one window each,
what an edit re-executes (counted), takes, the pose keyframe with the identity, and bad input refused before any
GPU job."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

import tasks.events
from flows.character import character_flow
from flows.video import VideoResult, _templates, video_flow
from reelforge.delivery import lora_file_name
from reelforge.errors import InputRejected
from reelforge.media import probe
from reelforge.media.synth import beat_track, tone, write_wav
from reelforge.preview import PreviewWorker, PreviewWorkerThread
from reelforge.script import ScriptLimits, dump_script, parse_script
from reelforge.storage import LocalStore, read_manifest
from reelforge.video import (
    CastMismatch,
    CharacterIncomplete,
    DurationRejected,
    MusicRejected,
    PoseRejected,
    ScriptRejected,
    UnknownCharacter,
    plan_scenes,
    resolve_cast,
)

SIZE: dict[str, Any] = {"width": 320, "height": 320, "production": "bakery"}
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("video")
    shared = root / "shared-loras"
    shared.mkdir()
    threads = [PreviewWorkerThread(PreviewWorker(latency="instant", name=f"video{i}")) for i in range(2)]
    with pytest.MonkeyPatch.context() as mp:
        for thread in threads:
            thread.start()
            loras = thread.worker.root / "models" / "loras"
            loras.mkdir(parents=True, exist_ok=True)
            (loras / "shared").symlink_to(shared, target_is_directory=True)
        mp.setenv("REELFORGE_COMFY_URLS", ",".join(t.url for t in threads))
        mp.setenv("REELFORGE_STORE", str(root / "store"))
        mp.setenv("REELFORGE_LORA_SHARED_DIR", str(shared))
        mp.setenv("REELFORGE_LORA_SHARED_PREFIX", "shared/")
        mp.setenv("REELFORGE_DEDUP_RETRIES", "0")
        yield root
        for thread in threads:
            thread.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def mina(env: Path) -> str:
    await character_flow(name="Mina", variations=1, intro=False, width=256, height=256, lora_steps=8, lora_rank=4)
    return "Mina"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def ari(env: Path, mina: str) -> str:
    await character_flow(name="Ari", variations=1, intro=False, width=256, height=256, lora_steps=8, lora_rank=4,
                         gender="male", age=30)
    return "Ari"


def _edited(env: Path, script: dict[str, Any], name: str) -> str:
    path = env / f"{name}.json"
    path.write_bytes(dump_script(parse_script(json.dumps(script), ScriptLimits())))
    return str(path)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def base(env: Path, mina: str) -> tuple[VideoResult, dict[str, Any]]:
    """10 s: a scene without the cast, a 5.5 s scene of two chained segments with a line lip-synced in two
    windows, a closing scene with a line and a described end frame (first/last-frame mode)."""
    written = await video_flow(brief="Mina opens a tiny bakery at dawn", duration=10, characters=mina, width=320,
                               height=320)
    store = LocalStore(env / "store")
    script = json.loads(store.read_bytes(written.script_key))
    s1, s2, s3 = script["scenes"]
    s1["duration_s"], s2["duration_s"], s3["duration_s"] = 2.5, 5.5, 2.0
    assert s2["characters"] == ["Mina"] and s2["dialogue"] and s3["dialogue"] and s3["end_frame"]
    path = _edited(env, script, "base")
    result = await video_flow(script=path, **SIZE)
    return result, script


def executed(result: VideoResult, kind: str | None = None) -> set[str]:
    prefix = f"{result.slug}-v{result.version}-"
    return {str(r["job"]).removeprefix(prefix) for r in result.jobs
            if r["status"] == "executed" and (kind is None or r["kind"] == kind)}


async def test_whole_production(env: Path, base: tuple[VideoResult, dict[str, Any]]) -> None:
    result, _ = base
    info = probe(result.video.uri.removeprefix("file://"))
    assert info.frame_count == 160 == result.frames and abs((info.duration_s or 0) - 10.0) < 0.07
    assert info.video[0].width == 320 and info.has_audio
    assert result.loudness_lufs is not None and abs(result.loudness_lufs + 14) <= 0.5
    srt = LocalStore(env / "store").read_bytes(result.srt.key).decode("utf-8")
    assert "-->" in srt and srt.count("-->") == 2
    gpu = {str(r["job"]).removeprefix(f"{result.slug}-v{result.version}-") for r in result.jobs if r["kind"] == "gpu"}
    # scene 2: two segments, the second chained from the first's exact last frame; lip sync in two windows
    assert {"s02-shot1-animation", "s02-shot2-animation", "s02-lipsync1", "s02-lipsync2", "s03-lipsync1",
            "s01-keyframe-start", "s03-keyframe-end", "music"} <= gpu
    assert "s02-shot2-seed" in executed(result, "process")
    assert "music" not in executed(result)  # same mood and length as the written script's run: from cache
    stages = {r["job"].removeprefix(f"{result.slug}-v{result.version}-"): r for r in result.jobs}
    assert stages["s01-keyframe-start"]["stage"] == "character_base_realistic"
    assert stages["s02-keyframe-start"]["stage"] == "keyframe_ipadapter"
    assert stages["s03-shot1-animation"]["stage"] == "first_last_frame"
    manifest = read_manifest(LocalStore(env / "store"), result.manifest_key)
    join = next(s for s in manifest.stages if s.job_id.endswith("s02-lipsync-join"))
    assert join.record["asked"] == [42, 42] and join.record["frames"] == 84  # from frame 4 (0.3 s) to 88
    assert sum(join.record["asked"]) == join.record["frames"]
    assert manifest.kind == "production" and [t["take"] for t in manifest.details["takes"]] == [1, 1, 1, 1]
    assert result.manifest_key.startswith(f"productions/{result.slug}/v")


async def test_motion_prompt_edit_re_executes_that_scene_only(
        env: Path, base: tuple[VideoResult, dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    emitted: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(tasks.events, "emit_event", lambda event, **kw: emitted.append((event, kw)))
    first, script = base
    edited = json.loads(json.dumps(script))
    edited["scenes"][1]["motion_prompt"] = "Mina kneads dough, flour in the air"
    result = await video_flow(script=_edited(env, edited, "motion"), **SIZE)
    assert executed(result, "gpu") == {"s02-shot1-animation", "s02-shot2-animation", "s02-lipsync1", "s02-lipsync2"}
    assert executed(result) - executed(result, "gpu") == {"s02-shot2-seed", "s02-lipsync-face", "s02-lipsync-join",
                                                           "assembly"}
    takes = {(t.scene, t.shot): t for t in result.takes}
    assert takes[(2, 1)].take == 2 and takes[(2, 1)].new and takes[(1, 1)].take == 1
    store = LocalStore(env / "store")
    assert store.list(f"productions/{result.slug}/scene-02/shot-01/take-01/")  # the earlier take is kept
    assert result.version == first.version + 1
    ready = [kw for event, kw in emitted if event == "reelforge.video.ready"]
    assert ready and ready[0]["payload"]["key"] == result.video.key


async def test_music_mood_edit_re_executes_music_and_assembly(
        env: Path, base: tuple[VideoResult, dict[str, Any]]) -> None:
    _, script = base
    edited = json.loads(json.dumps(script))
    edited["audio_mood"] = "dark synthwave, driving"
    result = await video_flow(script=_edited(env, edited, "mood"), **SIZE)
    assert executed(result) == {"music", "assembly"}


async def test_dialogue_edit_re_executes_that_line_and_its_lip_sync(
        env: Path, base: tuple[VideoResult, dict[str, Any]]) -> None:
    _, script = base
    edited = json.loads(json.dumps(script))
    edited["scenes"][2]["dialogue"][0]["text"] = "See you at noon."
    result = await video_flow(script=_edited(env, edited, "line"), **SIZE)
    assert executed(result, "gpu") == {"s03-line1", "s03-lipsync1"}
    assert {"s03-line1-check", "s03-speech", "s03-lipsync-join", "assembly"} <= executed(result)
    assert not {j for j in executed(result) if not j.startswith("s03-") and j != "assembly"}


def _duet(script: dict[str, Any], reply: str = "Morning! Rye today?") -> dict[str, Any]:
    """The base script with Ari beside Mina in scene 2 (5.5 s): Mina, Ari, Mina speak in turn."""
    script = json.loads(json.dumps(script))
    script["characters"] = ["Mina", "Ari"]
    scene = script["scenes"][1]
    scene["characters"], scene["shot_type"] = ["Mina", "Ari"], "two_shot"
    scene["dialogue"] = [{"speaker": "Mina", "text": "Good morning."}, {"speaker": "Ari", "text": reply},
                         {"speaker": "Mina", "text": "Always."}]
    return script


async def test_two_speakers_are_lip_synced_one_window_each(
        env: Path, base: tuple[VideoResult, dict[str, Any]], ari: str) -> None:
    """Each talking_video window lip-syncs one speaker, named with its place in its prompt and in the record; the
    joined clip has exactly the scene's lip-synced frames; a changed reply re-runs only its voice and the windows
    from its turn on."""
    _, script = base
    result = await video_flow(script=_edited(env, _duet(script), "duet"), **SIZE)
    store = LocalStore(env / "store")
    manifest = read_manifest(store, result.manifest_key)
    stages = {s.job_id.removeprefix(f"{result.slug}-v{result.version}-"): s for s in manifest.stages}
    lip = manifest.details["lipsync"]["2"]
    assert [w["speaker"] for w in lip["windows"]] == ["Mina", "Ari", "Mina"]
    prompts = [stages[f"s02-lipsync{w}"].params["prompt"] for w in (1, 2, 3)]
    assert [stages[f"s02-lipsync{w}"].stage for w in (1, 2, 3)] == ["talking_video"] * 3
    assert prompts[0].startswith("Mina (on the left) speaks to Ari (on the right); Ari listens. ")
    assert prompts[1].startswith("Ari (on the right) speaks to Mina (on the left); Mina listens. ")
    assert prompts[2] == prompts[0]
    assert "Mina on the left, Ari on the right" in stages["s02-keyframe-start"].params["prompt"]
    # the two-shot keyframe carries both identities: Mina's LoRA and reference on the left half, Ari's on the right
    key = stages["s02-keyframe-start"]
    cast = resolve_cast(store, ["Mina", "Ari"])
    mina, ari_member = cast["Mina"], cast["Ari"]
    assert key.stage == "keyframe_two_shot"
    assert key.params["lora"].endswith(lora_file_name(mina.lora.sha256))  # as delivered (a folder may lead)
    assert key.params["lora_b"].endswith(lora_file_name(ari_member.lora.sha256))
    assert key.params["lora"] != key.params["lora_b"]
    assert key.inputs["reference"].sha256 == mina.base.sha256
    assert key.inputs["reference_b"].sha256 == ari_member.base.sha256 != mina.base.sha256
    assert stages["s03-keyframe-end"].stage == "keyframe_ipadapter"  # Mina alone: one identity, as before
    assert stages["s03-keyframe-end"].params["lora"] == key.params["lora"]
    # the flow validates the two-shot template up front when a keyframe needs it (not with --pose, one per scene)
    duet = parse_script(json.dumps(_duet(script)), ScriptLimits())
    plans = plan_scenes(duet, fps=16.0, segment_frames=81, max_chain=6)
    assert "keyframe_two_shot" in _templates(duet, plans, cast, True)
    assert "keyframe_two_shot" not in _templates(duet, plans, cast, True, pose=True)
    solo = parse_script(json.dumps(script), ScriptLimits())
    assert "keyframe_two_shot" not in _templates(solo, plan_scenes(solo, fps=16.0, segment_frames=81, max_chain=6),
                                                 cast, True)
    join = stages["s02-lipsync-join"].record
    assert join["speakers"] == ["Mina", "Ari", "Mina"] and join["asked"] == [w["frames"] for w in lip["windows"]]
    assert join["frames"] == sum(join["asked"]) == 88 - lip["start"]  # scene 2: frames 40 to 128
    assert probe(store.path_for(lip["clip"])).frame_count == join["frames"]
    assert result.frames == 160
    assert probe(result.video.uri.removeprefix("file://")).frame_count == 160
    # Ari's reply changes: his voice and the windows from his turn on; Mina's first window is served from cache
    changed = await video_flow(script=_edited(env, _duet(script, "Yes, rye and a little honey."), "duet2"), **SIZE)
    gpu = executed(changed, "gpu")
    assert {"s02-line2", "s02-lipsync2"} <= gpu and "s02-lipsync1" not in gpu, gpu
    assert gpu <= {"s02-line2", "s02-lipsync2", "s02-lipsync3"}, gpu


def _offbeat(env: Path, script: dict[str, Any]) -> str:
    """The base script with its cuts at 2.3 s and 7.7 s (frames 37 and 123)."""
    script = json.loads(json.dumps(script))
    for scene, seconds in zip(script["scenes"], (2.3, 5.4, 2.3), strict=True):
        scene["duration_s"] = seconds
    return _edited(env, script, "offbeat")


async def test_supplied_music_snaps_the_cuts_to_its_beats(
        env: Path, base: tuple[VideoResult, dict[str, Any]]) -> None:
    """Cuts written at 2.3 s and 7.7 s, music at 120 BPM with beats from 0.1 s: every cut lands within a frame
    of a beat (unsnapped they sit 0.2 s and 0.1 s off), the total is unchanged, no music is generated."""
    path = _offbeat(env, base[1])
    samples, beats = beat_track(120, 12.0, first_s=0.1, accent=True, hats=True)
    music = write_wav(env / "beat120.wav", samples, 22050)
    result = await video_flow(script=path, music=str(music), **SIZE)
    assert result.snapped and len(result.cuts_s) == 2
    for cut in result.cuts_s:
        assert min(abs(cut - b) for b in beats) <= 1 / 16, (cut, result.cuts_s)
    assert result.cuts_s != [37 / 16, 123 / 16]
    assert result.frames == 160 and "beats" in executed(result, "process") and "music" not in executed(result)
    assert any("snapped to the music's beat grid (120.0 BPM): 2 of 2" in n for n in result.notes), result.notes
    info = probe(result.video.uri.removeprefix("file://"))
    assert info.frame_count == 160
    # a track without a pulse leaves the cuts as written, and says so
    drone = write_wav(env / "drone.wav", tone(220.0, 12.0, rate=22050), 22050)
    plain = await video_flow(script=path, music=str(drone), **SIZE)
    assert not plain.snapped and plain.cuts_s == [37 / 16, 123 / 16]
    assert any("no steady pulse" in n for n in plain.notes), plain.notes
    # off: the beat track is used as written, the cuts stay (the animations are the drone run's, from cache)
    off = await video_flow(script=path, music=str(music), snap_to_beat="off", **SIZE)
    assert not off.snapped and off.cuts_s == [37 / 16, 123 / 16] and "beats" not in executed(off)
    assert not executed(off, "gpu")


async def test_snap_on_with_generated_music_makes_the_music_first(
        env: Path, base: tuple[VideoResult, dict[str, Any]]) -> None:
    result = await video_flow(script=_offbeat(env, base[1]), snap_to_beat="on", **SIZE)
    manifest = read_manifest(LocalStore(env / "store"), result.manifest_key)
    grid = next(s for s in manifest.stages if s.job_id.endswith("-beats")).record
    assert grid["bpm"] > 0 and any(j["job"].endswith("-music") for j in result.jobs)
    assert result.snapped and result.frames == 160
    for cut in result.cuts_s:
        assert min(abs(cut - b) for b in grid["beats_s"]) <= 1 / 16, (cut, grid)


async def test_pose_image_drives_the_cast_scenes_keyframes(
        env: Path, base: tuple[VideoResult, dict[str, Any]]) -> None:
    from PIL import Image, ImageDraw

    pose = env / "pose.png"
    image = Image.new("RGB", (512, 512))
    draw = ImageDraw.Draw(image)
    for (x0, y0, x1, y1), colour in (((256, 100, 256, 300), (255, 0, 0)), ((180, 180, 330, 180), (0, 255, 0)),
                                     ((256, 300, 200, 460), (0, 0, 255)), ((256, 300, 310, 460), (255, 255, 0))):
        draw.line((x0, y0, x1, y1), fill=colour, width=8)
    image.save(pose)
    result = await video_flow(script=str(env / "base.json"), pose=str(pose), **SIZE)
    stages = {r["job"].removeprefix(f"{result.slug}-v{result.version}-"): r for r in result.jobs}
    assert stages["s02-keyframe-start"]["stage"] == "keyframe_pose"  # Mina on screen: the pose
    assert stages["s01-keyframe-start"]["stage"] == "character_base_realistic"  # nobody of the cast: text only
    assert "s02-keyframe-start" in executed(result, "gpu")
    store = LocalStore(env / "store")
    manifest = read_manifest(store, result.manifest_key)
    posed = next(s for s in manifest.stages if s.job_id.endswith("s02-keyframe-start"))
    end = next(s for s in manifest.stages if s.job_id.endswith("s03-keyframe-end"))  # keyframe_ipadapter's identity
    mina = resolve_cast(store, ["Mina"])["Mina"]
    assert posed.inputs["pose"].sha256 == hashlib.sha256(pose.read_bytes()).hexdigest()
    assert posed.inputs["reference"].sha256 == mina.base.sha256 == end.inputs["reference"].sha256
    assert posed.params["lora"] == end.params["lora"] and posed.params["lora"].endswith(".safetensors")
    assert any(t.new for t in result.takes if t.scene == 2)  # a new keyframe is a new take of the shot
    assert not any("--pose" in n for n in result.notes)  # the posed keyframe keeps the identity: nothing to say


async def test_script_with_the_same_cast_as_characters_runs(
        env: Path, base: tuple[VideoResult, dict[str, Any]]) -> None:
    result = await video_flow(script=str(env / "base.json"), characters=" Mina ", **SIZE)
    assert result.executed == 0 and result.video.key == base[0].video.key  # the same production, all cached


async def _refused(**params: Any) -> InputRejected:
    state = await video_flow(**params, return_state=True)  # type: ignore[call-overload]
    result: Any = state.result(raise_on_failure=False)
    if asyncio.iscoroutine(result):
        result = await result
    assert isinstance(result, InputRejected), result  # `reelforge run` exits 2 for it
    return result


async def test_bad_input_is_refused_naming_what(env: Path, mina: str, tmp_path: Path) -> None:
    store_dir = env / "store"
    before = sorted(p for p in store_dir.rglob("*") if p.is_file() and ".prefect" not in str(p))
    error = await _refused(brief="x", duration=0)
    assert isinstance(error, DurationRejected) and "--duration" in str(error)
    error = await _refused(brief="x", duration=100000)
    assert isinstance(error, DurationRejected) and "REELFORGE_SCRIPT_MAX_DURATION_S" in str(error)
    error = await _refused(brief="x", duration=10, characters="Nobody Here")
    assert isinstance(error, UnknownCharacter) and "'Nobody Here'" in str(error)
    notes = tmp_path / "notes.mp3"
    notes.write_text("not audio at all")
    error = await _refused(brief="x", duration=10, music=str(notes))
    assert isinstance(error, MusicRejected) and "--music" in str(error)
    error = await _refused(brief="x", duration=10, characters=mina, pose=str(notes))
    assert isinstance(error, PoseRejected) and "--pose" in str(error) and error.field == "pose"
    error = await _refused(script=str(env / "base.json"), characters="Mina,Jun")
    assert isinstance(error, CastMismatch) and error.given == ["Mina", "Jun"] and error.script == ["Mina"]
    assert "--characters 'Mina,Jun'" in str(error) and "--script" in str(error) and "'Mina')" in str(error)
    bad = tmp_path / "bad.json"
    script = json.loads((env / "base.json").read_text())
    script["scenes"][1]["duration_s"] = 0
    bad.write_text(json.dumps(script))
    error = await _refused(script=str(bad))
    assert isinstance(error, ScriptRejected) and "scene 2: duration_s" in str(error)
    after = sorted(p for p in store_dir.rglob("*") if p.is_file() and ".prefect" not in str(p))
    assert [p for p in before if p in after] == before  # nothing stored before was removed
    assert all(p.stat().st_size > 0 for p in before)


async def test_character_without_lora_is_refused_naming_it(env: Path) -> None:
    await character_flow(name="Jun", variations=1, intro=False, lora=False, width=256, height=256)
    error = await _refused(brief="Jun bakes", duration=10, characters="Jun")
    assert isinstance(error, CharacterIncomplete) and error.name == "Jun" and "no LoRA" in str(error)


async def test_the_same_brief_again_reuses_the_written_script(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An LLM answers differently each time: the script stage keeps the first answer for the same brief and
    writer, so a re-run asks nothing and makes nothing again."""
    from reelforge.script import Brief, OfflineWriter
    from reelforge.script.fake_llm import FakeLLM, Reply

    brief = Brief(text="A kite over the harbour", target_duration_s=6, characters=[])
    draft = OfflineWriter().compose(brief, ScriptLimits())
    answers = iter(range(1, 100))

    def another_take(_: dict[str, Any]) -> Reply:
        return Reply.script(draft.model_copy(update={"title": f"Kite take {next(answers)}"}))

    async with FakeLLM(api_key="sk-script-stage-test", default=another_take) as llm:
        monkeypatch.setenv("REELFORGE_LLM_BASE_URL", llm.url)
        monkeypatch.setenv("REELFORGE_LLM_API_KEY", "sk-script-stage-test")
        first = await video_flow(brief=brief.text, duration=6, width=320, height=320)
        again = await video_flow(brief=brief.text, duration=6, width=320, height=320)
        asked = len(llm.requests)
        monkeypatch.setenv("REELFORGE_LLM_MODEL", "another-model")  # another writer: a new script
        other = await video_flow(brief=brief.text, duration=6, width=320, height=320)
    assert first.title == again.title == "Kite take 1" and asked == 1
    assert again.executed == 0 and again.video == first.video
    assert "script" in executed(first) and "script" not in executed(again)
    assert other.title == "Kite take 2"
    manifest = read_manifest(LocalStore(env / "store"), first.manifest_key)
    writer = next(s for s in manifest.stages if s.stage == "script").params["writer"]
    assert writer["base_url"] == llm.url.rstrip("/") and "sk-script-stage-test" not in json.dumps(writer)
