"""Pure builders of ffmpeg invocations: a plan in, an argument list out (no process, no file is touched).

Filter graphs (the picture: per-scene fps/trim/scale/pad/crop/colour, joined by concat and xfade, subtitles
burned in; the sound: scene audio, dialogue, music, ducking, the measured mix) are built with ffmpeg-python,
which labels and wires the streams. Plain argument lists are used where ffmpeg-python has nothing to offer or
cannot express the invocation:

* the concat demuxer with stream copy and its list file (a demuxer input plus ``-c copy``: no graph at all);
* the measurement and final-audio chains on one WAV (a single ``-af`` chain is clearer as text);
* the mux (``-map`` of streams from three inputs with per-stream codecs and stream metadata such as
  ``-metadata:s:s:0``, which ffmpeg-python cannot place after a specific ``-map``);
* global options (``-y``, ``-progress``): ffmpeg-python's ``global_args`` puts them after the last output,
  where ffmpeg ignores them ("Trailing option(s)"); they are put first here.

Every duration is whole frames / samples from ``reelforge.media.plan``: ``trim=start_frame/end_frame`` and
``atrim=start_sample/end_sample`` cut exactly; ``apad=whole_len`` then ``atrim=end_sample`` makes a sound exactly
as long as the picture (media-facts: exact, where ``apad`` with ``-shortest`` is off by up to 265 ms).
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import ffmpeg

from reelforge.media.plan import Plan, ScenePlan
from reelforge.media.timeline import Ducking, VideoTarget

__all__ = [
    "COLOR_ARGS",
    "alimiter_limit",
    "audio_final_args",
    "concat_copy_args",
    "concat_list",
    "loudness_args",
    "mix_args",
    "music_fit_args",
    "mux_args",
    "normalize_clip_args",
    "scene_video",
    "video_encode_args",
]

# BT.709 tags on the output stream (the frames are converted to BT.709 by scale's out_color_matrix).
COLOR_ARGS = ["-color_primaries", "bt709", "-color_trc", "bt709", "-colorspace", "bt709", "-color_range", "tv"]


def _sec(frames: int | float, fps: Fraction) -> str:
    """Seconds as ffmpeg reads them, exact enough that frame arithmetic inside filters rounds the right way."""
    return f"{float(Fraction(frames) / fps):.6f}"


def _tb(rate: Fraction) -> str:
    """The time base of one frame at ``rate`` (``1/24``, ``1001/30000``)."""
    return f"{rate.denominator}/{rate.numerator}"


def _layout(channels: int) -> str:
    return "stereo" if channels == 2 else "mono"


def scene_video(stream: Any, scene: ScenePlan, plan: Plan, target: VideoTarget) -> Any:
    """One scene's picture: constant rate, exact frames, the target size by the fit policy, BT.709, yuv420p."""
    w, h = plan.width, plan.height
    # fps first, so trim counts frames at the target rate (a no-op on a clip already at that rate).
    v = stream.filter("fps", fps=plan.fps)
    v = v.filter("trim", start_frame=scene.in_frame, end_frame=scene.in_frame + scene.frames)
    v = v.filter("setpts", "PTS-STARTPTS").filter("settb", _tb(plan.rate))
    if scene.sar not in (None, "1:1"):
        v = v.filter("scale", "trunc(iw*sar/2)*2", "ih").filter("setsar", "1")
    colour = {"in_color_matrix": "auto", "out_color_matrix": "bt709", "out_range": "tv"}
    if (scene.width, scene.height) == (w, h):
        v = v.filter("scale", w, h, **colour)
    elif target.fit == "pad":
        v = v.filter("scale", w, h, force_original_aspect_ratio="decrease", force_divisible_by=2, **colour)
        v = v.filter("pad", w, h, "(ow-iw)/2", "(oh-ih)/2", color=target.pad_color)
    else:
        v = v.filter("scale", w, h, force_original_aspect_ratio="increase", **colour).filter("crop", w, h)
    return v.filter("setsar", "1").filter("format", "yuv420p")


