"""Media facts (streams, durations, exact frame counts, colour tags, full tags) read through PyAV.

PyAV ships its own ffmpeg libraries, so probing needs no ffprobe (the imageio-ffmpeg wheel has none) and no
second process: measured on a 5.5 s 720p clip, 6.8 ms (median 10) against 46 ms (median 130) for parsing
``ffmpeg -i`` plus a stream-copy pass to count frames (docs/media.md). Frames are counted by demuxing packets
(no decoding), leaving out packets an edit list discards, so the count is what a player shows.

``count_frames`` keeps its old signature; ``parse_ffmpeg_info`` (the log parser) lives on in
``reelforge.media.ffmpeg_log`` for logs that exist only as text.
"""

from __future__ import annotations

import hashlib
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from reelforge.media.errors import MediaProbeError
from reelforge.media.ffmpeg_log import parse_ffmpeg_info
from reelforge.media.probe_types import AudioStream, MediaInfo, VideoStream

__all__ = [
    "AudioStream",
    "MediaInfo",
    "MediaProbeError",
    "VideoStream",
    "count_frames",
    "open_media",
    "parse_ffmpeg_info",
    "probe",
]

# AVColorSpace / AVColorPrimaries / AVColorTransferCharacteristic values -> ffmpeg's names (2 = unspecified).
_SPACES = {0: "gbr", 1: "bt709", 4: "fcc", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m", 9: "bt2020nc", 10: "bt2020c"}
_PRIMARIES = {1: "bt709", 4: "bt470m", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m", 9: "bt2020"}
_TRC = {1: "bt709", 4: "gamma22", 5: "gamma28", 6: "smpte170m", 7: "smpte240m", 8: "linear", 13: "iec61966-2-1",
        14: "bt2020-10", 16: "smpte2084", 18: "arib-std-b67"}  # fmt: skip
_RANGES = {1: "tv", 2: "pc"}


def open_media(path: Path | str) -> Any:
    """``av.open(path)`` with PyAV's errors translated: ``MediaProbeError`` naming the file and the reason."""
    p = Path(path)
    if not p.is_file():
        raise MediaProbeError("no such file", path=p)
    if p.stat().st_size == 0:
        raise MediaProbeError("is an empty file (0 bytes)", path=p)
    try:
        return av.open(str(p))
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise MediaProbeError(f"ffmpeg does not recognise this file as media: {_why(exc)}", path=p) from exc


def _codec_name(cc: Any) -> str:
    """The codec's own name as ffmpeg prints it ("mp3", "h264"), not its decoder's ("mp3float")."""
    codec = getattr(cc, "codec", None)
    return str(getattr(codec, "canonical_name", None) or cc.name)


def _why(exc: BaseException) -> str:
    """PyAV's error text without the repeated file name."""
    text = getattr(exc, "strerror", None) or str(exc)
    return str(text).split(": '")[0]


def _fraction(value: Any) -> Fraction | None:
    if value is None:
        return None
    try:
        f = Fraction(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return f if f > 0 else None


def _seconds(duration: Any, time_base: Any) -> float | None:
    tb = _fraction(time_base)
    if duration is None or tb is None:
        return None
    return float(duration * tb)


def _video(stream: Any) -> VideoStream:
    cc = stream.codec_context
    rate = _fraction(stream.average_rate) or _fraction(stream.guessed_rate) or _fraction(stream.base_rate)
    sar = _fraction(stream.sample_aspect_ratio)
    extradata = bytes(cc.extradata or b"")
    return VideoStream(
        index=stream.index,
        codec=_codec_name(cc),
        width=cc.width,
        height=cc.height,
        fps=float(rate) if rate else None,
        fps_rational=f"{rate.numerator}/{rate.denominator}" if rate else None,
        pix_fmt=cc.pix_fmt,
        duration_s=_seconds(stream.duration, stream.time_base),
        sar=f"{sar.numerator}:{sar.denominator}" if sar else None,
        color_space=_SPACES.get(int(cc.colorspace)),
        color_primaries=_PRIMARIES.get(int(cc.color_primaries)),
        color_trc=_TRC.get(int(cc.color_trc)),
        color_range=_RANGES.get(int(cc.color_range)),
        profile=cc.profile,
        extradata_sha256=hashlib.sha256(extradata).hexdigest() if extradata else None,
        time_base=str(stream.time_base) if stream.time_base is not None else None,
    )


def _audio(stream: Any) -> AudioStream:
    cc = stream.codec_context
    layout = cc.layout.name if cc.layout is not None else None
    return AudioStream(
        index=stream.index,
        codec=_codec_name(cc),
        sample_rate=int(cc.sample_rate or 0),
        channels=int(cc.channels or 0) or 1,
        channel_layout=layout if layout and "channels" not in layout else None,
        duration_s=_seconds(stream.duration, stream.time_base),
        profile=cc.profile,
    )


def _count_video_packets(container: Any, stream: Any, path: Path) -> int:
    count = 0
    try:
        for packet in container.demux(stream):
            if packet.size and not packet.is_discard:
                count += 1
    except (av.FFmpegError, OSError) as exc:
        raise MediaProbeError(f"cannot read its video packets (corrupt or truncated?): {_why(exc)}", path=path) from exc
    return count


def count_frames(path: Path | str, stream: int = 0) -> int:
    """Exact number of frames of video stream ``stream`` (packets demuxed, nothing decoded)."""
    p = Path(path)
    with open_media(p) as container:
        if stream >= len(container.streams.video):
            raise MediaProbeError(f"has no video stream {stream}", path=p)
        return _count_video_packets(container, container.streams.video[stream], p)


def probe(path: Path | str, *, count: bool = True) -> MediaInfo:
    """Describe a media file; ``count`` also counts the frames of every video stream exactly.

    Raises ``MediaProbeError`` naming the file when it does not exist, is empty or is not media.
    """
    p = Path(path)
    with open_media(p) as container:
        videos = [_video(s) for s in container.streams.video]
        audios = [_audio(s) for s in container.streams.audio]
        duration = container.duration / 1e6 if container.duration else None
        info = MediaInfo(
            path=str(p),
            format=container.format.name,
            duration_s=duration,
            bitrate_kbps=container.bit_rate / 1000 if container.bit_rate else None,
            video=videos,
            audio=audios,
            tags={str(k): str(v) for k, v in container.metadata.items()},
            subtitles=len(container.streams.subtitles),
        )
    if count:
        for i, stream_info in enumerate(info.video):
            try:
                stream_info.frame_count = count_frames(p, i)
            except MediaProbeError:
                stream_info.frame_count = None
    return info
