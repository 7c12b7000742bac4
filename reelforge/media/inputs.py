"""Checks on a timeline's files before anything is encoded: each problem names the file and what is wrong.

* clips: readable (PyAV opens them), a video stream, the first frame decodes ("failed to read first frame" is
  how corrupt concatenations show up elsewhere), every packet the header promises is there (a truncated
  download), and the last frame decodes;
* dialogue lines: audio, not zero length, not silent (peak under -60 dBFS);
* music: the same, and at least one beat long (``reelforge.media.beats.analyse_music``, which also returns the
  beat grid used for snapping and for the timeline picture);
* the subtitle font, when burning in: readable, with a glyph for every character, and libass draws with it.

Problems are collected and raised together (``InvalidInputs``; one alone is raised as itself).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np

from reelforge.media.beats import SILENT_PEAK_DB, BeatGrid, analyse_music
from reelforge.media.errors import MediaInputError, MediaProbeError, MissingStream, SilentAudio, raise_collected
from reelforge.media.probe import open_media, probe
from reelforge.media.probe_types import MediaInfo
from reelforge.media.timeline import Timeline

__all__ = ["InputFacts", "check_audio", "check_clip", "inspect_inputs"]


@dataclass
class InputFacts:
    """Probes of every file by the timeline's path, and the music's beat grid (None without music)."""

    infos: dict[str, MediaInfo]
    grid: BeatGrid | None


def check_clip(path: Path | str, info: MediaInfo) -> None:
    """Raise ``MediaProbeError``/``MissingStream`` when a clip is truncated, corrupt or has no picture."""
    if not info.video:
        raise MissingStream("has no video stream; a scene needs one", path=path, stream="video")
    with open_media(path) as container:
        stream = container.streams.video[0]
        promised = int(stream.frames or 0)
        try:
            first = next(container.decode(stream), None)
        except (av.FFmpegError, StopIteration) as exc:
            raise MediaProbeError(f"its first frame cannot be decoded (corrupt?): {exc}", path=path) from exc
        if first is None:
            raise MediaProbeError("its first frame cannot be decoded: no frame at all", path=path)
    counted = info.video[0].frame_count
    if counted is None:
        raise MediaProbeError("its video packets cannot be read (corrupt or truncated)", path=path)
    if promised and counted < promised:
        raise MediaProbeError(f"is truncated: {counted} of the {promised} frames its header lists are there", path=path)
    from reelforge.media.frames import decode_last

    decode_last(path)


def _peak_db(path: Path | str) -> tuple[float, float]:
    """``(peak dBFS, seconds)`` of the first audio stream, decoded through PyAV."""
    peak = 0.0
    samples = 0
    rate = 1
    with open_media(path) as container:
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate or 1
        try:
            for frame in container.decode(stream):
                data: Any = frame.to_ndarray()
                if data.size:
                    scale = float(np.iinfo(data.dtype).max) if data.dtype.kind in "iu" else 1.0
                    peak = max(peak, float(np.max(np.abs(data.astype(np.float32)))) / scale)
                samples += frame.samples
        except av.FFmpegError as exc:
            raise MediaProbeError(f"its audio cannot be decoded (corrupt or truncated?): {exc}", path=path) from exc
    return (20 * math.log10(peak) if peak > 0 else -math.inf), samples / rate


def check_audio(path: Path | str, info: MediaInfo, *, what: str) -> None:
    """Raise when ``path`` has no audio, no samples, or only silence (``what`` says what it is for)."""
    if not info.audio:
        raise MissingStream(f"has no audio stream; {what} needs one", path=path, stream="audio")
    peak, seconds = _peak_db(path)
    if seconds <= 0:
        raise SilentAudio(f"holds no audio samples (zero length); {what} needs sound", path=path, duration_s=0.0)
    if peak < SILENT_PEAK_DB:
        raise SilentAudio(
            f"is silent (peak {peak:.1f} dBFS over {seconds:.2f} s); {what} needs sound",
            path=path, duration_s=seconds, peak_db=peak,
        )  # fmt: skip


def inspect_inputs(timeline: Timeline) -> InputFacts:
    """Probe and check every file of ``timeline``; raise what is wrong, naming each file."""
    problems: list[MediaInputError] = []
    infos: dict[str, MediaInfo] = {}
    grid: BeatGrid | None = None
    clip_paths = list(dict.fromkeys(c.path for c in timeline.clips))
    audio_paths = list(dict.fromkeys(d.path for d in timeline.dialogue))
    for path in clip_paths + audio_paths + ([timeline.music.path] if timeline.music else []):
        if path in infos:
            continue
        try:
            infos[path] = probe(path, count=path in clip_paths)
        except MediaInputError as exc:
            problems.append(exc)
    for path in clip_paths:
        if path in infos:
            try:
                check_clip(path, infos[path])
            except MediaInputError as exc:
                problems.append(exc)
    for path in audio_paths:
        if path in infos:
            try:
                check_audio(path, infos[path], what="a dialogue line")
            except MediaInputError as exc:
                problems.append(exc)
    if timeline.music is not None and timeline.music.path in infos:
        path = timeline.music.path
        try:
            if not infos[path].audio:
                raise MissingStream("has no audio stream; the music bed needs one", path=path, stream="audio")
            grid = analyse_music(path)
            if timeline.beat_snap.enabled and not grid.beats:
                raise MediaInputError(
                    "has no steady beat to snap cuts to (no tempo found); switch beat_snap off or use other music",
                    path=path,
                )
        except MediaInputError as exc:
            problems.append(exc)
    raise_collected(problems)
    return InputFacts(infos=infos, grid=grid)
