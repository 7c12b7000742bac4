"""Benchmark: the media engine's assembly against one hand-written ffmpeg command line, in the same run.

Run: ``.venv/bin/python bench/assembly.py [--clips 6] [--seconds 5] [--size 1280x720] [--rounds 1]
[--long-seconds 300] [--quick] [--strict]``

Inputs (made first, not timed): ``--clips`` H.264/AAC clips of ``--seconds`` + 0.5 s at ``--size``, 24 fps
(ffmpeg's testsrc2/smptebars/mandelbrot/... sources with a quiet tone each), one voice line per scene (the preview
worker's speech), a 110 BPM music bed shorter than the video (the preview worker's music: it must loop), a
subtitle cue per line (one with a Korean name).

(a) **same output, both ways**: the engine's ``assemble`` (input checks, beat grid, beat snapping, picture and
    sound jobs, two-pass linear loudnorm with a limiter where needed, mux, verification, poster, last frame,
    timeline picture) against one ffmpeg command line a person would write for the same video: the same
    (snapped) cuts and xfades, scaling, dialogue with ``adelay``, looped music with fades ducked by
    ``sidechaincompress``, one-pass ``loudnorm``, burned subtitles with the same font, a soft subtitle track,
    ``+faststart``. The two alternate ``--rounds`` times. Target: engine / hand <= 1.10.
(b) **accuracy**, measured on each output file with ffmpeg's ebur128 and PyAV (not taken from either side's own
    report): integrated loudness against -14 LUFS (target within 0.5 LU) and true peak (target <= -1 dBTP),
    frames and durations against the timeline (target: within one frame), the fitted music's length (target
    0 ms), each snapped cut's distance to its beat (target <= 1 frame).
(c) **stream copy**: the clips normalized by ``normalize_clip`` (timed: a re-encode each), then joined by the
    concat demuxer with stream copy (the engine's own job), media seconds / wall seconds (target >= 50x); and a
    whole ``assemble`` of them in copy mode.
(d) **orchestrator memory**: peak RSS of this Python process (sampled every 10 ms, ffmpeg's own memory not
    included: it is reported apart) during an assembly of 30 s and of ``--long-seconds`` of input, at 320x180
    (the orchestrator's memory does not depend on the picture size; this keeps the long encode short).
    Target: the long one within 10 MB of the short one.
(e) **beat grid**: the estimator on 32 synthetic tracks of known tempo (60-180 BPM, accents, hats, chord bed,
    noise) and on the preview worker's music at 90/120/140 BPM: tempo within 1% and the worst beat's distance.

``--quick``: 3 clips of 3 s at 640x360, 60 s long case, 8 synthetic tracks. Exit status 0, or 1 with
``--strict`` when a target is missed.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from scipy.signal import resample_poly

from reelforge.media import (
    BeatSnap,
    Clip,
    Cue,
    DialogueLine,
    MusicBed,
    SubtitleStyle,
    Timeline,
    Transition,
    VideoTarget,
    assemble,
    fit_music,
    measure_loudness,
    moov_before_mdat,
    normalize_clip,
    probe,
    run_job,
    shipped_font,
    snap_to_beats,
)
from reelforge.media.beats import RATE, beat_grid, onset_envelope, timeline_beats
from reelforge.media.graph import concat_copy_args, concat_list
from reelforge.media.inputs import inspect_inputs
from reelforge.media.plan import Plan, make_plan
from reelforge.media.subtitles import write_srt
from reelforge.media.synth import beat_track, sample_clip, write_wav
from reelforge.preview.render.audio import render_music, render_speech

SOURCES = ["testsrc2", "smptebars", "mandelbrot", "rgbtestsrc", "testsrc", "cellauto"]
LINES = [
    "Welcome back to the studio, everyone.",
    "Today Mina shows the new choreography.",
    "김민아 takes the stage in the second verse.",
    "Watch the footwork on the bridge.",
    "The lights drop on the final chorus.",
    "Thanks for watching, see you next week.",
]
TARGET_RATIO = 1.10
TARGET_COPY_X = 50.0
TARGET_LU = 0.5
TARGET_TP = -1.0
TARGET_MEMORY_MB = 10.0


def _value_wav(path: Path, value: dict[str, Any]) -> Path:
    return write_wav(path, value["waveform"][0], value["sample_rate"])


def make_inputs(folder: Path, *, clips: int, seconds: float, size: tuple[int, int], music_s: float) -> Timeline:
    """The clips, voice lines and music in ``folder``; the timeline over them (beat snapping on)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(clips):
        path = folder / f"clip{i}.mp4"
        if not path.exists():
            sample_clip(path, seconds=seconds + 0.5, size=size, source=SOURCES[i % len(SOURCES)],
                        audio_hz=220.0 * (1 + i % 4), extra=["-af", "volume=-20dB"])  # fmt: skip
        paths.append(path)
    music = folder / "music.wav"
    if not music.exists():
        _value_wav(music, render_music(music_s, "pop, 110 bpm", seed=1))
    transitions = [Transition(kind="xfade", duration_s=0.5) if i % 2 == 0 else Transition() for i in range(clips - 1)]
    dialogue, cues = [], []
    scene_start = 0.0
    for i in range(clips):
        text = LINES[i % len(LINES)]
        line = folder / f"line{i}.wav"
        if not line.exists():
            value = render_speech(text, seed=i, use_espeak=False)
            keep = int((seconds - 1.2) * value["sample_rate"])  # a line ends inside its scene
            _value_wav(line, {**value, "waveform": value["waveform"][..., :keep]})
        length = probe(line, count=False).audio[0].duration_s or 1.0
        start = scene_start + 0.6
        dialogue.append(DialogueLine(path=str(line), start_s=start, speaker="Mina", text=text))
        cues.append(Cue(start_s=start, end_s=start + length, text=text))
        if i < clips - 1:
            scene_start += seconds - transitions[i].duration_s
    return Timeline(
        clips=[Clip(path=str(p), out_s=seconds, label=f"scene {i + 1}") for i, p in enumerate(paths)],
        transitions=transitions, dialogue=dialogue, music=MusicBed(path=str(music)), cues=cues,
        video=VideoTarget(width=size[0], height=size[1], fps=24), subtitles=SubtitleStyle(burn=True),
        beat_snap=BeatSnap(enabled=True),
    )  # fmt: skip


