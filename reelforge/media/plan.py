"""From a timeline and the probed facts of its files to whole frames and samples: the assembly plan (pure).

Every duration becomes a whole number of frames at the target rate: scene ``i`` uses ``frames`` frames of its
clip from ``in_frame``; boundary ``i`` overlaps ``overlap`` frames (0 for a cut). Scene ``i`` starts at
``start = sum(frames[:i]) - sum(overlap[:i])`` and the video lasts ``total_frames / fps`` seconds exactly; the
audio lasts ``samples = round(total_frames * sample_rate / fps)`` samples (exact at 24/25/30/48/50/60 fps).

``make_plan`` reports every problem it can see (an out point past a clip's end, a transition longer than its
scenes, a cue or a dialogue line outside the video, a clip at another frame rate) before anything runs, and
decides whether the picture can be joined by stream copy (every clip whole, already matching the target, cuts
only, nothing burned in) or must be encoded, with the reason.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from fractions import Fraction
from typing import Literal

from pydantic import BaseModel, ConfigDict

from reelforge.media.errors import (
    CueOutOfRange,
    FpsMismatch,
    MediaInputError,
    MissingStream,
    TimelineInvalid,
    raise_collected,
)
from reelforge.media.probe_types import MediaInfo, VideoStream
from reelforge.media.timeline import Timeline, parse_fps

__all__ = ["DialoguePlan", "MusicPlan", "Plan", "ScenePlan", "copy_blockers", "make_plan"]


class ScenePlan(BaseModel):
    """Scene ``index``: ``frames`` frames of ``path`` from ``in_frame`` (at the target rate), starting at ``start``."""

    model_config = ConfigDict(frozen=True)

    index: int
    path: str
    in_frame: int
    frames: int
    start: int  # first timeline frame
    source_frames: int  # frames the clip has at the target rate
    convert_fps: bool  # the clip runs at another rate and is converted by the fps filter
    has_audio: bool
    audio_gain_db: float | None  # None: the clip's own sound is not used
    width: int
    height: int
    sar: str | None
    label: str

    @property
    def end(self) -> int:
        return self.start + self.frames


class DialoguePlan(BaseModel):
    model_config = ConfigDict(frozen=True)

    index: int
    path: str
    start_sample: int
    samples: int
    gain_db: float
    speaker: str | None = None
    text: str | None = None


class MusicPlan(BaseModel):
    model_config = ConfigDict(frozen=True)

    path: str
    duration_s: float
    offset_s: float
    loop: bool  # the track is shorter than offset + video: read it again from the start (-stream_loop)
    gain_db: float
    fade_in_s: float
    fade_out_s: float


class Plan(BaseModel):
    """Whole frames and samples for one assembly; ``video_mode`` is ``copy`` or ``encode`` (``copy_reason``)."""

    model_config = ConfigDict(frozen=True)

    fps: str  # exact, "24/1"
    width: int
    height: int
    scenes: list[ScenePlan]
    overlaps: list[int]  # frames per boundary (0 = cut)
    styles: list[str]  # xfade transition per boundary ("" for cuts)
    total_frames: int
    sample_rate: int
    channels: int
    samples: int
    dialogue: list[DialoguePlan]
    music: MusicPlan | None
    video_mode: Literal["copy", "encode"]
    copy_reason: str  # why copy was (not) possible

    @property
    def rate(self) -> Fraction:
        return Fraction(self.fps)

    @property
    def duration_s(self) -> float:
        return float(self.total_frames / self.rate)

    def frame_time(self, frame: int) -> float:
        return float(frame / self.rate)

    def boundary_frames(self) -> list[float]:
        """Where each boundary sits on the timeline (a cut's first frame; an xfade's midpoint), in frames."""
        return [self.scenes[i + 1].start + self.overlaps[i] / 2 for i in range(len(self.overlaps))]

    def transition_spans(self) -> list[tuple[int, int]]:
        """``(first, end)`` timeline frames of each xfade (empty spans for cuts)."""
        return [
            (self.scenes[i + 1].start, self.scenes[i + 1].start + self.overlaps[i]) for i in range(len(self.overlaps))
        ]


def _stream(info: MediaInfo) -> VideoStream:
    return info.video[0]


def _target_rate(timeline: Timeline, infos: Mapping[str, MediaInfo], problems: list[MediaInputError]) -> Fraction:
    if timeline.video.fps is not None:
        return parse_fps(timeline.video.fps)
    rates: list[tuple[str, Fraction]] = []
    for clip in timeline.clips:
        info = infos.get(clip.path)
        if info is None or not info.video:
            continue
        v = _stream(info)
        if v.fps_rational or v.fps:
            rates.append((clip.path, parse_fps(v.fps_rational or v.fps or 0)))
    if not rates:
        return Fraction(24)
    first_path, first = rates[0]
    for path, rate in rates[1:]:
        if rate != first:
            problems.append(
                FpsMismatch(
                    f"runs at {float(rate):.3f} fps while {first_path} runs at {float(first):.3f} fps; set the "
                    "timeline's video.fps to convert every clip to one rate",
                    path=path,
                    fps=float(rate),
                    expected=float(first),
                )
            )
    return first


def copy_blockers(timeline: Timeline, infos: Mapping[str, MediaInfo], scenes: list[ScenePlan], fps: Fraction) -> str:
    """Why the picture cannot be joined by stream copy ("" when it can)."""
    if not timeline.video.stream_copy:
        return "stream copy switched off"
    if timeline.subtitles.burn:
        return "subtitles are burned in"
    if any(timeline.boundary(i).kind != "cut" for i in range(len(timeline.clips) - 1)):
        return "transitions other than cuts"
    first_extradata: str | None = None
    for scene in scenes:
        v = _stream(infos[scene.path])
        what = f"{scene.path}"
        if scene.in_frame != 0 or scene.frames != scene.source_frames:
            return f"{what} is trimmed"
        if scene.convert_fps:
            return f"{what} runs at another frame rate"
        if (v.codec, v.pix_fmt) != ("h264", "yuv420p"):
            return f"{what} is {v.codec}/{v.pix_fmt}, not h264/yuv420p"
        if (v.width, v.height) != (timeline.video.width, timeline.video.height):
            return f"{what} is {v.width}x{v.height}, not {timeline.video.width}x{timeline.video.height}"
        if v.sar not in (None, "1:1"):
            return f"{what} has SAR {v.sar}"
        if v.color_space != "bt709":
            return f"{what} is not tagged BT.709"
        # The concat demuxer keeps the first clip's SPS/PPS: clips encoded otherwise would decode wrongly.
        if first_extradata is None:
            first_extradata = v.extradata_sha256
        elif v.extradata_sha256 != first_extradata:
            return f"{what} was encoded with other parameters (SPS/PPS differ)"
    return ""


def make_plan(timeline: Timeline, infos: Mapping[str, MediaInfo]) -> Plan:
    """The frames and samples of ``timeline`` given every file's probe (keyed by the timeline's paths).

    Raises the ``MediaInputError`` found (``InvalidInputs`` when several), each naming its file.
    """
    problems: list[MediaInputError] = []
    for clip in timeline.clips:
        info = infos.get(clip.path)
        if info is not None and not info.video:
            problems.append(MissingStream("has no video stream; a scene needs one", path=clip.path, stream="video"))
    fps = _target_rate(timeline, infos, problems)
    raise_collected(problems)

    scenes: list[ScenePlan] = []
    start = 0
    overlaps: list[int] = []
    styles: list[str] = []
    for i, clip in enumerate(timeline.clips):
        v = _stream(infos[clip.path])
        own = parse_fps(v.fps_rational or v.fps or str(fps))
        convert = own != fps
        if convert or v.frame_count is None:
            seconds = v.duration_s or infos[clip.path].duration_s or 0.0
            source_frames = math.floor(seconds * fps + 1e-6)
        else:
            source_frames = v.frame_count
        in_frame = round(clip.in_s * fps)
        frames = round((clip.out_s - clip.in_s) * fps) if clip.out_s is not None else source_frames - in_frame
        if in_frame + frames > source_frames:
            problems.append(
                TimelineInvalid(
                    f"scene {i} needs frames {in_frame}..{in_frame + frames} at {float(fps):g} fps "
                    f"(to {float((in_frame + frames) / fps):.3f} s) but the clip has {source_frames} "
                    f"({float(source_frames / fps):.3f} s)",
                    path=clip.path,
                )
            )
        if frames < 1:
            problems.append(TimelineInvalid(f"scene {i} holds no frame", path=clip.path))
        info = infos[clip.path]
        scenes.append(
            ScenePlan(
                index=i, path=clip.path, in_frame=in_frame, frames=max(frames, 1), start=start,
                source_frames=source_frames, convert_fps=convert, has_audio=info.has_audio,
                audio_gain_db=clip.audio_gain_db if clip.audio else None, width=v.width, height=v.height,
                sar=v.sar, label=clip.label or f"scene {i + 1}",
            )
        )  # fmt: skip
        if i < len(timeline.clips) - 1:
            t = timeline.boundary(i)
            overlap = round(t.duration_s * fps) if t.kind == "xfade" else 0
            overlaps.append(overlap)
            styles.append(t.style if t.kind == "xfade" else "")
            start += max(frames, 1) - overlap
    raise_collected(problems)

    for i, overlap in enumerate(overlaps):
        a, b = scenes[i], scenes[i + 1]
        before = overlaps[i - 1] if i > 0 else 0
        after = overlaps[i + 1] if i + 1 < len(overlaps) else 0
        if overlap and (a.frames < overlap + before or b.frames < overlap + after):
            problems.append(
                TimelineInvalid(
                    f"the {overlap}-frame transition after scene {i} is longer than the scenes it joins "
                    f"({a.frames} and {b.frames} frames, less their other transitions)",
                    path=b.path,
                )
            )
    total = scenes[-1].end
    sr = timeline.audio.sample_rate
    samples = round(total * sr / fps)
    duration = float(total / fps)
    frame_s = float(1 / fps)

    for k, cue in enumerate(timeline.cues):
        if cue.start_s < 0 or cue.end_s <= cue.start_s or cue.end_s > duration + frame_s / 2:
            problems.append(
                CueOutOfRange(
                    f"subtitle cue {k} ({cue.start_s:.3f}-{cue.end_s:.3f} s, {cue.text[:40]!r}) is outside the "
                    f"video (0-{duration:.3f} s) or ends before it starts",
                    path=f"cue {k}",
                    index=k, start_s=cue.start_s, end_s=cue.end_s, video_s=duration,
                )
            )  # fmt: skip

    dialogue: list[DialoguePlan] = []
    for k, line in enumerate(timeline.dialogue):
        info = infos.get(line.path)
        if info is None:
            continue
        if not info.has_audio:
            problems.append(
                MissingStream("has no audio stream; a dialogue line needs one", path=line.path, stream="audio")
            )
            continue
        length = info.audio[0].duration_s or info.duration_s or 0.0
        end = line.start_s + length
        if end > duration + frame_s / 2:
            problems.append(
                CueOutOfRange(
                    f"dialogue line {k} starts at {line.start_s:.3f} s and lasts {length:.3f} s, past the end of "
                    f"the video at {duration:.3f} s",
                    path=line.path,
                    index=k, start_s=line.start_s, end_s=end, video_s=duration,
                )
            )  # fmt: skip
            continue
        dialogue.append(
            DialoguePlan(
                index=k, path=line.path, start_sample=round(line.start_s * sr), samples=round(length * sr),
                gain_db=line.gain_db, speaker=line.speaker, text=line.text,
            )
        )  # fmt: skip

    music: MusicPlan | None = None
    if timeline.music is not None:
        m = timeline.music
        info = infos.get(m.path)
        if info is not None and not info.has_audio:
            problems.append(MissingStream("has no audio stream; the music bed needs one", path=m.path, stream="audio"))
        elif info is not None:
            length = info.audio[0].duration_s or info.duration_s or 0.0
            if m.offset_s >= length:
                problems.append(
                    TimelineInvalid(
                        f"music offset {m.offset_s:.3f} s is past the track's end ({length:.3f} s)", path=m.path
                    )
                )
            music = MusicPlan(
                path=m.path, duration_s=length, offset_s=m.offset_s, loop=m.loop and m.offset_s + duration > length,
                gain_db=m.gain_db, fade_in_s=min(m.fade_in_s, duration / 2), fade_out_s=min(m.fade_out_s, duration / 2),
            )  # fmt: skip
    raise_collected(problems)

    reason = copy_blockers(timeline, infos, scenes, fps)
    return Plan(
        fps=f"{fps.numerator}/{fps.denominator}",
        width=timeline.video.width,
        height=timeline.video.height,
        scenes=scenes,
        overlaps=overlaps,
        styles=styles,
        total_frames=total,
        sample_rate=sr,
        channels=timeline.audio.channels,
        samples=samples,
        dialogue=dialogue,
        music=music,
        video_mode="encode" if reason else "copy",
        copy_reason=reason or "every clip is whole and matches the target",
    )
