"""Video flow: a brief (or an edited script) becomes a finished, verified video; every step a cached stage.

    brief -> script (offline writer, or an LLM) stored as JSON -> the cast from the character records
    -> per scene, at once:   keyframe (identity: the on-screen character's LoRA + reference image through
                             IP-Adapter, posed by the OpenPose ControlNet with --pose; without one, from the scene
                             prompt alone) [+ the end frame's keyframe]
                             voice lines (each speaker's voice cloned from its sample; a narrator's designed voice)
    -> music (the ``music`` template from the mood and duration, or the supplied file; with a beat snap made
       first, before planning: its beat grid moves the cuts to beats)
    -> per chain of segments: animation (image_to_video; first_last_frame for a described end frame), each chained
       segment seeded by the exact last frame shown of the one before, a fresh keyframe after ``max_chain``
    -> per scene with an on-screen speaker: its speech track and windows (cut also where the on-screen speaker
       changes; each window hears only its speaker and its prompt names who speaks, where) -> talking_video per
       window -> joined to the exact frame count
    -> assembly (reelforge.media: cuts, dialogue over ducked music, loudness, SRT, burn-in, poster, timeline PNG),
       verified -> the production manifest (the takes it uses) -> ``reelforge.video.ready``

Shots are stored as takes (``productions/<slug>/scene-NN/shot-NN/take-NN/``): a shot whose identity changed gets
the next take, earlier takes stay. Caching is by content (tasks/stage.py), so an edited scene re-executes only what
depends on it. On the preview worker the same flow gives a timed animatic (docs/video.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from prefect import flow
from pydantic import BaseModel, Field
from rich.console import Console
from rich.table import Table

from flows.character import _local_copy
from reelforge.engine import Engine, open_engine
from reelforge.hashing import sha256_file
from reelforge.jobs import validate_on_pool
from reelforge.liveness import Holder
from reelforge.media import (
    AudioTarget,
    BeatGrid,
    BeatSnap,
    Clip,
    Cue,
    DialogueLine,
    MediaCheckFailed,
    MusicBed,
    SubtitleStyle,
    Timeline,
    VideoTarget,
    audio_stage,
    timeline_beats,
)
from reelforge.script import (
    NARRATOR,
    Brief,
    Scene,
    Script,
    ScriptValidationError,
    check_brief,
    dump_script,
    load_script,
    parse_script,
    script_stage_params,
)
from reelforge.settings import ScriptLimits, Settings
from reelforge.storage import (
    ArtifactRef,
    Manifest,
    StageRecord,
    content_key,
    open_store,
    production_part_prefix,
    production_prefix,
    production_shot_prefix,
    run_manifest_key,
    safe_slug,
    write_manifest,
)
from reelforge.video import (
    CastMember,
    CastMismatch,
    DurationRejected,
    MusicRejected,
    PoseRejected,
    ScenePlan,
    ScriptRejected,
    SegmentPlan,
    VideoInputError,
    keyframe_identities,
    lipsync_plan,
    place_lines,
    placement_text,
    plan_scenes,
    resolve_cast,
    shot_identity,
    snap_spans,
    speaker_prompt,
    take_for,
)
from tasks.artifacts import job_rows, publish_summary
from tasks.cancellation import cancel_scope, on_cancellation, on_crashed
from tasks.context import current_flow_run_id
from tasks.events import video_ready
from tasks.gpu import template_named
from tasks.progress import FlowProgress
from tasks.stage import Stage, StageRunner
from tasks.stages import ASSEMBLE, AUDIO_CHECK, BEATS, FRAME, LIPSYNC_JOIN, SCRIPT, SPEECH

__all__ = ["VideoResult", "print_video_summary", "video_flow"]

FPS = 16.0  # Wan's rate: every clip is generated, trimmed and assembled at it
LIPSYNC_WINDOW = 77  # talking_video's chunk (Wan S2V: 77 frames, 4.8 s)
NARRATOR_VOICE = "a calm, warm adult narrator, clear articulation, medium pace"
TEXT_KEYFRAME = "character_base_realistic"  # text-to-image (Flux) for scenes with nobody of the cast on screen
POSE_KEYFRAME = "keyframe_pose"  # keyframe_ipadapter's identity + OpenPose ControlNet, for --pose
IDENTITY_KEYFRAME = "keyframe_ipadapter"  # one on-screen character's LoRA + its reference image through IP-Adapter
TWO_SHOT_KEYFRAME = "keyframe_two_shot"  # two characters' LoRAs + each one's reference on its half (left, right)


class TakeRef(BaseModel):
    scene: int
    shot: int
    take: int
    new: bool
    place: str


class VideoResult(BaseModel):
    title: str
    slug: str
    version: int
    script_key: str
    script_uri: str
    video: ArtifactRef
    srt: ArtifactRef
    poster: ArtifactRef
    timeline: ArtifactRef
    duration_s: float
    frames: int
    loudness_lufs: float | None = None
    scenes: int
    cuts_s: list[float] = Field(default_factory=list)  # where each scene after the first starts
    snapped: bool = False  # the cuts were snapped to the music's beat grid
    takes: list[TakeRef]
    notes: list[str] = Field(default_factory=list)
    jobs: list[dict[str, Any]]
    executed: int
    cached: int
    gpu_seconds: float
    cost: float
    wall_s: float
    manifest_key: str
    manifest_uri: str
    run_manifest_key: str | None = None
    flow_run_id: str | None = None


# ---------------------------------------------------------------------------------------------- bad input


def _names(characters: str) -> list[str]:
    return [n.strip() for n in characters.split(",") if n.strip()]


def _given_file(value: str | None, field: str, rejected: type[VideoInputError]) -> Path | None:
    """The file an option names (None when not given), or ``rejected`` naming ``--<field>`` when it is not one."""
    if value is None or not value.strip():
        return None
    path = Path(value).expanduser()
    if not path.is_file():
        raise rejected(f"--{field} {value!r}: not a readable file", field=field)
    return path


def _music_file(music: str | None) -> Path | None:
    """The supplied music as a readable audio file, or a field error before anything runs."""
    path = _given_file(music, "music", MusicRejected)
    if path is None:
        return None
    try:
        audio_stage({"audio": path}, {"min_s": 1.0}, path.parent)
    except MediaCheckFailed as exc:
        raise MusicRejected(f"--music {music!r}: not usable as music: {exc.message}", field="music") from exc
    return path


def _pose_file(pose: str | None) -> Path | None:
    """The supplied pose as a readable image file, or a field error before anything runs."""
    path = _given_file(pose, "pose", PoseRejected)
    if path is None:
        return None
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise PoseRejected(f"--pose {pose!r}: not an image (an OpenPose skeleton PNG or JPEG): {exc}",
                           field="pose") from exc
    return path


def _rejected(exc: ScriptValidationError) -> ScriptRejected:
    return ScriptRejected(str(exc), problems=[str(p) for p in exc.problems])


@dataclass(frozen=True)
class CheckedInputs:
    """The video flow's inputs after the checks that need no worker and no store."""

    edited: Script | None
    names: list[str]
    music: Path | None
    pose: Path | None