def hand_command(plan: Plan, timeline: Timeline, srt: Path, fonts: Path, out: Path) -> list[str]:
    """One ffmpeg command line for the video a person would write (see the module docstring)."""
    w, h, fps = plan.width, plan.height, plan.fps
    sr, n = plan.sample_rate, plan.samples
    rate = Fraction(plan.fps)
    args: list[str] = ["-y"]
    for scene in plan.scenes:
        args += ["-i", scene.path]
    for line in plan.dialogue:
        args += ["-i", line.path]
    music_index = len(plan.scenes) + len(plan.dialogue)
    assert plan.music is not None and timeline.music is not None
    args += ["-stream_loop", "-1", "-i", plan.music.path, "-i", str(srt)]
    srt_index = music_index + 1
    fmt = f"aresample={sr},aformat=sample_fmts=fltp:channel_layouts=stereo"
    parts = []
    for i, s in enumerate(plan.scenes):
        a0, a1 = round(s.in_frame * sr / rate), round((s.in_frame + s.frames) * sr / rate)
        parts.append(
            f"[{i}:v]fps={fps},trim=start_frame={s.in_frame}:end_frame={s.in_frame + s.frames},setpts=PTS-STARTPTS,"
            f"scale={w}:{h}:force_original_aspect_ratio=decrease,pad={w}:{h}:(ow-iw)/2:(oh-ih)/2,setsar=1,"
            f"format=yuv420p,settb=1/{rate.numerator}[v{i}];"
            f"[{i}:a]{fmt},atrim=start_sample={a0}:end_sample={a1},asetpts=PTS-STARTPTS[a{i}]"
        )
    v, a, length = "v0", "a0", plan.scenes[0].frames
    for i, overlap in enumerate(plan.overlaps):
        nv, na = f"v{i + 1}", f"a{i + 1}"
        if overlap:
            offset = float((length - overlap) / rate)
            parts.append(f"[{v}][{nv}]xfade=transition=fade:duration={float(overlap / rate):.6f}:offset={offset:.6f}"
                         f"[vx{i}];[{a}][{na}]acrossfade=ns={round(overlap * sr / rate)}:c1=tri:c2=tri[ax{i}]")
        else:
            parts.append(f"[{v}][{nv}]concat=n=2:v=1:a=0,settb=1/{rate.numerator}[vx{i}];"
                         f"[{a}][{na}]concat=n=2:v=0:a=1[ax{i}]")  # fmt: skip
        v, a, length = f"vx{i}", f"ax{i}", length + plan.scenes[i + 1].frames - overlap
    family = "Kurinto Sans KR"
    size = round(0.055 * 288)  # the engine's 5.5% of the height, in the SRT's default 288-line PlayRes
    tags = "setparams=color_primaries=bt709:color_trc=bt709:colorspace=bt709"
    parts.append(f"[{v}]subtitles=filename={srt.name}:fontsdir={fonts.name}:force_style='FontName={family},"
                 f"FontSize={size}',{tags}[vout]")  # fmt: skip
    delays = []
    for k, line in enumerate(plan.dialogue):
        parts.append(f"[{len(plan.scenes) + k}:a]{fmt},adelay=delays={line.start_sample}S:all=1[d{k}]")
        delays.append(f"[d{k}]")
    parts.append(f"{''.join(delays)}amix=inputs={len(delays)}:normalize=0,apad=whole_len={n},atrim=end_sample={n},"
                 "asplit[voice][key]")  # fmt: skip
    m = timeline.music
    parts.append(
        f"[{music_index}:a]{fmt},atrim=end_sample={n},afade=t=in:st=0:d={m.fade_in_s},"
        f"afade=t=out:st={n / sr - m.fade_out_s:.6f}:d={m.fade_out_s},volume={m.gain_db}dB[music];"
        f"[music][key]sidechaincompress=threshold=0.02:ratio=8:attack=20:release=400[ducked]"
    )
    parts.append(
        f"[{a}]apad=whole_len={n},atrim=end_sample={n}[scene];[scene][voice][ducked]amix=inputs=3:normalize=0,"
        f"loudnorm=I=-14:TP=-1:LRA=11,aresample={sr},apad=whole_len={n},atrim=end_sample={n}[aout]"
    )
    return [
        *args, "-filter_complex", ";".join(parts), "-map", "[vout]", "-map", "[aout]", "-map", f"{srt_index}:s",
        "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p", "-r", fps, "-g", "48",
        "-color_primaries", "bt709", "-color_trc", "bt709", "-colorspace", "bt709", "-c:a", "aac", "-b:a", "192k",
        "-c:s", "mov_text", "-movflags", "+faststart", str(out),
    ]  # fmt: skip


