"""Checks on stored media before anything counts as done, and the timing rules video models impose.

* ``frames_for(duration_s, fps)``: the frame count a clip needs to hold ``duration_s`` of speech: the smallest
  ``4n+1`` (Wan's rule) at or above ``duration_s x fps``, so no syllable is cut.
* ``audio_stage``: a CPU stage's engine call: probe one audio file (``inputs["audio"]``), refuse it when it is
  not audio or shorter than ``params["min_s"]``; record its duration, rate and channels.
* ``video_stage``: probe one video (``inputs["video"]``): video and audio streams present, duration within one
  frame of ``params["duration_s"]`` (when given); record what it found.
* ``verify_output``: an assembled MP4 against its plan: streams, exact frame count, durations within a frame,
  rate and channels, moov before mdat, loudness and true peak measured on the file (ebur128).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from reelforge.media.errors import MediaError
from reelforge.media.loudness import Loudness, parse_ebur128
from reelforge.media.probe import MediaProbeError, probe
from reelforge.media.runner import run_job
from reelforge.records import StageOutput

__all__ = [
    "MediaCheckFailed",
    "OutputExpectation",
    "OutputReport",
    "audio_stage",
    "frames_for",
    "measure_loudness",
    "moov_before_mdat",
    "top_level_boxes",
    "verify_output",
    "video_stage",
]


class MediaCheckFailed(MediaError):
    """A produced or supplied file is not the media it should be; ``problems`` lists what is wrong."""

    def __init__(
        self, message: str, *, path: Path | str | None = None, stderr: str = "", problems: Sequence[str] = ()
    ) -> None:
        self.problems = list(problems) or [message]
        super().__init__(message, path=path, stderr=stderr)


def frames_for(duration_s: float, fps: float, *, step: int = 4, minimum: int = 5, maximum: int | None = None) -> int:
    """The smallest ``step*n + 1`` frames covering ``duration_s`` at ``fps`` (at least ``minimum``)."""
    if duration_s <= 0 or fps <= 0:
        raise ValueError(f"duration ({duration_s}) and fps ({fps}) must be positive")
    needed = math.ceil(duration_s * fps - 1e-9)
    frames = max(minimum, step * math.ceil(max(0, needed - 1) / step) + 1)
    if maximum is not None and frames > maximum:
        raise MediaCheckFailed(
            f"{duration_s:.2f} s at {fps:g} fps needs {frames} frames; the clip holds at most {maximum} "
            f"({(maximum - 1) / fps:.2f} s): use a shorter line or split it"
        )
    return frames


def audio_stage(inputs: Mapping[str, Path], params: Mapping[str, Any], out_dir: Path) -> StageOutput:
    """Stage function: facts of ``inputs["audio"]``; refuses non-audio and clips under ``params["min_s"]``."""
    path = inputs["audio"]
    try:
        info = probe(path, count=False)
    except MediaProbeError as exc:
        raise MediaCheckFailed(f"not a readable media file: {exc}", path=path) from exc
    if not info.has_audio or not info.duration_s:
        raise MediaCheckFailed("has no audio stream", path=path)
    minimum = float(params.get("min_s", 0.2))
    if info.duration_s < minimum:
        raise MediaCheckFailed(f"is {info.duration_s:.2f} s long, shorter than {minimum:g} s", path=path)
    stream = info.audio[0]
    return StageOutput(
        record={"duration_s": info.duration_s, "sample_rate": stream.sample_rate, "channels": stream.channels}
    )


def video_stage(inputs: Mapping[str, Path], params: Mapping[str, Any], out_dir: Path) -> StageOutput:
    """Stage function: ``inputs["video"]`` has video and audio, and lasts ``params["duration_s"]`` within a frame."""
    path = inputs["video"]
    try:
        info = probe(path)
    except MediaProbeError as exc:
        raise MediaCheckFailed(f"not a readable video: {exc}", path=path) from exc
    if not info.has_video:
        raise MediaCheckFailed("has no video stream", path=path)
    if params.get("audio", True) and not info.has_audio:
        raise MediaCheckFailed("has no audio stream", path=path)
    fps = info.fps or 0.0
    expected = params.get("duration_s")
    if expected is not None and info.duration_s is not None and fps > 0:
        if abs(info.duration_s - float(expected)) > 1.0 / fps + 1e-3:
            raise MediaCheckFailed(
                f"lasts {info.duration_s:.3f} s, not {float(expected):.3f} s (within one frame at {fps:g} fps)",
                path=path,
            )
    return StageOutput(
        record={
            "duration_s": info.duration_s,
            "fps": fps,
            "frames": info.frame_count,
            "width": info.width,
            "height": info.height,
            "audio": info.has_audio,
        }
    )


# ----------------------------------------------------------------------------------- assembled output checks


def top_level_boxes(path: Path, limit: int = 64) -> list[str]:
    """The types of an MP4's top-level boxes in file order (``["ftyp", "moov", "mdat"]`` when fast-started)."""
    boxes: list[str] = []
    size_of_file = path.stat().st_size
    with path.open("rb") as f:
        offset = 0
        while offset < size_of_file and len(boxes) < limit:
            f.seek(offset)
            header = f.read(16)
            if len(header) < 8:
                break
            size = int.from_bytes(header[:4], "big")
            kind = header[4:8].decode("latin-1")
            if size == 1 and len(header) >= 16:
                size = int.from_bytes(header[8:16], "big")
            elif size == 0:
                size = size_of_file - offset
            if size < 8:
                break
            boxes.append(kind)
            offset += size
    return boxes


