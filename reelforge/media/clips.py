"""Single-file operations: normalize one clip, fit music to an exact length; and their stage functions.

Each writes to a temporary name beside the output, checks the result (frames, durations, streams) and only
then renames it into place, like the assembler.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reelforge.media.beats import analyse_music, describe
from reelforge.media.errors import MediaInputError
from reelforge.media.frames import last_frame
from reelforge.media.graph import music_fit_args, normalize_clip_args
from reelforge.media.inputs import check_audio, check_clip
from reelforge.media.plan import make_plan
from reelforge.media.probe import probe
from reelforge.media.probe_types import MediaInfo
from reelforge.media.runner import ProgressCallback, run_job
from reelforge.media.timeline import AudioTarget, Clip, Timeline, VideoTarget
from reelforge.media.verify import MediaCheckFailed
from reelforge.records import Product, StageOutput

__all__ = [
    "beats_stage",
    "fit_music",
    "last_frame_stage",
    "normalize_clip",
    "normalize_stage",
]


def _tmp(out: Path) -> Path:
    return out.with_name(f".{out.stem}.tmp{out.suffix}")


def normalize_clip(
    path: Path | str,
    out: Path,
    *,
    video: VideoTarget | None = None,
    audio: AudioTarget | None = None,
    in_s: float = 0.0,
    out_s: float | None = None,
    progress: ProgressCallback | None = None,
    timeout: float | None = None,
) -> MediaInfo:
    """``path`` (from ``in_s`` to ``out_s``) at the target size, rate, yuv420p, SAR 1:1, BT.709, with 48 kHz
    stereo AAC (silence when it has none), into ``out``. Clips normalized with one target join by stream copy.
    """
    video = video or VideoTarget()
    audio = audio or AudioTarget()
    source = str(Path(path).resolve())
    info = probe(source)
    check_clip(source, info)
    timeline = Timeline(clips=[Clip(path=source, in_s=in_s, out_s=out_s)], video=video, audio=audio)
    plan = make_plan(timeline, {source: info})
    scene = plan.scenes[0]
    tmp = _tmp(out)
    args = normalize_clip_args(source, scene, plan, video, tmp, bitrate=audio.bitrate)
    run_job(args, input_path=source, total_s=plan.duration_s, progress=progress, timeout=timeout)
    result = probe(tmp)
    problems = []
    if result.frame_count != scene.frames:
        problems.append(f"{result.frame_count} frames, not {scene.frames}")
    if not result.audio or (result.audio[0].sample_rate, result.audio[0].channels) != (
        audio.sample_rate,
        audio.channels,
    ):
        problems.append("no audio at the target rate and channels")
    if (result.width, result.height) != (video.width, video.height):
        problems.append(f"{result.width}x{result.height}, not {video.width}x{video.height}")
    if problems:
        tmp.unlink(missing_ok=True)
        raise MediaCheckFailed("normalized clip is wrong: " + "; ".join(problems), path=source, problems=problems)
    tmp.replace(out)
    result.path = str(out)
    return result


def fit_music(
    path: Path | str,
    out: Path,
    *,
    duration_s: float,
    sample_rate: int = 48000,
    channels: int = 2,
    loop: bool = True,
    offset_s: float = 0.0,
    fade_in_s: float = 0.5,
    fade_out_s: float = 1.5,
    timeout: float | None = None,
) -> int:
    """Music of exactly ``round(duration_s * sample_rate)`` samples (looped or trimmed, faded) as WAV in ``out``;
    returns the sample count. Refuses silent, zero-length or unreadable music naming the file."""
    source = str(Path(path).resolve())
    info = probe(source, count=False)
    check_audio(source, info, what="the music bed")
    samples = round(duration_s * sample_rate)
    if samples <= 0:
        raise MediaInputError(f"cannot fit music to {duration_s} s", path=source)
    tmp = _tmp(out)
    args = music_fit_args(
        source,
        tmp,
        samples=samples,
        sample_rate=sample_rate,
        channels=channels,
        loop=loop,
        offset_s=offset_s,
        fade_in_s=min(fade_in_s, duration_s / 2),
        fade_out_s=min(fade_out_s, duration_s / 2),
    )
    run_job(args, input_path=source, total_s=duration_s, timeout=timeout)
    import wave

    with wave.open(str(tmp), "rb") as w:
        got = w.getnframes()
    if got != samples:
        tmp.unlink(missing_ok=True)
        raise MediaCheckFailed(f"fitted music has {got} samples, not {samples}", path=source)
    tmp.replace(out)
    return got


def normalize_stage(inputs: Mapping[str, Path], params: Mapping[str, Any], out_dir: Path) -> StageOutput:
    """Stage function: ``inputs["clip"]`` normalized to ``params["video"]``/``params["audio"]`` (targets)."""
    video = VideoTarget.model_validate(params.get("video", {}))
    audio = AudioTarget.model_validate(params.get("audio", {}))
    out = out_dir / "normalized.mp4"
    info = normalize_clip(
        inputs["clip"], out, video=video, audio=audio, in_s=float(params.get("in_s", 0.0)), out_s=params.get("out_s")
    )
    record = {"frames": info.frame_count, "duration_s": info.duration_s, "width": info.width, "height": info.height}
    return StageOutput(products=[Product(path=out, kind="video", node_id="clip")], record=record)


def last_frame_stage(inputs: Mapping[str, Path], params: Mapping[str, Any], out_dir: Path) -> StageOutput:
    """Stage function: the exact last frame of ``inputs["video"]`` as PNG (for the next clip of a chain)."""
    grab = last_frame(inputs["video"], out_dir / "last.png")
    record = {"index": grab.index, "time_s": grab.time_s, "width": grab.width, "height": grab.height}
    return StageOutput(products=[Product(path=grab.path, kind="image", node_id="last_frame")], record=record)


def beats_stage(inputs: Mapping[str, Path], params: Mapping[str, Any], out_dir: Path) -> StageOutput:
    """Stage function: tempo and beat times of ``inputs["music"]`` (record ``{"bpm", "beats_s", ...}``)."""
    grid = analyse_music(inputs["music"])
    return StageOutput(record={**describe(grid), "beats_s": [round(b, 4) for b in grid.beats]})