class RssSampler:
    """Peak resident memory of this process (not its children), sampled every ``every`` seconds."""

    def __init__(self, every: float = 0.01) -> None:
        self.every = every
        self.peak = 0
        self._stop = threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self.every)

    def __enter__(self) -> RssSampler:
        self.base = self.rss()
        self.peak = self.base
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def measure(path: Path, plan: Plan) -> dict[str, Any]:
    """What the file is, measured on it: loudness (ebur128), frames, stream durations, faststart."""
    loud = measure_loudness(path)
    info = probe(path)
    frame_s = float(1 / plan.rate)
    v, a = info.video[0], info.audio[0]
    return {
        "lufs": loud.integrated, "tp": loud.true_peak, "frames": v.frame_count,
        "video_err_frames": abs((v.duration_s or 0) - plan.duration_s) / frame_s,
        "audio_err_frames": abs((a.duration_s or 0) - plan.duration_s) / frame_s,
        "faststart": moov_before_mdat(path),
    }  # fmt: skip


def bench_same_output(work: Path, args: argparse.Namespace, size: tuple[int, int]) -> bool:
    print(f"\n(a) same output: {args.clips} clips x {args.seconds:g} s at {size[0]}x{size[1]}, 24 fps; dialogue, "
          "looped music ducked, loudness, burned + soft subtitles")  # fmt: skip
    timeline = make_inputs(work / "in", clips=args.clips, seconds=args.seconds, size=size,
                           music_s=args.clips * args.seconds * 0.6)  # fmt: skip
    # The hand-written command gets the cuts the engine will snap to (a person would have chosen them).
    facts = inspect_inputs(timeline)
    assert facts.grid is not None
    snapped, snap = snap_to_beats(timeline, facts.infos, facts.grid)
    plan = make_plan(snapped, facts.infos)
    hand_dir = work / "hand"
    hand_dir.mkdir(exist_ok=True)
    srt = write_srt(snapped.cues, hand_dir / "subs.srt")
    fonts = hand_dir / "fonts"
    fonts.mkdir(exist_ok=True)
    if not (fonts / shipped_font().name).exists():
        os.symlink(shipped_font(), fonts / shipped_font().name)
    command = hand_command(plan, snapped, srt, fonts, hand_dir / "hand.mp4")
    ours: list[float] = []
    theirs: list[float] = []
    result = None
    for r in range(args.rounds):
        order = ("ours", "hand") if r % 2 == 0 else ("hand", "ours")
        for side in order:
            if side == "ours":
                wall, result = timed(lambda: assemble(timeline, work / "ours", name="video"))
                ours.append(wall)
            else:
                wall, _ = timed(lambda: run_job(command, input_path=plan.scenes[0].path, cwd=hand_dir))
                theirs.append(wall)
    assert result is not None
    print(f"  hand-written command (one ffmpeg process, {len(' '.join(command))} characters; shown with --show)")
    if args.show:
        print("   ", " ".join(f"'{c}'" if " " in c or ";" in c else c for c in command))
    ratio = min(ours) / min(theirs)
    print(f"  engine  {' '.join(f'{x:.2f}' for x in ours)} s   best {min(ours):.2f} s   "
          f"steps {result.timings}")  # fmt: skip
    print(f"  hand    {' '.join(f'{x:.2f}' for x in theirs)} s   best {min(theirs):.2f} s")
    print(f"  ratio engine / hand (best of each): {ratio:.3f}  (target <= {TARGET_RATIO})")
    ok = ratio <= TARGET_RATIO

    print("\n(b) accuracy, measured on each output file")
    mine, hand = measure(result.video, plan), measure(hand_dir / "hand.mp4", plan)
    for name, m in (("engine", mine), ("hand", hand)):
        print(f"  {name:6}  {m['lufs']:6.1f} LUFS (target -14, {abs(m['lufs'] + 14):.1f} LU off)  "
              f"true peak {m['tp']:5.1f} dBTP  frames {m['frames']}/{plan.total_frames}  "
              f"duration error video {m['video_err_frames']:.2f} / audio {m['audio_err_frames']:.2f} frames  "
              f"faststart {m['faststart']}")  # fmt: skip
    ok &= abs(mine["lufs"] + 14) <= TARGET_LU and mine["tp"] <= TARGET_TP and mine["frames"] == plan.total_frames
    ok &= mine["video_err_frames"] <= 1 and mine["audio_err_frames"] <= 1
    print(f"  engine normalization: {result.normalization}, pre-gain {result.pre_gain_db} dB, limiter "
          f"{result.limiter_db} dBFS; hand: one-pass loudnorm (dynamic)")  # fmt: skip
    fitted = work / "fitted.wav"
    samples = fit_music(timeline.music.path, fitted, duration_s=plan.duration_s) if timeline.music else 0
    music_err_ms = ((probe(fitted).audio[0].duration_s or 0) - samples / 48000) * 1000
    print(f"  music fitted to {plan.duration_s:.3f} s: {samples} samples = {samples / 48000:.6f} s, error "
          f"{music_err_ms:.3f} ms (the track is {facts.grid.duration_s:.2f} s: looped)")  # fmt: skip
    beats = timeline_beats(facts.grid, offset_s=0, loop=True, duration_s=plan.duration_s)
    errors = [min(abs(f / 24 - b) for b in beats) * 24 for f in snap.after]
    print(f"  beat grid {facts.grid.bpm:.2f} BPM; cuts before {snap.before} after {snap.after} (frames); "
          f"snapped {sum(snap.snapped)}/{len(snap.snapped)}; distance to beat at most {max(errors):.2f} frames")
    ok &= max(errors) <= 1 and music_err_ms == 0
    print(f"  outputs: {result.video}, {result.timeline_png}")
    return bool(ok)


