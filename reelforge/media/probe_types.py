"""What probing tells about a media file (``reelforge.media.probe.probe`` fills these)."""

from __future__ import annotations

from pydantic import BaseModel, Field

__all__ = ["AudioStream", "MediaInfo", "VideoStream"]


class VideoStream(BaseModel):
    index: int
    codec: str
    width: int
    height: int
    fps: float | None = None
    pix_fmt: str | None = None
    frame_count: int | None = None
    # Filled by the PyAV probe (None from the log parser):
    fps_rational: str | None = None  # "24/1", "30000/1001": exact, for comparing clips
    duration_s: float | None = None
    sar: str | None = None  # sample aspect ratio "1:1"
    color_space: str | None = None  # "bt709", "smpte170m", ... or None when untagged
    color_primaries: str | None = None
    color_trc: str | None = None
    color_range: str | None = None  # "tv" (limited) or "pc" (full)
    profile: str | None = None
    extradata_sha256: str | None = None  # SPS/PPS: equal only for streams a concat can join by copy
    time_base: str | None = None


class AudioStream(BaseModel):
    index: int
    codec: str
    sample_rate: int
    channels: int
    channel_layout: str | None = None
    duration_s: float | None = None
    profile: str | None = None  # "LC" for AAC-LC


class MediaInfo(BaseModel):
    path: str
    format: str
    duration_s: float | None = None
    bitrate_kbps: float | None = None
    video: list[VideoStream] = Field(default_factory=list)
    audio: list[AudioStream] = Field(default_factory=list)
    tags: dict[str, str] = Field(default_factory=dict)
    subtitles: int = 0  # number of subtitle streams

    @property
    def has_video(self) -> bool:
        return bool(self.video)

    @property
    def has_audio(self) -> bool:
        return bool(self.audio)

    @property
    def frame_count(self) -> int | None:
        return self.video[0].frame_count if self.video else None

    @property
    def fps(self) -> float | None:
        return self.video[0].fps if self.video else None

    @property
    def width(self) -> int | None:
        return self.video[0].width if self.video else None

    @property
    def height(self) -> int | None:
        return self.video[0].height if self.video else None