def _streams(paths: Sequence[str], kind: str) -> list[Any]:
    """One stream per use of each file: a file used by several scenes is read once and split (ffmpeg-python
    merges identical nodes, so reading it twice would wire one filter to two places)."""
    uses: dict[str, int] = {}
    for p in paths:
        uses[p] = uses.get(p, 0) + 1
    split: dict[str, Any] = {}
    seen: dict[str, int] = {}
    out = []
    for p in paths:
        source = ffmpeg.input(p).video if kind == "v" else ffmpeg.input(p).audio
        if uses[p] == 1:
            out.append(source)
            continue
        if p not in split:
            split[p] = source.filter_multi_output("split" if kind == "v" else "asplit", uses[p])
        out.append(split[p][seen.get(p, 0)])
        seen[p] = seen.get(p, 0) + 1
    return out


def _join(parts: Sequence[Any], frames: Sequence[int], plan: Plan, *, audio: bool) -> Any:
    """Scenes joined: runs of cuts through one concat each, runs through xfade / acrossfade."""
    sr = plan.sample_rate
    runs: list[tuple[list[Any], int]] = [([parts[0]], frames[0])]
    joins: list[int] = []
    for i, overlap in enumerate(plan.overlaps):
        if overlap == 0:
            runs[-1][0].append(parts[i + 1])
            runs[-1] = (runs[-1][0], runs[-1][1] + frames[i + 1])
        else:
            joins.append(i)
            runs.append(([parts[i + 1]], frames[i + 1]))

    def concat(streams: list[Any]) -> Any:
        if len(streams) == 1:
            return streams[0]
        joined = ffmpeg.concat(*streams, v=0 if audio else 1, a=1 if audio else 0)
        # concat answers in microseconds; xfade wants both inputs in the same time base as the scenes.
        return joined if audio else joined.filter("settb", _tb(plan.rate))

    acc = concat(runs[0][0])
    acc_frames = runs[0][1]
    for (streams, run_frames), boundary in zip(runs[1:], joins, strict=True):
        overlap = plan.overlaps[boundary]
        nxt = concat(streams)
        if audio:
            ns = round(overlap * sr / plan.rate)
            acc = ffmpeg.filter([acc, nxt], "acrossfade", ns=ns, c1="tri", c2="tri")
        else:
            acc = ffmpeg.filter(
                [acc, nxt], "xfade", transition=plan.styles[boundary], duration=_sec(overlap, plan.rate),
                offset=_sec(acc_frames - overlap, plan.rate),
            )  # fmt: skip
        acc_frames += run_frames - overlap
    return acc


def video_encode_args(
    plan: Plan,
    target: VideoTarget,
    output: Path | str,
    *,
    subtitles: str | None = None,
    fonts_dir: str | None = None,
    threads: int | None = None,
) -> list[str]:
    """The picture of ``plan`` encoded once (H.264 yuv420p, BT.709, no audio) into ``output``.

    ``subtitles``/``fonts_dir`` (paths relative to the job's working folder, so no escaping is needed) burn an
    ASS file in with libass, finding fonts only there.
    """
    streams = _streams([s.path for s in plan.scenes], "v")
    parts = [scene_video(stream, scene, plan, target) for stream, scene in zip(streams, plan.scenes, strict=True)]
    v = _join(parts, [s.frames for s in plan.scenes], plan, audio=False)
    if subtitles is not None:
        v = v.filter("subtitles", filename=subtitles, fontsdir=fonts_dir or ".")
    # x264 takes its VUI colour description from the frames as well as the options: set both.
    v = v.filter("setparams", color_primaries="bt709", color_trc="bt709", colorspace="bt709", range="tv")
    kwargs: dict[str, Any] = {
        "vcodec": target.codec, "preset": target.preset, "crf": target.crf, "pix_fmt": "yuv420p",
        "r": plan.fps, "g": max(1, round(2 * plan.rate)), "profile:v": "high", "fps_mode": "cfr",
    }  # fmt: skip
    if threads:
        kwargs["threads"] = threads
    args: list[str] = ffmpeg.output(v, str(output), **kwargs).get_args()
    out = args.pop()
    return ["-y", *args, *COLOR_ARGS, "-an", "-f", "mp4", out]


def concat_list(paths: Sequence[Path | str]) -> str:
    """The concat demuxer's list file: one ``file '<path>'`` line each, quotes escaped the demuxer's way."""
    lines = []
    for p in paths:
        escaped = str(Path(p).resolve()).replace("'", "'\\''")
        lines.append(f"file '{escaped}'")
    return "\n".join(lines) + "\n"