def bench_copy(work: Path, args: argparse.Namespace, size: tuple[int, int]) -> bool:
    print("\n(c) stream copy of matching clips")
    target = VideoTarget(width=size[0], height=size[1], fps=24)
    norm = []
    started = time.perf_counter()
    for i in range(args.clips):
        out = work / f"norm{i}.mp4"
        normalize_clip(work / "in" / f"clip{i}.mp4", out, video=target)
        norm.append(out)
    n_wall = time.perf_counter() - started
    media_s = sum(probe(p, count=False).duration_s or 0 for p in norm)
    print(f"  normalize_clip x{args.clips}: {n_wall:.2f} s for {media_s:.1f} s of media "
          f"({media_s / n_wall:.1f}x real time, a re-encode each)")  # fmt: skip
    listing = work / "copy.txt"
    listing.write_text(concat_list(norm), encoding="utf-8")
    walls = []
    for _ in range(5):
        wall, _ = timed(lambda: run_job(concat_copy_args(listing, work / "copied.mp4")))
        walls.append(wall)
    frames = probe(work / "copied.mp4").frame_count
    speed = media_s / min(walls)
    print(f"  concat demuxer + stream copy: best {min(walls) * 1000:.0f} ms of 5 for {media_s:.1f} s "
          f"({speed:.0f}x real time, target >= {TARGET_COPY_X:g}x); {frames} frames")  # fmt: skip
    wall, result = timed(lambda: assemble(Timeline(clips=[Clip(path=str(p)) for p in norm], video=target),
                                          work / "copy-out"))  # fmt: skip
    print(f"  whole assemble in {result.video_mode} mode ({result.copy_reason}): {wall:.2f} s "
          f"({media_s / wall:.1f}x real time, incl. checks, sound, verify and extras)")  # fmt: skip
    return bool(speed >= TARGET_COPY_X and result.video_mode == "copy")