def check_video_inputs(
    *, brief: str | None, script: str | None, duration: float, characters: str, music: str | None,
    pose: str | None, limits: ScriptLimits,
) -> CheckedInputs:
    """Refuse bad input naming the field (or the script's scene) before anything runs: ``reelforge run video``
    calls this before the flow starts, and the flow again for callers from Python or a deployment."""
    edited: Script | None = None
    if script is not None:
        try:
            edited = load_script(script, limits)
        except ScriptValidationError as exc:
            raise _rejected(exc) from exc
    elif brief is None or not brief.strip():
        raise ScriptRejected("--brief: give a brief (or --script FILE)", problems=["brief: missing"])
    elif not 0 < duration <= limits.max_duration_s:
        raise DurationRejected(
            f"--duration: {duration:g} s is not within (0, {limits.max_duration_s:g}] s "
            f"(REELFORGE_SCRIPT_MAX_DURATION_S)", field="duration")
    names = list(edited.characters) if edited is not None else _names(characters)
    if edited is not None and _names(characters) and set(_names(characters)) != set(names):
        given = _names(characters)
        raise CastMismatch(
            f"--characters {','.join(given)!r} differs from the cast of --script {script!r} "
            f"({','.join(names) or 'no characters'!r}): give the same names, or leave --characters out to use "
            f"the script's", given=given, script=names)
    return CheckedInputs(edited=edited, names=names, music=_music_file(music), pose=_pose_file(pose))


def preflight(params: Mapping[str, Any]) -> None:
    """``reelforge run video``'s check before the flow starts (raises ``InputRejected``): the inputs, then the
    cast against the store's character records (the flow checks both again for Python and deployment callers)."""
    settings = Settings.load()
    checked = check_video_inputs(brief=params.get("brief"), script=params.get("script"), duration=params["duration"],
                                 characters=params.get("characters") or "", music=params.get("music"),
                                 pose=params.get("pose"), limits=settings.script)
    if checked.names:
        resolve_cast(open_store(settings.store), checked.names)


# ---------------------------------------------------------------------------------------------- the run


