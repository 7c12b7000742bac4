"""Assembly: a timeline in, a verified MP4 (with SRT, poster, timeline picture and last frame) out.

::

    inspect_inputs      probe + check every file (corrupt, truncated, silent, no stream, font, music < 1 beat)
    snap (optional)     cuts moved to beats, total frames unchanged
    make_plan           whole frames and samples; copy or encode; cues and lines inside the video
    ┌ picture job       concat demuxer + stream copy, or one encode (normalize, concat/xfade, burn-in)
    └ sound job         mix (scene sound, dialogue, music fitted and ducked) + ebur128
                        -> pre-gain + limiter (measured again when limiting) -> loudnorm linear -> AAC-LC
    mux                 stream copy, soft subtitle track, +faststart
    verify              streams, frames, durations, rate/channels, moov first, loudness and true peak
    extras              poster PNG, exact last frame PNG, timeline PNG, SRT
    move into place     only now, each by an atomic rename from the work folder beside the outputs

The picture and the sound run as two ffmpeg processes at once (one thread each here): the encode is bound by
x264 and its single-threaded filter graph, the sound by its own filters, so on two cores they overlap. When
one fails, the other is stopped at its next progress report. The orchestrating process only waits, so its
memory does not grow with the video (bench/assembly.py measures 30 s against 5 min of input).
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from reelforge.media.beats import BeatGrid, snap_boundaries, timeline_beats
from reelforge.media.errors import MediaError
from reelforge.media.frames import frame_at, last_frame
from reelforge.media.graph import audio_final_args, concat_copy_args, concat_list, loudness_args, mix_args, mux_args
from reelforge.media.inputs import inspect_inputs
from reelforge.media.loudness import (
    Loudness,
    LoudnessPlan,
    limiter_plan,
    parse_ebur128,
    parse_loudnorm_json,
    refine_plan,
)
from reelforge.media.picture import TimelineFacts, draw_timeline, level_envelope
from reelforge.media.plan import Plan, make_plan
from reelforge.media.probe_types import MediaInfo
from reelforge.media.runner import Progress, run_job
from reelforge.media.subtitles import check_font, fonts_dir, load_font, render_check, write_ass, write_srt
from reelforge.media.timeline import AudioTarget, Ducking, Timeline
from reelforge.media.verify import OutputExpectation, OutputReport, measure_loudness, verify_output
from reelforge.records import Product, StageOutput

__all__ = ["AssemblyResult", "SnapReport", "assemble", "assemble_stage", "snap_to_beats"]

ProgressFn = Callable[[str, float], None]
MEASURE_ROUNDS = 5  # ebur128 passes over the mix at most, to fit pre-gain and limiter (each ~1% of real time)
AAC_MARGIN_DB = 0.5  # true-peak headroom left for the AAC encoder at first
ENCODE_ATTEMPTS = 3  # audio encodes at most, each with more margin when the encoded true peak is too high
_NO_DUCKING = Ducking(enabled=False)


class SnapReport(BaseModel):
    """Where each boundary moved (timeline frames) and how far it sits from its beat."""

    bpm: float
    before: list[int]
    after: list[int]
    snapped: list[bool]
    errors_ms: list[float | None]


class AssemblyResult(BaseModel):
    """The files written (already in place) and what was measured on them."""

    video: Path
    srt: Path
    poster: Path
    timeline_png: Path
    last_frame: Path
    duration_s: float
    frames: int
    fps: str
    width: int
    height: int
    video_mode: str
    copy_reason: str
    report: OutputReport
    loudness_target: float
    normalization: str  # "linear", "dynamic" (loudnorm left linear mode), or "none" (silent programme)
    pre_gain_db: float
    limiter_db: float | None
    bpm: float | None
    snap: SnapReport | None
    timings: dict[str, float] = Field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """The small JSON record a stage keeps."""
        data = self.model_dump(mode="json", exclude={"video", "srt", "poster", "timeline_png", "last_frame"})
        return data


class _Cancelled(Exception):
    """The other job of the pair failed; this one stops."""


def _absolute(timeline: Timeline) -> Timeline:
    """Every path absolute, so that ffmpeg can run in the work folder (relative filter arguments)."""
    mapping = {p: Path(p).resolve() for p in timeline.files()}
    return timeline.resolve(mapping)


def snap_to_beats(timeline: Timeline, infos: Mapping[str, MediaInfo], grid: BeatGrid) -> tuple[Timeline, SnapReport]:
    """The timeline with its boundaries moved onto the music's beats (``timeline.beat_snap``); total unchanged.

    A boundary is a cut's first frame or an xfade's midpoint. Scene ``i`` may grow only as far as its clip has
    frames after its out point, and never shrinks under ``min_scene_s``.
    """
    plan = make_plan(timeline, infos)
    assert timeline.music is not None
    fps = float(plan.rate)
    beats = timeline_beats(grid, offset_s=timeline.music.offset_s, loop=plan.music.loop if plan.music else False,
                           duration_s=plan.duration_s)  # fmt: skip
    half = [o // 2 for o in plan.overlaps]
    before = [plan.scenes[i + 1].start + half[i] for i in range(len(plan.overlaps))]
    # Scene i spans boundaries i-1..i: frames_i = b_i - b_{i-1} + const_i; limits on that gap.
    n = len(plan.scenes)
    consts = []
    for i in range(n):
        left = half[i - 1] if i > 0 else 0
        right = plan.overlaps[i] - half[i] if i < n - 1 else 0
        consts.append(left + right)
    min_frames = max(1, round(timeline.beat_snap.min_scene_s * plan.rate))
    min_gaps = [max(min_frames, plan.overlaps[i - 1] if i > 0 else 0) - consts[i] for i in range(n)]
    max_gaps = [plan.scenes[i].source_frames - plan.scenes[i].in_frame - consts[i] for i in range(n)]
    result = snap_boundaries(
        before, beats, fps=fps, total=plan.total_frames, tolerance_s=timeline.beat_snap.tolerance_s,
        min_gaps=min_gaps, max_gaps=max_gaps,
    )  # fmt: skip
    edges = [0, *result.boundaries, plan.total_frames]
    clips = []
    for i, clip in enumerate(timeline.clips):
        frames = edges[i + 1] - edges[i] + consts[i]
        clips.append(clip.model_copy(update={"out_s": clip.in_s + frames / fps}))
    report = SnapReport(
        bpm=grid.bpm, before=before, after=result.boundaries, snapped=result.snapped,
        errors_ms=[round(e * 1000, 3) if e is not None else None for e in result.errors_s],
    )  # fmt: skip
    return timeline.model_copy(update={"clips": clips}), report


def _loudness_plan(
    raw: Loudness, mix: Path, target: AudioTarget, margin: float, check: Callable[[Progress], None],
    deadline: float | None,
) -> tuple[LoudnessPlan | None, Loudness | None]:
    """Pre-gain and limiter for the second pass, and the measurement of that chain (None, None: not normalized)."""
    if not target.normalize or raw.silent:
        return None, None
    lplan = limiter_plan(raw, target_lufs=target.loudness_lufs, true_peak_db=target.true_peak_db, aac_margin_db=margin)
    measured = raw.shifted(lplan.gain_db)
    previous: tuple[LoudnessPlan, Loudness] | None = None
    for _ in range(MEASURE_ROUNDS):
        if lplan.limit_db is None:
            break
        # The limiter changes loudness and peaks: measure the chain the second pass will read.
        out = run_job(loudness_args(mix, gain_db=lplan.gain_db, limit_db=lplan.limit_db), input_path=mix,
                      loglevel="info", progress=check, timeout=_left(deadline))  # fmt: skip
        measured = parse_ebur128(out.stderr)
        better = refine_plan(lplan, measured, target_lufs=target.loudness_lufs, previous=previous)
        if better is None:
            break
        previous = (lplan, measured)
        lplan = better
    return lplan, measured


def _sound(
    plan: Plan, timeline: Timeline, work: Path, check: Callable[[Progress], None], deadline: float | None
) -> tuple[Path, LoudnessPlan | None, str]:
    """Mix, measure, limit and encode the sound; ``(audio.m4a, loudness plan, normalization type)``."""
    target = timeline.audio
    mix, level = work / "mix.wav", work / "music-level.wav"
    music_level = level if plan.music is not None else None
    job = run_job(
        mix_args(plan, mix, ducking=timeline.music.ducking if timeline.music else _NO_DUCKING, music_level=music_level),
        input_path=plan.music.path if plan.music else plan.scenes[0].path, total_s=plan.duration_s,
        progress=check, timeout=_left(deadline), loglevel="info",
    )  # fmt: skip
    raw = parse_ebur128(job.stderr)
    audio = work / "audio.m4a"
    margin = AAC_MARGIN_DB
    for _attempt in range(ENCODE_ATTEMPTS):
        lplan, measured = _loudness_plan(raw, mix, target, margin, check, deadline)
        final = run_job(
            audio_final_args(
                mix, audio, plan=plan, target_lufs=target.loudness_lufs,
                target_tp=lplan.ceiling_db if lplan else target.true_peak_db,
                measured=measured.as_measured() if measured is not None else None,
                gain_db=lplan.gain_db if lplan else 0.0, limit_db=lplan.limit_db if lplan else None,
                bitrate=target.bitrate,
            ),
            input_path=mix, total_s=plan.duration_s, progress=check, timeout=_left(deadline), loglevel="info",
        )  # fmt: skip
        if lplan is None:
            break
        # AAC raises true peaks (0.3-0.8 dB measured, more on peaky mixes): measure the encoded sound and, when
        # its peak passes the target, encode again with that much more margin (the picture is not touched).
        encoded = measure_loudness(audio, timeout=_left(deadline))
        excess = encoded.true_peak - (target.true_peak_db - 0.05)
        if excess <= 0:
            break
        margin += excess + 0.1
    kind = "none"
    if measured is not None:
        try:
            kind = parse_loudnorm_json(final.stderr).get("normalization_type", "unknown")
        except ValueError:
            kind = "unknown"
    return audio, lplan, kind


def _left(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        from reelforge.media.errors import FFmpegTimeout

        raise FFmpegTimeout("the assembly ran out of time", timeout=0.0)
    return left


def _picture(
    plan: Plan, timeline: Timeline, work: Path, check: Callable[[Progress], None], deadline: float | None,
    subtitles: str | None, fonts: str | None, threads: int | None,
) -> Path:  # fmt: skip
    from reelforge.media.graph import video_encode_args

    video = work / "picture.mp4"
    if plan.video_mode == "copy":
        listing = work / "concat.txt"
        listing.write_text(concat_list([s.path for s in plan.scenes]), encoding="utf-8")
        run_job(concat_copy_args(listing, video), input_path=plan.scenes[0].path, total_s=plan.duration_s,
                progress=check, timeout=_left(deadline))  # fmt: skip
    else:
        args = video_encode_args(plan, timeline.video, video, subtitles=subtitles, fonts_dir=fonts, threads=threads)
        run_job(args, input_path=plan.scenes[0].path, total_s=plan.duration_s, progress=check,
                timeout=_left(deadline), cwd=work)  # fmt: skip
    return video


def assemble(
    timeline: Timeline,
    out_dir: Path,
    *,
    name: str = "video",
    progress: ProgressFn | None = None,
    timeout: float | None = None,
    threads: int | None = None,
) -> AssemblyResult:
    """Build ``timeline`` into ``out_dir/<name>.mp4`` (+ ``.srt``, ``-poster.png``, ``-timeline.png``,
    ``-last.png``); see the module docstring. Raises ``MediaInputError`` (bad input, before encoding),
    ``FFmpegError``/``FFmpegTimeout`` (naming the input) or ``MediaCheckFailed`` (the result is wrong; nothing
    is moved into place)."""
    started = time.monotonic()
    deadline = started + timeout if timeout is not None else None
    timings: dict[str, float] = {}
    report = progress or (lambda stage, fraction: None)

    def lap(step: str, since: float) -> float:
        now = time.monotonic()
        timings[step] = round(now - since, 3)
        return now

    out_dir.mkdir(parents=True, exist_ok=True)
    timeline = _absolute(timeline)
    report("inspect", 0.0)
    facts = inspect_inputs(timeline)
    t = lap("inspect", started)
    snap: SnapReport | None = None
    if timeline.beat_snap.enabled and facts.grid is not None and len(timeline.clips) > 1:
        timeline, snap = snap_to_beats(timeline, facts.infos, facts.grid)
    plan = make_plan(timeline, facts.infos)
    t = lap("plan", t)

    work = Path(tempfile.mkdtemp(prefix=f".{name}-work-", dir=out_dir))
    try:
        subtitles_rel = fonts_rel = None
        if timeline.subtitles.burn and timeline.cues:
            font = load_font(timeline.subtitles.font)
            if timeline.subtitles.missing_glyphs == "error":
                check_font(timeline.cues, font)
            render_check(timeline.cues, font, work, width=plan.width, height=plan.height)
            folder = fonts_dir(font, work)
            s = timeline.subtitles
            write_ass(timeline.cues, work / "burn.ass", width=plan.width, height=plan.height, family=font.family,
                      size=s.size, margin=s.margin)  # fmt: skip
            subtitles_rel, fonts_rel = "burn.ass", folder.name
        srt = write_srt(timeline.cues, work / "subtitles.srt")
        t = lap("subtitles", t)

        failed = threading.Event()
        fractions = {"picture": 0.0, "sound": 0.0}
        lock = threading.Lock()

        def checker(job: str) -> Callable[[Progress], None]:
            def check(p: Progress) -> None:
                if failed.is_set():
                    raise _Cancelled(job)
                with lock:
                    fractions[job] = p.fraction or 0.0
                    overall = 0.05 + 0.75 * (0.8 * fractions["picture"] + 0.2 * fractions["sound"])
                report("encode", overall)

            return check

        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="assemble") as pool:
            pic: Future[Path] = pool.submit(
                _picture, plan, timeline, work, checker("picture"), deadline, subtitles_rel, fonts_rel, threads
            )
            snd = pool.submit(_sound, plan, timeline, work, checker("sound"), deadline)
            for future in (pic, snd):
                future.add_done_callback(lambda f: failed.set() if f.exception() else None)
            errors = []
            for future in (pic, snd):
                exc = future.exception()
                if exc is not None and not isinstance(exc, _Cancelled):
                    errors.append(exc)
            if errors:
                raise errors[0]
            picture = pic.result()
            audio, lplan, kind = snd.result()
        t = lap("encode", t)

        report("mux", 0.82)
        muxed = work / f"{name}.mp4"
        embed = timeline.subtitles.embed and bool(timeline.cues)
        run_job(
            mux_args(picture, audio, muxed, srt=srt if embed else None), input_path=picture, timeout=_left(deadline)
        )
        t = lap("mux", t)

        report("verify", 0.88)
        expected = OutputExpectation(
            frames=plan.total_frames, fps=plan.fps, width=plan.width, height=plan.height,
            sample_rate=plan.sample_rate, channels=plan.channels,
            loudness_lufs=timeline.audio.loudness_lufs if lplan is not None else None,
            loudness_tolerance_lu=timeline.audio.loudness_tolerance_lu, true_peak_db=timeline.audio.true_peak_db,
            subtitle_track=embed,
        )  # fmt: skip
        checked = verify_output(muxed, expected, timeout=_left(deadline))
        t = lap("verify", t)

        report("extras", 0.95)
        first = plan.scenes[0]
        poster_s = timeline.poster_s if timeline.poster_s is not None else plan.frame_time(first.frames // 2)
        poster = frame_at(muxed, min(poster_s, plan.duration_s - plan.frame_time(1)), work / f"{name}-poster.png")
        last = last_frame(muxed, work / f"{name}-last.png")
        if last.index != plan.total_frames - 1:
            raise MediaError(f"the last frame decoded is {last.index}, not {plan.total_frames - 1}", path=muxed)
        level = work / "music-level.wav"
        beats = timeline_beats(facts.grid, offset_s=timeline.music.offset_s, loop=bool(plan.music and plan.music.loop),
                               duration_s=plan.duration_s) if facts.grid and timeline.music else []  # fmt: skip
        picture_png = draw_timeline(
            plan,
            TimelineFacts(
                beats=beats, snapped=snap.snapped if snap else [], cues=timeline.cues,
                music_db=level_envelope(level) if level.exists() else [],
                title=(f"{plan.duration_s:.3f} s · {plan.total_frames} frames at {float(plan.rate):g} fps · "
                       f"{plan.width}x{plan.height} · {checked.integrated_lufs:.1f} LUFS, "
                       f"{checked.true_peak_db:.1f} dBTP · {plan.video_mode}"
                       + (f" · {facts.grid.bpm:.1f} BPM" if facts.grid and facts.grid.beats else "")),
            ),
            work / f"{name}-timeline.png",
        )  # fmt: skip
        t = lap("extras", t)

        final: dict[str, Path] = {}
        for key, path in (("video", muxed), ("srt", srt), ("poster", poster.path), ("timeline_png", picture_png),
                          ("last_frame", last.path)):  # fmt: skip
            suffix = {"video": ".mp4", "srt": ".srt"}.get(key) or {
                "poster": "-poster.png", "timeline_png": "-timeline.png", "last_frame": "-last.png"}[key]  # fmt: skip
            dest = out_dir / f"{name}{suffix}"
            path.replace(dest)
            final[key] = dest
        lap("total", started)
        report("done", 1.0)
        return AssemblyResult(
            video=final["video"], srt=final["srt"], poster=final["poster"], timeline_png=final["timeline_png"],
            last_frame=final["last_frame"], duration_s=plan.duration_s, frames=plan.total_frames, fps=plan.fps,
            width=plan.width, height=plan.height, video_mode=plan.video_mode, copy_reason=plan.copy_reason,
            report=checked, loudness_target=timeline.audio.loudness_lufs, normalization=kind,
            pre_gain_db=round(lplan.gain_db, 3) if lplan else 0.0,
            limiter_db=round(lplan.limit_db, 3) if lplan and lplan.limit_db is not None else None,
            bpm=round(facts.grid.bpm, 3) if facts.grid and facts.grid.beats else None, snap=snap, timings=timings,
        )  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


def assemble_stage(inputs: Mapping[str, Path], params: Mapping[str, Any], out_dir: Path) -> StageOutput:
    """Stage function: ``params["timeline"]`` (a ``Timeline``; paths may name ``inputs``) assembled in ``out_dir``.

    Products by ``node_id``: ``video`` (MP4), ``srt``, ``poster``, ``timeline`` (PNG), ``last_frame`` (PNG);
    record: durations, frames, mode, measured loudness, beats and snapping, timings.
    """
    timeline = Timeline.model_validate(params["timeline"]).resolve(inputs)
    result = assemble(timeline, out_dir, name=str(params.get("name", "video")), timeout=params.get("timeout_s"))
    products = [
        Product(path=result.video, kind="video", node_id="video"),
        Product(path=result.srt, kind="text", node_id="srt"),
        Product(path=result.poster, kind="image", node_id="poster"),
        Product(path=result.timeline_png, kind="image", node_id="timeline"),
        Product(path=result.last_frame, kind="image", node_id="last_frame"),
    ]
    return StageOutput(products=products, record=result.record())