def bench_memory(work: Path, args: argparse.Namespace) -> bool:
    print("\n(d) orchestrator memory during assembly (this process; ffmpeg's peak apart)")
    peaks = {}
    for total in (30.0, float(args.long_seconds)):
        per = 30.0 if total > 30 else 5.0
        count = max(1, round(total / per))
        t = make_inputs(work / f"mem{int(total)}", clips=count, seconds=per, size=(320, 180), music_s=20.0)
        t = t.model_copy(update={"beat_snap": BeatSnap(enabled=False)})
        with RssSampler() as rss:
            wall, result = timed(lambda t=t, total=total: assemble(t, work / f"mem{int(total)}-out"))  # type: ignore[misc]
        children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        peaks[total] = rss.peak / 2**20  # absolute: the first assembly also pays first-use imports (fonts, subs)
        print(f"  {total:5.0f} s of input ({count} clips): {wall:6.2f} s wall; RSS {rss.base / 2**20:.1f} MB before, "
              f"peak {rss.peak / 2**20:.1f} MB (+{(rss.peak - rss.base) / 2**20:.1f} MB); largest ffmpeg so far "
              f"{children:.0f} MB; "
              f"{result.frames} frames")  # fmt: skip
    short, long = peaks[30.0], peaks[float(args.long_seconds)]
    print(f"  peak RSS short -> long: {long - short:+.1f} MB (target within {TARGET_MEMORY_MB:g} MB)")
    return long - short <= TARGET_MEMORY_MB