class _Production:
    """What the steps of one production run share."""

    def __init__(self, engine: Engine, stages: StageRunner, script: Script, slug: str, version: int,
                 cast: dict[str, CastMember], *, width: int, height: int, seed: int, max_chain: int,
                 pose: ArtifactRef | None = None) -> None:
        self.engine, self.stages, self.script, self.slug, self.version = engine, stages, script, slug, version
        self.cast = cast
        self.width, self.height, self.seed = width, height, seed
        self.plans = plan_scenes(script, fps=FPS, segment_frames=engine.settings.script.segment_frames,
                                 max_chain=max_chain)
        self.scenes = {s.number: s for s in script.scenes}
        self.takes: dict[tuple[int, int], TakeRef] = {}
        self.lora_names: dict[str, str] = {}
        self.lipsyncs: dict[int, dict[str, Any]] = {}  # per scene: its lip-sync windows and whom each one syncs
        self.notes: list[str] = [m.voice_note for m in cast.values() if m.voice_note]
        self.pose = pose  # an OpenPose image for the start keyframes of scenes with a cast member on screen
        self.music_ref: ArtifactRef | None = None  # known before planning when the cuts are snapped to it
        self.snapped = False
        self.segment_frames = engine.settings.script.segment_frames
        self.max_chain = max_chain

    def tag(self, scene: int, what: str) -> str:
        return f"{self.slug}-v{self.version}-s{scene:02d}-{what}"

    def context(self) -> dict[str, object]:
        context: dict[str, object] = {"style": self.script.style, "size": [self.width, self.height],
                                      "seed": self.seed, "cast": {n: m.identity() for n, m in self.cast.items()}}
        if self.pose is not None:
            context["pose"] = self.pose.sha256
        return context

    def claim_takes(self) -> None:
        """Every shot's take, in order (a chained shot's identity includes the one it continues)."""
        previous: str | None = None
        context = self.context()
        for plan in self.plans:
            scene = self.scenes[plan.number]
            for segment in plan.segments:
                identity = shot_identity(scene, segment, context, previous if segment.start == "chain" else None)
                take, new = take_for(self.engine.store, self.slug, segment.scene, segment.shot, identity,
                                     {"scene_fields": scene.model_dump(mode="json")})
                self.takes[(segment.scene, segment.shot)] = TakeRef(
                    scene=segment.scene, shot=segment.shot, take=take, new=new,
                    place=production_shot_prefix(self.slug, segment.scene, segment.shot, take))
                previous = identity

    def place(self, scene: int, shot: int = 1, part: str = "") -> str:
        base = self.takes[(scene, shot)].place
        return f"{base}{part}/" if part else base

    async def gpu(self, template: str, params: dict[str, Any], place: str, job: str,
                  inputs: dict[str, ArtifactRef] | None = None) -> StageRecord:
        return await self.stages.run(Stage.gpu(template), params, place=place, job_id=job, inputs=inputs)

    async def cpu(self, stage: Stage, params: dict[str, Any], place: str, job: str,
                  inputs: dict[str, ArtifactRef]) -> StageRecord:
        return await self.stages.run(stage, params, place=place, job_id=job, inputs=inputs)

    # -- keyframes ------------------------------------------------------------------------------------

    def keyframe_size(self) -> dict[str, int]:
        scale = max(1.0, 512 / min(self.width, self.height))
        return {"width": min(2048, math.ceil(self.width * scale / 64) * 64),
                "height": min(2048, math.ceil(self.height * scale / 64) * 64)}

    def keyframe_prompt(self, scene: Scene, text: str) -> str:
        """The scene card: number, framing, what it shows and, with two or more characters, who stands where (the
        lip sync's prompts name the same places; a real model reads the framing and the text; the preview worker
        draws it, which makes the animatic's scene cards)."""
        shot = scene.shot_type.replace("_", " ")
        framing = shot if shot.endswith("shot") else f"{shot} shot"  # "two shot", not "two shot shot"
        staging = placement_text(scene.characters)
        return f"Scene {scene.number}, {framing}: {text}. {f'{staging}. ' if staging else ''}Style: {self.script.style}"

    async def keyframe(self, scene: Scene, text: str, what: str) -> ArtifactRef:
        size = self.keyframe_size()
        seed = self.seed + 1000 * scene.number + (1 if what == "end" else 0)
        prompt = self.keyframe_prompt(scene, text)
        pose = self.pose if what == "start" else None  # one identity, posed by the OpenPose ControlNet
        identities = keyframe_identities(scene.characters, self.cast, posed=pose is not None)
        params: dict[str, Any] = {"prompt": prompt, "seed": seed, **size}
        inputs: dict[str, ArtifactRef] = {}
        for name, suffix in zip(identities, ("", "_b"), strict=False):  # left (the first listed), then right
            params[f"lora{suffix}"] = self.lora_names[name]
            inputs[f"reference{suffix}"] = self.cast[name].base
        if pose is not None and identities:
            inputs["pose"] = pose
        made = await self.gpu(_keyframe_template(identities, pose is not None), params,
                              self.place(scene.number, 1, "keyframe"), self.tag(scene.number, f"keyframe-{what}"),
                              inputs or None)
        return made.refs[0]

    async def keyframes(self) -> dict[tuple[int, str], ArtifactRef]:
        jobs: dict[tuple[int, str], Awaitable[ArtifactRef]] = {}
        for plan in self.plans:
            scene = self.scenes[plan.number]
            if plan.keyframe:
                jobs[(plan.number, "start")] = self.keyframe(scene, scene.description, "start")
            if scene.end_frame:
                jobs[(plan.number, "end")] = self.keyframe(scene, scene.end_frame, "end")
        made = await asyncio.gather(*jobs.values())
        return dict(zip(jobs, made, strict=True))

    # -- voices ---------------------------------------------------------------------------------------

    async def line(self, scene: Scene, index: int) -> tuple[ArtifactRef, float]:
        line = scene.dialogue[index]
        member = self.cast.get(line.speaker)
        place = self.place(scene.number, 1, "voice")
        job = self.tag(scene.number, f"line{index + 1}")
        if member is not None and member.voice is not None:
            params: dict[str, Any] = {"text": line.text, "seed": self.seed}
            if member.voice_text:
                params |= {"ref_text": member.voice_text, "x_vector_only": False}
            made = await self.gpu("voice_clone", params, place, job, {"audio": member.voice})
        else:
            description = member.voice_description if member is not None else NARRATOR_VOICE
            made = await self.gpu("voice_design", {"text": line.text, "voice": description, "seed": self.seed},
                                  place, job)
        facts = await self.cpu(AUDIO_CHECK, {"min_s": 0.1}, place, f"{job}-check", {"audio": made.refs[0]})
        return made.refs[0], float(facts.record["duration_s"])

    async def voices(self) -> dict[tuple[int, int], tuple[ArtifactRef, float]]:
        keys = [(s.number, i) for s in self.script.scenes for i in range(len(s.dialogue))]
        made = await asyncio.gather(*(self.line(self.scenes[n], i) for n, i in keys))
        return dict(zip(keys, made, strict=True))

    # -- music ----------------------------------------------------------------------------------------

    async def music(self, supplied: Path | None) -> ArtifactRef:
        if supplied is not None:
            sha, _ = await asyncio.to_thread(sha256_file, supplied)
            key = content_key(production_part_prefix(self.slug, "music"), sha, supplied.suffix)
            return await asyncio.to_thread(self.engine.store.put_file, supplied, key)
        seconds = min(240.0, max(5.0, math.ceil(self.script.duration_s) + 1.0))
        made = await self.gpu("music", {"tags": f"{self.script.audio_mood}, instrumental", "seconds": seconds,
                                        "seed": self.seed},
                              production_part_prefix(self.slug, "music"), f"{self.slug}-v{self.version}-music")
        return made.refs[0]

    async def snap_to_music(self, supplied: Path | None) -> None:
        """Before anything is animated: the music (supplied, or generated first), its beat grid (BEATS), and the
        scene cuts moved to the nearest beats (total unchanged, no scene under the minimum); the plans are made
        again on the snapped frames, so every segment, lip sync and the assembly use them."""
        self.music_ref = await self.music(supplied)
        facts = await self.cpu(BEATS, {}, production_part_prefix(self.slug, "music"),
                               f"{self.slug}-v{self.version}-beats", {"music": self.music_ref})
        record = facts.record
        bpm = float(record.get("bpm") or 0.0)
        beats = [float(b) for b in record.get("beats_s") or []]
        if len(self.plans) < 2:
            return
        if bpm <= 0 or not beats:
            self.notes.append("the music has no steady pulse: the cuts are left as the script times them")
            return
        total = sum(p.frames for p in self.plans)
        grid = BeatGrid(bpm=bpm, period_s=60.0 / bpm, first_s=float(record.get("first_s") or beats[0]),
                        beats=beats, duration_s=float(record.get("duration_s") or 0.0),
                        confidence=float(record.get("confidence") or 0.0), peak_db=0.0)
        on_timeline = timeline_beats(grid, offset_s=0.0, loop=True, duration_s=total / FPS)  # the MusicBed's
        limits, rules = self.engine.settings.script, BeatSnap()
        result = snap_spans([(p.first_frame, p.frames) for p in self.plans], on_timeline, fps=FPS,
                            tolerance_s=rules.tolerance_s,
                            min_frames=math.ceil(max(rules.min_scene_s, limits.min_scene_s) * FPS),
                            max_frames=limits.max_segments_per_scene * (self.segment_frames - 1))
        self.plans = plan_scenes(self.script, fps=FPS, segment_frames=self.segment_frames, max_chain=self.max_chain,
                                 spans=result.spans)
        moved = sum(result.snapped)
        worst = max((abs(e) for e in result.errors_s if e is not None), default=0.0)
        self.snapped = moved > 0
        self.notes.append(f"cuts snapped to the music's beat grid ({bpm:.1f} BPM): {moved} of {len(result.snapped)}"
                          f" cuts on a beat (within {worst * 1000:.0f} ms)")

    # -- animation ------------------------------------------------------------------------------------

    def motion_prompt(self, scene: Scene) -> str:
        return f"{scene.camera.replace('_', ' ')} camera. {scene.motion_prompt}"

    async def segment(self, segment: SegmentPlan, image: ArtifactRef,
                      keys: dict[tuple[int, str], ArtifactRef]) -> ArtifactRef:
        scene = self.scenes[segment.scene]
        size = {"width": self.width, "height": self.height}
        common = {"prompt": self.motion_prompt(scene), "seed": self.seed + 100 * segment.scene + segment.shot,
                  "length": segment.length, "fps": FPS, **size}
        place = self.place(segment.scene, segment.shot, "animation")
        job = self.tag(segment.scene, f"shot{segment.shot}-animation")
        if segment.end_frame:
            made = await self.gpu("first_last_frame", common, place, job,
                                  {"first_frame": image, "last_frame": keys[(segment.scene, "end")]})
        else:
            made = await self.gpu("image_to_video", common, place, job, {"image": image})
        return made.refs[0]

    async def chain(self, segments: list[SegmentPlan],
                    keys: dict[tuple[int, str], ArtifactRef]) -> dict[tuple[int, int], ArtifactRef]:
        """One chain: a fresh keyframe's segment, then each next one seeded by the exact last frame shown."""
        clips: dict[tuple[int, int], ArtifactRef] = {}
        previous: tuple[SegmentPlan, ArtifactRef] | None = None
        for segment in segments:
            if segment.start == "keyframe":
                image = keys[(segment.scene, "start")]
            else:
                assert previous is not None
                before, clip = previous
                last = int(before.skip_first) + before.shown - 1
                frame = await self.cpu(FRAME, {"index": last, "fps": FPS},
                                       self.place(segment.scene, segment.shot, "seed"),
                                       self.tag(segment.scene, f"shot{segment.shot}-seed"), {"video": clip})
                image = frame.refs[0]
            clip = await self.segment(segment, image, keys)
            clips[(segment.scene, segment.shot)] = clip
            previous = (segment, clip)
        return clips

    async def animations(self, keys: dict[tuple[int, str], ArtifactRef]) -> dict[tuple[int, int], ArtifactRef]:
        chains: list[list[SegmentPlan]] = []
        for plan in self.plans:
            for segment in plan.segments:
                if segment.start == "keyframe" or not chains:
                    chains.append([segment])
                else:
                    chains[-1].append(segment)
        done = await asyncio.gather(*(self.chain(c, keys) for c in chains))
        return {k: v for part in done for k, v in part.items()}

    # -- lip sync -------------------------------------------------------------------------------------

    async def lipsync(self, plan: ScenePlan, clips: dict[tuple[int, int], ArtifactRef],
                      lines: dict[tuple[int, int], tuple[ArtifactRef, float]]) -> tuple[int, ArtifactRef] | None:
        """The scene's lip-synced tail (from the first on-screen line), or None. Each window lip-syncs one speaker:
        it hears only that speaker's lines and its prompt names who speaks, where, and to whom."""
        scene = self.scenes[plan.number]
        durations = [lines[(scene.number, i)][1] for i in range(len(scene.dialogue))]
        starts = place_lines(plan.frames / FPS, durations)
        lip = lipsync_plan(scene, plan, starts, durations, FPS, LIPSYNC_WINDOW)
        if lip is None:
            return None
        span_s = lip.start / FPS
        spoken = [i for i, line in enumerate(scene.dialogue) if line.speaker in scene.characters]
        inputs = {f"line{j}": lines[(scene.number, i)][0] for j, i in enumerate(spoken)}
        place = self.place(scene.number, 1, "lipsync")
        speech = await self.cpu(SPEECH, {"offsets_s": [round(starts[i] - span_s, 4) for i in spoken],
                                         "line_speakers": [scene.dialogue[i].speaker for i in spoken],
                                         "windows": lip.windows, "speakers": lip.speakers, "fps": FPS},
                                place, self.tag(scene.number, "speech"), inputs)
        # The face: the animation's frame where the lip sync starts.
        at, shot_clip, local = lip.start, None, 0
        for segment in plan.segments:
            if at < segment.shown:
                shot_clip, local = clips[(scene.number, segment.shot)], int(segment.skip_first) + at
                break
            at -= segment.shown
        assert shot_clip is not None
        face = await self.cpu(FRAME, {"index": local, "fps": FPS}, place, self.tag(scene.number, "lipsync-face"),
                              {"video": shot_clip})
        size = {"width": min(1280, self.width), "height": min(1280, self.height)}
        windows = speech.refs[1:]
        motion = self.motion_prompt(scene)
        chunks = await asyncio.gather(*(
            self.gpu("talking_video", {"prompt": f"{speaker_prompt(who, scene.characters)}. {motion}",
                                       "seed": self.seed + 10 * scene.number + w, "length": lip.lengths[w],
                                       "fps": FPS, **size},
                     place, self.tag(scene.number, f"lipsync{w + 1}"), {"image": face.refs[0], "audio": windows[w]})
            for w, who in enumerate(lip.speakers)
        ))
        joined = await self.cpu(LIPSYNC_JOIN, {"windows": lip.windows, "speakers": lip.speakers, "fps": FPS}, place,
                                self.tag(scene.number, "lipsync-join"),
                                {"speech": speech.refs[0], **{f"chunk{w}": c.refs[0] for w, c in enumerate(chunks)}})
        self.lipsyncs[scene.number] = {
            "start": lip.start, "clip": joined.refs[0].key,
            "windows": [{"job": self.tag(scene.number, f"lipsync{w + 1}"), "frames": frames, "speaker": who}
                        for w, (frames, who) in enumerate(zip(lip.windows, lip.speakers, strict=True))]}
        return lip.start, joined.refs[0]

    # -- assembly -------------------------------------------------------------------------------------

    def timeline(self, clips: dict[tuple[int, int], ArtifactRef], lips: dict[int, tuple[int, ArtifactRef]],
                 lines: dict[tuple[int, int], tuple[ArtifactRef, float]], music: ArtifactRef, *,
                 burn: bool, loudness: float) -> tuple[Timeline, dict[str, ArtifactRef]]:
        inputs: dict[str, ArtifactRef] = {"music": music}
        timeline_clips: list[Clip] = []
        dialogue: list[DialogueLine] = []
        cues: list[Cue] = []
        total_s = sum(p.frames for p in self.plans) / FPS
        for plan in self.plans:
            scene = self.scenes[plan.number]
            limit = lips[plan.number][0] if plan.number in lips else plan.frames
            used = 0
            for segment in plan.segments:
                take = min(segment.shown, limit - used)
                if take <= 0:
                    break
                name = f"s{plan.number:02d}shot{segment.shot}"
                inputs[name] = clips[(plan.number, segment.shot)]
                skip = int(segment.skip_first)
                timeline_clips.append(Clip(path=name, in_s=skip / FPS, out_s=(skip + take) / FPS, audio=False,
                                           label=f"scene {plan.number}" + (f" shot {segment.shot}"
                                                                           if len(plan.segments) > 1 else "")))
                used += take
            if plan.number in lips:
                name = f"s{plan.number:02d}lipsync"
                inputs[name] = lips[plan.number][1]
                timeline_clips.append(Clip(path=name, audio=False, label=f"scene {plan.number} lip sync"))
            durations = [lines[(scene.number, i)][1] for i in range(len(scene.dialogue))]
            starts = place_lines(plan.frames / FPS, durations)
            scene_start = plan.first_frame / FPS
            for i, (line, start, duration) in enumerate(zip(scene.dialogue, starts, durations, strict=True)):
                name = f"s{plan.number:02d}line{i + 1}"
                inputs[name] = lines[(scene.number, i)][0]
                at = round(scene_start + start, 4)
                speaker = None if line.speaker == NARRATOR else line.speaker
                dialogue.append(DialogueLine(path=name, start_s=at, speaker=speaker, text=line.text))
                end = min(total_s - 0.01, at + duration)
                if end > at:
                    cues.append(Cue(start_s=at, end_s=round(end, 4), text=line.text, speaker=speaker))
        timeline = Timeline(
            clips=timeline_clips, dialogue=dialogue, music=MusicBed(path="music"), cues=cues,
            video=VideoTarget(width=self.width, height=self.height, fps=FPS),
            audio=AudioTarget(loudness_lufs=loudness), subtitles=SubtitleStyle(burn=burn),
        )
        return timeline, inputs