def concat_copy_args(list_file: Path | str, output: Path | str) -> list[str]:
    """Join matching clips by stream copy through the concat demuxer (picture only: the sound is mixed anew)."""
    return ["-y", "-f", "concat", "-safe", "0", "-i", str(list_file), "-map", "0:v:0", "-c", "copy", "-an",
            "-f", "mp4", str(output)]  # fmt: skip


def _to_rate(stream: Any, plan: Plan) -> Any:
    return stream.filter("aresample", plan.sample_rate).filter(
        "aformat", sample_fmts="fltp", sample_rates=plan.sample_rate, channel_layouts=_layout(plan.channels)
    )


def _exact(stream: Any, samples: int) -> Any:
    """Exactly ``samples`` samples: padded with silence when short, cut when long."""
    return stream.filter("apad", whole_len=samples).filter("atrim", end_sample=samples)


def mix_args(
    plan: Plan,
    output: Path | str,
    *,
    ducking: Ducking,
    music_level: Path | str | None = None,
    level_rate: int = 2000,
) -> list[str]:
    """Render the whole sound of ``plan`` to a float WAV and measure it (ebur128 in the same run).

    Buses: the scenes' own sound (silence for a clip without audio), the dialogue lines at their samples, and
    the music looped/trimmed to the exact length with fades, ducked under the voice by sidechaincompress. The
    ebur128 summary (integrated loudness, LRA, true peak) is printed to the log at info level;
    ``music_level`` also writes the ducked music bus, mono at ``level_rate`` Hz, for the timeline picture.
    """
    sr, n = plan.sample_rate, plan.samples
    lay = _layout(plan.channels)
    buses: list[Any] = []

    parts: list[Any] = []
    sounding = [s for s in plan.scenes if s.has_audio and s.audio_gain_db is not None]
    sources = iter(_streams([s.path for s in sounding], "a"))
    any_sound = bool(sounding)
    # One silence source split for every silent scene: ffmpeg-python merges identical nodes, so two silent
    # scenes of one length built alike would be one filter wired to two places.
    silent_count = len(plan.scenes) - len(sounding)
    silence: Any = ffmpeg.input(f"anullsrc=r={sr}:cl={lay}", f="lavfi").audio
    silences = iter(silence.filter_multi_output("asplit", silent_count) if silent_count > 1 else [silence])
    for scene in plan.scenes:
        samples = round(scene.frames * sr / plan.rate)
        if scene.has_audio and scene.audio_gain_db is not None:
            a = _to_rate(next(sources), plan)
            start = round(scene.in_frame * sr / plan.rate)
            a = a.filter("atrim", start_sample=start).filter("asetpts", "PTS-STARTPTS")
            a = _exact(a, samples)
            if scene.audio_gain_db:
                a = a.filter("volume", f"{scene.audio_gain_db}dB")
        else:
            a = next(silences).filter("atrim", end_sample=samples)
        parts.append(a)
    if any_sound:
        scene_frames = [s.frames for s in plan.scenes]
        buses.append(_exact(_join(parts, scene_frames, plan, audio=True), n))

    voice: Any = None
    if plan.dialogue:
        lines = []
        for line, source in zip(plan.dialogue, _streams([d.path for d in plan.dialogue], "a"), strict=True):
            a = _to_rate(source, plan)
            if line.gain_db:
                a = a.filter("volume", f"{line.gain_db}dB")
            lines.append(a.filter("adelay", delays=f"{line.start_sample}S", all=1))
        voice = lines[0] if len(lines) == 1 else ffmpeg.filter(lines, "amix", inputs=len(lines), normalize=0)
        voice = _exact(voice, n)

    if plan.music is not None:
        m = plan.music
        kwargs = {"stream_loop": -1} if m.loop else {}
        music = _to_rate(ffmpeg.input(m.path, **kwargs).audio, plan)
        if m.offset_s:
            music = music.filter("atrim", start_sample=round(m.offset_s * sr)).filter("asetpts", "PTS-STARTPTS")
        music = _exact(music, n)
        duration = n / sr
        if m.fade_in_s:
            music = music.filter("afade", t="in", st=0, d=f"{m.fade_in_s:.6f}")
        if m.fade_out_s:
            music = music.filter("afade", t="out", st=f"{duration - m.fade_out_s:.6f}", d=f"{m.fade_out_s:.6f}")
        if m.gain_db:
            music = music.filter("volume", f"{m.gain_db}dB")
        if voice is not None and ducking.enabled:
            split = voice.filter_multi_output("asplit", 2)
            voice = split[0]
            music = ffmpeg.filter(
                [music, split[1]], "sidechaincompress", threshold=ducking.threshold, ratio=ducking.ratio,
                attack=ducking.attack_ms, release=ducking.release_ms, makeup=1,
            )  # fmt: skip
        level_out: Any = None
        if music_level is not None:
            msplit = music.filter_multi_output("asplit", 2)
            music = msplit[0]
            level = msplit[1].filter("aresample", level_rate).filter("aformat", channel_layouts="mono")
            level_out = ffmpeg.output(level, str(music_level), acodec="pcm_s16le", f="wav")
        buses.append(music)
    else:
        level_out = None
    if voice is not None:
        buses.append(voice)

    if not buses:
        mix = ffmpeg.input(f"anullsrc=r={sr}:cl={lay}", f="lavfi").audio.filter("atrim", end_sample=n)
    elif len(buses) == 1:
        mix = buses[0]
    else:
        mix = ffmpeg.filter(buses, "amix", inputs=len(buses), normalize=0, duration="longest")
    mix = _exact(mix, n).filter("aformat", sample_fmts="flt")
    split = mix.filter_multi_output("asplit", 2)
    outputs = [
        ffmpeg.output(split[0], str(output), acodec="pcm_f32le", f="wav"),
        ffmpeg.output(split[1].filter("ebur128", peak="true", framelog="verbose"), "-", f="null"),
    ]
    if level_out is not None:
        outputs.append(level_out)
    args: list[str] = ffmpeg.merge_outputs(*outputs).get_args()
    return ["-y", *args]


