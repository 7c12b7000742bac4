"""The typed timeline an assembly is built from, and the targets it is built to.

A ``Timeline`` holds scenes (``Clip``: a file with in/out points), the ``Transition`` at each boundary (a cut
or an xfade of some length), ``DialogueLine``s placed in time, an optional ``MusicBed``, subtitle ``Cue``s and
the targets (``VideoTarget``, ``AudioTarget``, ``SubtitleStyle``). Times are seconds; the plan
(``reelforge.media.plan``) turns them into whole frames at the target rate, so every duration the output has is
``frames / fps`` exactly.

Paths are strings: a stage resolves names of its inputs (``"clip0"``) to files through ``Timeline.resolve``.
"""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "AudioTarget",
    "BeatSnap",
    "Clip",
    "Cue",
    "DialogueLine",
    "Ducking",
    "MusicBed",
    "SubtitleStyle",
    "Timeline",
    "Transition",
    "VideoTarget",
    "parse_fps",
]


def parse_fps(value: float | str) -> Fraction:
    """A frame rate as an exact fraction: ``24``, ``"24"``, ``"30000/1001"``, ``29.97`` (-> 30000/1001)."""
    if isinstance(value, str) and "/" in value:
        num, den = value.split("/", 1)
        rate = Fraction(int(num), int(den))
    else:
        rate = Fraction(str(value))
        ntsc = float(rate) * 1.001  # 23.976, 29.97, 59.94 are 24000/1001, 30000/1001, 60000/1001
        if rate.denominator != 1 and abs(ntsc - round(ntsc)) < 0.01:
            rate = Fraction(round(ntsc) * 1000, 1001)
        else:
            rate = rate.limit_denominator(1001)
    if rate <= 0:
        raise ValueError(f"frame rate must be positive, not {value}")
    return rate


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Clip(_Model):
    """One scene: ``path`` from ``in_s`` to ``out_s`` (None: the clip's end); its own sound at ``audio_gain_db``."""

    path: str
    in_s: float = Field(0.0, ge=0)
    out_s: float | None = Field(None, gt=0)
    audio: bool = True  # keep the clip's own sound (silence when it has none)
    audio_gain_db: float = 0.0
    label: str | None = None

    @model_validator(mode="after")
    def _order(self) -> Clip:
        if self.out_s is not None and self.out_s <= self.in_s:
            raise ValueError(f"clip {self.path}: out point {self.out_s} is not after in point {self.in_s}")
        return self


class Transition(_Model):
    """What joins scene ``i`` to ``i+1``: a cut, or an xfade/acrossfade of ``duration_s`` (``style``: xfade's)."""

    kind: Literal["cut", "xfade"] = "cut"
    duration_s: float = Field(0.0, ge=0)
    style: str = "fade"

    @model_validator(mode="after")
    def _length(self) -> Transition:
        if self.kind == "xfade" and self.duration_s <= 0:
            raise ValueError("an xfade needs a positive duration_s")
        return self


class DialogueLine(_Model):
    """A voice line placed at ``start_s`` on the timeline."""

    path: str
    start_s: float = Field(ge=0)
    gain_db: float = 0.0
    speaker: str | None = None
    text: str | None = None


class Ducking(_Model):
    """sidechaincompress settings: the music is pressed down while the voice bus is above ``threshold``."""

    enabled: bool = True
    threshold: float = Field(0.02, gt=0, le=1)  # linear level of the voice that starts the ducking
    ratio: float = Field(8.0, ge=1, le=20)
    attack_ms: float = Field(20.0, gt=0)
    release_ms: float = Field(400.0, gt=0)


class MusicBed(_Model):
    """Music under the whole video: looped or trimmed to the exact duration, faded in and out."""

    path: str
    gain_db: float = -8.0
    offset_s: float = Field(0.0, ge=0)  # where in the track the video starts
    loop: bool = True  # loop when shorter than the video (else silence after it ends)
    fade_in_s: float = Field(0.5, ge=0)
    fade_out_s: float = Field(1.5, ge=0)
    ducking: Ducking = Ducking()


class Cue(_Model):
    """One subtitle: ``text`` shown from ``start_s`` to ``end_s``."""

    start_s: float
    end_s: float
    text: str
    speaker: str | None = None