def _keyframe_template(identities: list[str], posed: bool) -> str:
    """The keyframe template for the identities a keyframe carries (``keyframe_identities``, left first)."""
    if not identities:
        return TEXT_KEYFRAME
    if posed:
        return POSE_KEYFRAME
    return TWO_SHOT_KEYFRAME if len(identities) > 1 else IDENTITY_KEYFRAME


def _templates(script: Script, plans: list[ScenePlan], cast: dict[str, CastMember], music: bool,
               pose: bool = False) -> list[str]:
    names: set[str] = set()
    for plan, scene in zip(plans, script.scenes, strict=True):
        if plan.keyframe:
            names.add(_keyframe_template(keyframe_identities(scene.characters, cast, posed=pose), pose))
        if scene.end_frame:
            names.add(_keyframe_template(keyframe_identities(scene.characters, cast), False))
        for segment in plan.segments:
            names.add("first_last_frame" if segment.end_frame else "image_to_video")
        for line in scene.dialogue:
            member = cast.get(line.speaker)
            names.add("voice_clone" if member is not None and member.voice is not None else "voice_design")
            if line.speaker in scene.characters:
                names.add("talking_video")
    if music:
        names.add("music")
    return sorted(names)


@flow(name="reelforge-video", log_prints=True, on_cancellation=[on_cancellation], on_crashed=[on_crashed])
async def video_flow(
    brief: Annotated[str | None, Field(description="what the video is about (or give --script)")] = None,
    duration: Annotated[float, Field(description="target duration in seconds")] = 30.0,
    characters: Annotated[str, Field(description="the cast by character name, comma-separated (A,B)")] = "",
    music: Annotated[str | None, Field(description="a music file to use instead of generating music")] = None,
    burn_subtitles: Annotated[bool, Field(description="draw the subtitles into the picture (SRT always)")] = False,
    loudness: Annotated[float, Field(ge=-70, le=-5, description="loudness target, LUFS")] = -14.0,
    script: Annotated[str | None, Field(description="an edited script file (JSON) to produce instead")] = None,
    style: Annotated[str, Field(min_length=1, description="the visual style")] = "cinematic",
    mood: Annotated[str | None, Field(description="the music's mood (default: the writer's)")] = None,
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] = 0,
    width: Annotated[int, Field(ge=320, le=1920, multiple_of=16)] = 1280,
    height: Annotated[int, Field(ge=320, le=1920, multiple_of=16)] = 704,
    max_chain: Annotated[int, Field(ge=1, le=20, description="chained segments before a fresh keyframe")] = 6,
    pose: Annotated[str | None, Field(
        description="an OpenPose skeleton image for the keyframes of scenes with a character on screen "
                    "(keyframe_pose)")] = None,
    snap_to_beat: Annotated[Literal["auto", "on", "off"], Field(
        description="move the cuts to the music's beats before animating (auto: on with --music, off when the "
                    "music is generated)")] = "auto",
    production: Annotated[str | None, Field(description="the production's folder name (default: the title)")] = None,
) -> VideoResult:
    """Make a video from a brief (or an edited script): script, keyframes, animation, voices, lip sync, music,
    assembly; every step a cached stage."""
    started = time.monotonic()
    settings = Settings.load()
    limits = settings.script
    checked = await asyncio.to_thread(check_video_inputs, brief=brief, script=script, duration=duration,
                                      characters=characters, music=music, pose=pose, limits=limits)
    edited, names, supplied, pose_path = checked.edited, checked.names, checked.music, checked.pose
    flow_run_id = current_flow_run_id()
    async with open_engine(settings) as engine:
        store = engine.store
        cast = await asyncio.to_thread(resolve_cast, store, names)  # unknown or incomplete: refused here
        if edited is None:
            try:
                the_brief = check_brief(Brief(text=brief or "", target_duration_s=duration, characters=names,
                                              style=style, mood=mood, seed=seed), limits, list(cast))
                # A cached stage: the same brief and writer give back the same script (an LLM would answer
                # differently each time, and every scene would be made again).
                script_stages = await StageRunner.create(engine)
                wrote = await script_stages.run(SCRIPT, script_stage_params(the_brief, limits, settings.llm),
                                                place="scripts/", job_id="script")
                script_records = script_stages.records
                written = parse_script(await asyncio.to_thread(store.read_bytes, wrote.refs[0].key), limits,
                                       source=wrote.refs[0].uri)
            except ScriptValidationError as exc:
                raise _rejected(exc) from exc
        else:
            written = edited
            script_records = []
        slug = safe_slug(production or written.title)
        data = dump_script(written)
        sha = hashlib.sha256(data).hexdigest()
        script_ref = await asyncio.to_thread(store.put_bytes, data,
                                             content_key(production_part_prefix(slug, "script"), sha, ".json"),
                                             kind="json")
        pose_ref = None
        if pose_path is not None:
            pose_sha, _ = await asyncio.to_thread(sha256_file, pose_path)
            pose_ref = await asyncio.to_thread(
                store.put_file, pose_path, content_key(production_part_prefix(slug, "pose"), pose_sha,
                                                       pose_path.suffix.lower() or ".png"))
        async with cancel_scope(engine.pool, shared=engine.borrowed):
            folder = production_prefix(slug)
            await asyncio.to_thread(store.mark_abandoned, folder)
            version = await asyncio.to_thread(
                store.reserve_version, folder, Holder.current(flow_run_id=flow_run_id, label=written.title))
            progress = FlowProgress(description=f"{written.title} v{version}: stages done")
            await progress.start()
            try:
                stages = await StageRunner.create(engine, progress=progress)
                run = _Production(engine, stages, written, slug, version, cast, width=width, height=height,
                                  seed=seed, max_chain=max_chain, pose=pose_ref)
                needed = _templates(written, run.plans, cast, supplied is None, pose_ref is not None)
                await validate_on_pool(engine.pool, [template_named(t) for t in needed])
                if snap_to_beat == "on" or (snap_to_beat == "auto" and supplied is not None):
                    progress.plan(2)  # music, beats
                    await run.snap_to_music(supplied)
                await asyncio.to_thread(run.claim_takes)
                progress.plan(_planned(run))
                result = await _produce(run, supplied, burn=burn_subtitles, loudness=loudness)
            except BaseException as exc:
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(store.abandon, folder, version,
                                            reason=f"{type(exc).__name__}: {exc}"[:500])
                raise
            finally:
                await progress.close()
        records = sorted([*script_records, *stages.records], key=lambda r: r.job_id)
        takes = [run.takes[k] for k in sorted(run.takes)]
        assembled: StageRecord = result
        outputs = {o.node_id: ArtifactRef(**o.model_dump(exclude={"node_id"})) for o in assembled.outputs}
        manifest = Manifest(
            subject=slug, kind="production", name=written.title, version=version, stages=records,
            details={"script": {"key": script_ref.key, "sha256": script_ref.sha256, "writer": written.writer},
                     "takes": [t.model_dump() for t in takes], "video": outputs["video"].key,
                     "cast": {n: {"slug": m.slug, "version": m.version} for n, m in cast.items()},
                     "notes": run.notes, "lipsync": {str(n): run.lipsyncs[n] for n in sorted(run.lipsyncs)},
                     "assembly": assembled.record},
        )
        manifest_ref = await asyncio.to_thread(write_manifest, store, manifest, f"{folder}v{version}/manifest.json")
        run_key = None
        if flow_run_id:
            run_key = run_manifest_key(flow_run_id)
            await asyncio.to_thread(write_manifest, store, Manifest(subject=flow_run_id, kind="run",
                                                                     name=written.title, stages=records), run_key)
        await publish_summary(records, store, key=f"video-{slug}", title=f"{written.title} v{version}")
    video_ready(slug, outputs["video"], manifest=manifest_ref)
    for note in run.notes:
        print(note)
    executed = sum(1 for r in records if not r.cached)
    print(f"{len(records)} stages: {executed} executed, {len(records) - executed} cached")
    print(f"{written.title} v{version}: {outputs['video'].uri}")
    report = assembled.record
    return VideoResult(
        title=written.title, slug=slug, version=version, script_key=script_ref.key, script_uri=script_ref.uri,
        video=outputs["video"], srt=outputs["srt"], poster=outputs["poster"], timeline=outputs["timeline"],
        duration_s=float(report.get("duration_s", sum(p.frames for p in run.plans) / FPS)),
        frames=int(report.get("frames", sum(p.frames for p in run.plans))),
        loudness_lufs=_loudness(report), scenes=len(written.scenes),
        cuts_s=[round(p.first_frame / FPS, 4) for p in run.plans[1:]], snapped=run.snapped, takes=takes,
        notes=run.notes,
        jobs=job_rows(records), executed=executed, cached=len(records) - executed,
        gpu_seconds=manifest.total_gpu_seconds, cost=manifest.total_cost, wall_s=round(time.monotonic() - started, 2),
        manifest_key=manifest_ref.key, manifest_uri=manifest_ref.uri, run_manifest_key=run_key,
        flow_run_id=flow_run_id,
    )