def alimiter_limit(db: float) -> float:
    """alimiter's ``limit`` (linear, 0.0625..1) for a ceiling in dBFS."""
    return max(0.0625, min(1.0, 10 ** (db / 20)))


def _pre_chain(gain_db: float, limit_db: float | None) -> list[str]:
    chain = [f"volume={gain_db:.3f}dB"]
    if limit_db is not None:
        # level=disabled: alimiter would otherwise raise the output to 0 dBFS; latency=1 keeps sample alignment
        # and the length exact (its lookahead would delay the sound by the attack time).
        chain.append(f"alimiter=limit={alimiter_limit(limit_db):.6f}:attack=5:release=50:level=disabled:latency=1")
    return chain


def loudness_args(wav: Path | str, *, gain_db: float = 0.0, limit_db: float | None = None) -> list[str]:
    """Measure ``wav`` after the pre-gain and limiter with ebur128 (summary at info level; nothing written).

    ebur128 reads the same BS.1770 figures as loudnorm's first pass (measured here: equal I, threshold and
    true peak at its one decimal) in a quarter of the time, since loudnorm resamples to 192 kHz.
    """
    chain = [*_pre_chain(gain_db, limit_db), "ebur128=peak=true:framelog=verbose"]
    return ["-i", str(wav), "-map", "0:a:0", "-af", ",".join(chain), "-f", "null", "-"]


def audio_final_args(
    wav: Path | str,
    output: Path | str,
    *,
    plan: Plan,
    target_lufs: float,
    target_tp: float,
    measured: dict[str, float] | None,
    gain_db: float = 0.0,
    limit_db: float | None = None,
    bitrate: str = "192k",
) -> list[str]:
    """The second loudness pass and the AAC-LC encode: pre-gain, limiter, loudnorm (linear) and exact length.

    ``measured`` holds the first pass's ``I``, ``LRA``, ``TP`` and ``thresh`` of the same pre-gain + limiter
    chain, so loudnorm applies one gain (linear mode); ``None`` (a silent mix) skips loudnorm. LRA=50 (its
    maximum) because loudnorm leaves linear mode whenever the measured range exceeds its LRA target.
    """
    chain = _pre_chain(gain_db, limit_db)
    if measured is not None:
        chain.append(
            f"loudnorm=I={target_lufs:g}:TP={target_tp:g}:LRA=50:measured_I={measured['I']:.2f}"
            f":measured_LRA={measured['LRA']:.2f}:measured_TP={measured['TP']:.2f}"
            f":measured_thresh={measured['thresh']:.2f}:offset=0:linear=true:print_format=json"
        )
    # loudnorm works at 192 kHz; back to the target rate, then exactly the picture's length.
    chain += [f"aresample={plan.sample_rate}", f"apad=whole_len={plan.samples}", f"atrim=end_sample={plan.samples}"]
    return [
        "-y", "-i", str(wav), "-map", "0:a:0", "-af", ",".join(chain), "-c:a", "aac", "-profile:a", "aac_low",
        "-b:a", bitrate, "-ar", str(plan.sample_rate), "-ac", str(plan.channels), "-f", "mp4", str(output),
    ]  # fmt: skip