def bench_beats(args: argparse.Namespace) -> bool:
    count = 8 if args.quick else 32
    print(f"\n(e) beat grid on {count} synthetic tracks of known tempo (30 s) and on the preview's music")
    rng = np.random.default_rng(1)
    right, walls, worst = 0, [], 0.0
    for i in range(count):
        bpm = float(rng.uniform(60, 180))
        first = float(rng.uniform(0, 60 / bpm))
        style = {"accent": i % 2 == 0, "hats": i % 4 >= 2, "bed": i % 3 == 0, "noise_db": -40.0 if i % 5 == 0 else None}
        x, beats = beat_track(bpm, 30.0, rate=22050, first_s=first, seed=i, **style)  # type: ignore[arg-type]
        y = resample_poly(x, RATE, 22050)
        wall, grid = timed(lambda y=y: beat_grid(onset_envelope(y), duration_s=30.0))  # type: ignore[misc]
        walls.append(wall)
        found = np.asarray(grid.beats)
        if found.size and abs(grid.bpm - bpm) / bpm < 0.01:
            right += 1
            worst = max(worst, max(float(np.min(np.abs(found - b))) for b in beats))
    print(f"  tempo within 1%: {right}/{count}; worst beat {worst * 1000:.1f} ms from the truth; "
          f"{np.median(walls) * 1000:.0f} ms per 30 s track (median; decoding not included)")  # fmt: skip
    for bpm in (90, 120, 140):
        value = render_music(30.0, f"pop, {bpm} bpm", seed=2)
        mono = resample_poly(value["waveform"][0].mean(axis=0), RATE, value["sample_rate"])
        grid = beat_grid(onset_envelope(mono), duration_s=30.0)
        print(f"  preview music tagged {bpm} BPM: {grid.bpm:.2f} BPM, first beat {grid.first_s * 1000:.1f} ms")
        right += abs(grid.bpm - bpm) / bpm < 0.01
    return right == count + 3


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--long-seconds", type=int, default=300)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--show", action="store_true", help="print the hand-written command line")
    parser.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it")
    parser.add_argument("--only", default="abcde", help="which parts to run, e.g. 'ab'")
    parser.add_argument("--strict", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.clips, args.seconds, args.size, args.long_seconds = 3, 3.0, "640x360", 60
    size = tuple(int(v) for v in args.size.split("x"))
    assert len(size) == 2
    print(f"bench/assembly.py on {os.cpu_count()} CPUs; ffmpeg from imageio-ffmpeg (or PATH)")
    with tempfile.TemporaryDirectory(prefix="rf-assembly-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        ok = True
        if "a" in args.only or "b" in args.only:
            ok &= bench_same_output(work, args, size)  # type: ignore[arg-type]
        if "c" in args.only:
            if not (work / "in").exists():
                make_inputs(work / "in", clips=args.clips, seconds=args.seconds, size=size, music_s=10)  # type: ignore[arg-type]
            ok &= bench_copy(work, args, size)  # type: ignore[arg-type]
        if "d" in args.only:
            ok &= bench_memory(work, args)
        if "e" in args.only:
            ok &= bench_beats(args)
    print(f"\nall targets met: {ok}")
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