def _loudness(report: dict[str, Any]) -> float | None:
    measured = report.get("report") or {}
    value = measured.get("integrated_lufs") if isinstance(measured, dict) else None
    return float(value) if isinstance(value, (int, float)) else None


def _planned(run: _Production) -> int:
    count = 1 if run.music_ref is not None else 2  # music (unless made before planning), assembly
    for plan in run.plans:
        scene = run.scenes[plan.number]
        count += int(plan.keyframe) + int(bool(scene.end_frame)) + 2 * len(scene.dialogue)
        count += sum(1 + int(s.start == "chain") for s in plan.segments)
    return count


async def _produce(run: _Production, supplied: Path | None, *, burn: bool, loudness: float) -> StageRecord:
    engine = run.engine
    holder = Holder.current(flow_run_id=current_flow_run_id(), label=f"video {run.slug}")
    async with contextlib.AsyncExitStack() as stack:
        on_screen = {c for s in run.script.scenes for c in s.characters if c in run.cast}
        for name in sorted(on_screen):
            member = run.cast[name]
            local = await asyncio.to_thread(_local_copy, engine.store, member.lora)
            delivery = engine.lora_delivery(member.lora)
            run.lora_names[name] = await stack.enter_async_context(
                delivery.mounted(local, member.lora.sha256, holder, pool=engine.pool))
        made_first = run.music_ref  # made before planning when the cuts were snapped to it

        async def music_bed() -> ArtifactRef:
            return made_first if made_first is not None else await run.music(supplied)

        keys, lines, music = await asyncio.gather(run.keyframes(), run.voices(), music_bed())
    clips = await run.animations(keys)
    synced = await asyncio.gather(*(run.lipsync(plan, clips, lines) for plan in run.plans))
    lips = {plan.number: s for plan, s in zip(run.plans, synced, strict=True) if s is not None}
    timeline, inputs = run.timeline(clips, lips, lines, music, burn=burn, loudness=loudness)
    return await run.cpu(ASSEMBLE, {"timeline": timeline.model_dump(mode="json"), "name": "video"},
                         production_part_prefix(run.slug, "assembly"), f"{run.slug}-v{run.version}-assembly", inputs)