def mux_args(
    video: Path | str,
    audio: Path | str,
    output: Path | str,
    *,
    srt: Path | str | None = None,
    language: str = "und",
) -> list[str]:
    """Picture and sound (and a soft subtitle track) into the final MP4 by stream copy, moov first."""
    args = ["-y", "-i", str(video), "-i", str(audio)]
    if srt is not None:
        args += ["-i", str(srt)]
    args += ["-map", "0:v:0", "-map", "1:a:0"]
    if srt is not None:
        args += ["-map", "2:s:0", "-c:s", "mov_text", "-metadata:s:s:0", f"language={language}"]
    return [*args, "-c:v", "copy", "-c:a", "copy", "-movflags", "+faststart", "-f", "mp4", str(output)]


def normalize_clip_args(
    path: str,
    scene: ScenePlan,
    plan: Plan,
    target: VideoTarget,
    output: Path | str,
    *,
    bitrate: str = "192k",
) -> list[str]:
    """One clip normalized on its own (size, rate, yuv420p, SAR 1:1, BT.709; 48 kHz stereo AAC, silence added
    when it has none), so that clips normalized alike join later by stream copy."""
    inp = ffmpeg.input(path)
    v = scene_video(inp.video, scene, plan, target)
    v = v.filter("setparams", color_primaries="bt709", color_trc="bt709", colorspace="bt709", range="tv")
    samples = round(scene.frames * plan.sample_rate / plan.rate)
    if scene.has_audio:
        start = round(scene.in_frame * plan.sample_rate / plan.rate)
        a = _to_rate(inp.audio, plan).filter("atrim", start_sample=start).filter("asetpts", "PTS-STARTPTS")
    else:
        a = ffmpeg.input(f"anullsrc=r={plan.sample_rate}:cl={_layout(plan.channels)}", f="lavfi").audio
    a = _exact(a, samples)
    kwargs: dict[str, Any] = {
        "vcodec": target.codec, "preset": target.preset, "crf": target.crf, "pix_fmt": "yuv420p", "r": plan.fps,
        "g": max(1, round(2 * plan.rate)), "profile:v": "high", "fps_mode": "cfr", "acodec": "aac",
        "profile:a": "aac_low", "b:a": bitrate, "movflags": "+faststart",
    }  # fmt: skip
    args: list[str] = ffmpeg.output(v, a, str(output), **kwargs).get_args()
    out = args.pop()
    return ["-y", *args, *COLOR_ARGS, "-f", "mp4", out]


def music_fit_args(
    path: str,
    output: Path | str,
    *,
    samples: int,
    sample_rate: int,
    channels: int,
    loop: bool,
    offset_s: float = 0.0,
    fade_in_s: float = 0.0,
    fade_out_s: float = 0.0,
) -> list[str]:
    """Music looped (``-stream_loop -1``, read again from disk: no buffering of the track) or trimmed to exactly
    ``samples`` samples, from ``offset_s``, faded in and out; written as 16-bit WAV."""
    args = ["-y"]
    if loop:
        args += ["-stream_loop", "-1"]
    duration = samples / sample_rate
    chain = [
        f"aresample={sample_rate}",
        f"aformat=sample_fmts=fltp:sample_rates={sample_rate}:channel_layouts={_layout(channels)}",
    ]
    if offset_s:
        chain += [f"atrim=start_sample={round(offset_s * sample_rate)}", "asetpts=PTS-STARTPTS"]
    chain += [f"apad=whole_len={samples}", f"atrim=end_sample={samples}"]
    if fade_in_s:
        chain.append(f"afade=t=in:st=0:d={fade_in_s:.6f}")
    if fade_out_s:
        chain.append(f"afade=t=out:st={duration - fade_out_s:.6f}:d={fade_out_s:.6f}")
    return [*args, "-i", path, "-map", "0:a:0", "-af", ",".join(chain), "-c:a", "pcm_s16le", "-f", "wav", str(output)]
