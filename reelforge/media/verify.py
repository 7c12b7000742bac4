"""Checks on stored media before anything counts as done, and the timing rules video models impose.

* ``frames_for(duration_s, fps)``: the frame count a clip needs to hold ``duration_s`` of speech: the smallest
  ``4n+1`` (Wan's rule) at or above ``duration_s x fps``, so no syllable is cut.
* ``audio_stage``: a CPU stage's engine call: probe one audio file (``inputs["audio"]``), refuse it when it is
  not audio or shorter than ``params["min_s"]``; record its duration, rate and channels.
* ``video_stage``: probe one video (``inputs["video"]``): video and audio streams present, duration within one
  frame of ``params["duration_s"]`` (when given); record what it found.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reelforge.media.errors import MediaError
from reelforge.media.probe import MediaProbeError, probe
from reelforge.records import StageOutput

__all__ = ["MediaCheckFailed", "audio_stage", "frames_for", "video_stage"]


class MediaCheckFailed(MediaError):
    """A produced or supplied file is not the media it should be; the message says what is wrong."""


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
            "duration_s": info.duration_s, "fps": fps, "frames": info.frame_count,
            "width": info.width, "height": info.height, "audio": info.has_audio,
        }
    )