def print_video_summary(result: VideoResult, console: Console) -> None:
    """What ``reelforge run video`` prints: the takes used, the totals, where the video is."""
    table = Table(title=f"{result.title} v{result.version}: {result.scenes} scenes, {result.duration_s:.2f} s",
                  title_justify="left")
    for column in ("scene", "shot", "take", "place"):
        table.add_column(column, overflow="fold")
    for take in result.takes:
        table.add_row(str(take.scene), str(take.shot), f"{take.take}" + (" (new)" if take.new else ""), take.place)
    console.print(table)
    for note in result.notes:
        console.print(f"note: {note}", highlight=False)
    total = result.executed + result.cached
    loud = f", {result.loudness_lufs:.1f} LUFS" if result.loudness_lufs is not None else ""
    console.print(f"{total} stages: {result.executed} executed, {result.cached} cached; "
                  f"{result.frames} frames{loud}; {result.gpu_seconds:.2f} GPU-seconds; {result.wall_s:.1f} s wall")
    console.print(f"video: {result.video.uri}", soft_wrap=True)
    console.print(f"subtitles: {result.srt.uri}", soft_wrap=True)
    console.print(f"poster: {result.poster.uri}", soft_wrap=True)
    console.print(f"timeline: {result.timeline.uri}", soft_wrap=True)
    console.print(f"script: {result.script_uri}", soft_wrap=True)
    console.print(f"manifest: {result.manifest_uri}", soft_wrap=True)