def moov_before_mdat(path: Path) -> bool:
    """Whether the MP4's index (moov) comes before its media data (mdat): playable while it downloads."""
    boxes = top_level_boxes(path)
    return "moov" in boxes and "mdat" in boxes and boxes.index("moov") < boxes.index("mdat")


def measure_loudness(path: Path, *, timeout: float | None = None) -> Loudness:
    """Integrated loudness, range and true peak of ``path``'s first audio stream, measured by ebur128."""
    result = run_job(
        ["-i", path, "-map", "0:a:0", "-af", "ebur128=peak=true:framelog=verbose", "-f", "null", "-"],
        input_path=path, loglevel="info", timeout=timeout,
    )  # fmt: skip
    return parse_ebur128(result.stderr)


class OutputExpectation(BaseModel):
    """What an assembled MP4 must be: frames at fps, size, audio rate/channels, loudness within tolerance."""

    frames: int
    fps: str
    width: int
    height: int
    sample_rate: int
    channels: int
    loudness_lufs: float | None = None  # None: silent programme, not checked
    loudness_tolerance_lu: float = 0.5
    true_peak_db: float = -1.0
    subtitle_track: bool = False


class OutputReport(BaseModel):
    """What ``verify_output`` measured on the file."""

    duration_s: float
    video_duration_s: float
    audio_duration_s: float
    frames: int
    integrated_lufs: float
    true_peak_db: float
    lra_lu: float
    faststart: bool


def verify_output(path: Path, expect: OutputExpectation, *, timeout: float | None = None) -> OutputReport:
    """Check an assembled MP4 against ``expect``; every problem is listed in one ``MediaCheckFailed``.

    Streams (H.264 yuv420p, AAC-LC), frame count (exact), video and audio duration (within one frame),
    rate, channels, size, moov before mdat, and the loudness and true peak measured on the file itself.
    """
    problems: list[str] = []
    try:
        info = probe(path)
    except MediaProbeError as exc:
        raise MediaCheckFailed(f"the output cannot be read: {exc}", path=path) from exc
    rate = Fraction(expect.fps)
    frame_s = float(1 / rate)
    expected_s = float(expect.frames / rate)
    video_s = audio_s = 0.0
    frames = 0
    if not info.video:
        problems.append("no video stream")
    else:
        v = info.video[0]
        frames = v.frame_count or 0
        video_s = v.duration_s or 0.0
        if (v.codec, v.pix_fmt) != ("h264", "yuv420p"):
            problems.append(f"video is {v.codec}/{v.pix_fmt}, not h264/yuv420p")
        if (v.width, v.height) != (expect.width, expect.height):
            problems.append(f"picture is {v.width}x{v.height}, not {expect.width}x{expect.height}")
        if v.fps_rational and Fraction(v.fps_rational) != rate:
            problems.append(f"runs at {v.fps_rational} fps, not {expect.fps}")
        if frames != expect.frames:
            problems.append(f"has {frames} frames, not {expect.frames}")
        if abs(video_s - expected_s) > frame_s + 1e-6:
            problems.append(f"picture lasts {video_s:.4f} s, not {expected_s:.4f} s (within one frame)")
    if not info.audio:
        problems.append("no audio stream")
    else:
        a = info.audio[0]
        audio_s = a.duration_s or 0.0
        if a.codec != "aac" or (a.profile or "LC") != "LC":
            problems.append(f"audio is {a.codec} {a.profile}, not AAC-LC")
        if (a.sample_rate, a.channels) != (expect.sample_rate, expect.channels):
            problems.append(
                f"audio is {a.sample_rate} Hz x{a.channels}, not {expect.sample_rate} Hz x{expect.channels}"
            )
        if abs(audio_s - expected_s) > frame_s + 1e-6:
            problems.append(f"sound lasts {audio_s:.4f} s, not {expected_s:.4f} s (within one frame)")
    if expect.subtitle_track and not info.subtitles:
        problems.append("no subtitle track")
    faststart = moov_before_mdat(path)
    if not faststart:
        problems.append(f"moov is not before mdat (boxes {top_level_boxes(path)})")
    loud = measure_loudness(path, timeout=timeout) if info.audio else Loudness(-70.0, -80.0, 0.0, -math.inf)
    if expect.loudness_lufs is not None:
        if abs(loud.integrated - expect.loudness_lufs) > expect.loudness_tolerance_lu:
            problems.append(
                f"loudness {loud.integrated:.1f} LUFS, not {expect.loudness_lufs:g} within "
                f"{expect.loudness_tolerance_lu:g} LU"
            )
        if loud.true_peak > expect.true_peak_db + 1e-9:
            problems.append(f"true peak {loud.true_peak:.1f} dBTP above {expect.true_peak_db:g}")
    if problems:
        raise MediaCheckFailed(
            "the output is not what was planned: " + "; ".join(problems), path=path, problems=problems
        )
    return OutputReport(
        duration_s=info.duration_s or 0.0, video_duration_s=video_s, audio_duration_s=audio_s, frames=frames,
        integrated_lufs=loud.integrated, true_peak_db=loud.true_peak, lra_lu=loud.lra, faststart=faststart,
    )  # fmt: skip