class VideoTarget(_Model):
    """The picture every scene is normalized to."""

    width: int = Field(1280, ge=16, le=7680)
    height: int = Field(720, ge=16, le=4320)
    fps: str | float | None = None  # None: the clips' own rate (they must agree); a value converts them
    fit: Literal["pad", "crop"] = "pad"  # scale inside and pad, or scale over and crop
    pad_color: str = "black"
    codec: Literal["libx264"] = "libx264"
    crf: int = Field(20, ge=0, le=51)
    preset: str = "veryfast"
    stream_copy: bool = True  # join matching whole clips by stream copy instead of encoding

    @field_validator("width", "height")
    @classmethod
    def _even(cls, value: int) -> int:
        if value % 2:
            raise ValueError(f"yuv420p needs even dimensions, not {value}")
        return value


class AudioTarget(_Model):
    """The sound: rate, channels, loudness target (-14 LUFS for social, -23 broadcast) and true-peak ceiling."""

    sample_rate: int = Field(48000, ge=8000, le=192000)
    channels: Literal[1, 2] = 2
    loudness_lufs: float = Field(-14.0, ge=-70, le=-5)
    true_peak_db: float = Field(-1.0, ge=-9, le=0)
    loudness_tolerance_lu: float = Field(0.5, gt=0)
    bitrate: str = "192k"
    normalize: bool = True


class SubtitleStyle(_Model):
    """SRT is always written; ``burn`` also draws the cues into the picture with ``font`` (the shipped one)."""

    burn: bool = False
    embed: bool = True  # a soft mov_text track in the MP4 (players can switch it on)
    font: str | None = None  # a .ttf/.otf path; None: the font the package ships (reelforge.media.subtitles)
    size: int = Field(0, ge=0)  # 0: 5.5% of the picture height
    margin: int = Field(0, ge=0)  # 0: 6% of the picture height
    missing_glyphs: Literal["error", "allow"] = "error"


class BeatSnap(_Model):
    """Move each cut to the nearest beat within ``tolerance_s``; no scene shorter than ``min_scene_s``."""

    enabled: bool = False
    tolerance_s: float = Field(0.35, ge=0)
    min_scene_s: float = Field(1.0, ge=0)


class Timeline(_Model):
    """Everything one assembled video is made of; see the module docstring."""

    clips: list[Clip] = Field(min_length=1)
    transitions: list[Transition] = Field(default_factory=list)  # one per boundary; empty: all cuts
    dialogue: list[DialogueLine] = Field(default_factory=list)
    music: MusicBed | None = None
    cues: list[Cue] = Field(default_factory=list)
    video: VideoTarget = VideoTarget()
    audio: AudioTarget = AudioTarget()
    subtitles: SubtitleStyle = SubtitleStyle()
    beat_snap: BeatSnap = BeatSnap()
    poster_s: float | None = None  # None: the middle of the first scene

    @model_validator(mode="after")
    def _boundaries(self) -> Timeline:
        if self.transitions and len(self.transitions) != len(self.clips) - 1:
            raise ValueError(
                f"{len(self.clips)} clips need {len(self.clips) - 1} transitions, not {len(self.transitions)}"
            )
        return self

    def boundary(self, i: int) -> Transition:
        """The transition between scene ``i`` and ``i+1``."""
        return self.transitions[i] if self.transitions else Transition()

    def files(self) -> list[str]:
        """Every file the timeline reads (clips, dialogue, music, font), in order, without repeats."""
        names = [c.path for c in self.clips] + [d.path for d in self.dialogue]
        if self.music is not None:
            names.append(self.music.path)
        if self.subtitles.font:
            names.append(self.subtitles.font)
        return list(dict.fromkeys(names))

    def resolve(self, inputs: Mapping[str, Path]) -> Timeline:
        """The same timeline with input names (``"clip0"``) replaced by their files; other paths stay."""

        def r(name: str) -> str:
            return str(inputs[name]) if name in inputs else name

        music = self.music.model_copy(update={"path": r(self.music.path)}) if self.music else None
        font = r(self.subtitles.font) if self.subtitles.font else None
        return self.model_copy(
            update={
                "clips": [c.model_copy(update={"path": r(c.path)}) for c in self.clips],
                "dialogue": [d.model_copy(update={"path": r(d.path)}) for d in self.dialogue],
                "music": music,
                "subtitles": self.subtitles.model_copy(update={"font": font}),
            }
        )
