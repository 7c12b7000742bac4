"""Single frames as PNG, decoded through PyAV: the exact last frame (for chaining clips), a poster, any time.

The last frame is the one with the greatest presentation time among the packets a player shows: the packets
are demuxed first (no decoding) to find it and to count them, then decoding starts from the keyframe before it.
ffmpeg's ``-sseof -0.1 -frames:v 1`` returns frame N-2 instead (media-facts); nothing here seeks by time for it.

PNG is written from the decoded frame (lossless from there on; never from a re-encode), converted to RGB with
the matrix the stream is tagged with (BT.709 for what reelforge writes; BT.601 when untagged, as ffmpeg
assumes), with accurate rounding. Decoding with the wrong matrix shifts colours a little every time a chain
takes its next start frame, one of the causes of drift over chained extensions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
from PIL import Image

from reelforge.media.errors import MediaProbeError, MissingStream
from reelforge.media.probe import open_media

__all__ = ["FrameGrab", "decode_last", "frame_at", "last_frame", "rgb"]


@dataclass(frozen=True)
class FrameGrab:
    """A frame written to ``path``: its index in presentation order, its time, and its size."""

    path: Path
    index: int
    time_s: float
    width: int
    height: int


def rgb(frame: Any) -> Any:
    """A decoded ``av.VideoFrame`` as an RGB PIL image, through its own colour matrix and range."""
    from av.video.reformatter import ColorRange, Colorspace, Interpolation

    space = Colorspace.ITU709 if int(frame.colorspace) == 1 else Colorspace.ITU601
    rng = ColorRange.JPEG if int(frame.color_range) == 2 else ColorRange.MPEG
    converted = frame.reformat(
        format="rgb24", src_colorspace=space, dst_colorspace=space, src_color_range=rng,
        dst_color_range=ColorRange.JPEG, interpolation=Interpolation.BICUBIC | Interpolation.ACCURATE_RND,
    )  # fmt: skip
    return Image.fromarray(converted.to_ndarray())


def _video(container: Any, path: Path | str) -> Any:
    if not container.streams.video:
        raise MissingStream("has no video stream to take a frame from", path=path, stream="video")
    return container.streams.video[0]


def _save(image: Any, out: Path) -> None:
    tmp = out.with_name(f".{out.name}.tmp")
    image.save(tmp, format="PNG", compress_level=4)
    tmp.replace(out)


def last_frame(path: Path | str, out: Path) -> FrameGrab:
    """Write the exact last frame of ``path``'s first video stream to ``out`` (PNG)."""
    image, index, time_s = decode_last(path)
    _save(image, out)
    return FrameGrab(out, index, time_s, image.width, image.height)


def decode_last(path: Path | str) -> tuple[Any, int, float]:
    """``(RGB image, index, time)`` of the exact last frame (``MediaProbeError`` when it cannot be decoded)."""
    with open_media(path) as container:
        stream = _video(container, path)
        pts_list = []
        keyframes = []
        try:
            for packet in container.demux(stream):
                if packet.size and packet.pts is not None and not packet.is_discard:
                    pts_list.append(packet.pts)
                    if packet.is_keyframe:
                        keyframes.append(packet.pts)
        except av.FFmpegError as exc:
            raise MediaProbeError(f"cannot read its video packets (corrupt or truncated?): {exc}", path=path) from exc
        if not pts_list:
            raise MediaProbeError("has no video frames", path=path)
        last_pts = max(pts_list)
        count = len(pts_list)
        seek_to = max((k for k in keyframes if k <= last_pts), default=min(pts_list))
        container.seek(seek_to, stream=stream, backward=True, any_frame=False)
        found = None
        try:
            for frame in container.decode(stream):
                if frame.pts is not None and frame.pts <= last_pts:
                    found = frame
                if frame.pts == last_pts:
                    break
        except av.FFmpegError as exc:
            raise MediaProbeError(f"cannot decode its last frames (corrupt or truncated?): {exc}", path=path) from exc
        if found is None or found.pts != last_pts:
            raise MediaProbeError(f"its last frame (pts {last_pts}) could not be decoded", path=path)
        image = rgb(found)
        start = stream.start_time or 0
        time_s = float((last_pts - start) * stream.time_base)
    return image, count - 1, time_s


def frame_at(path: Path | str, time_s: float, out: Path) -> FrameGrab:
    """Write the frame shown at ``time_s`` (the last one starting at or before it) to ``out`` (PNG)."""
    with open_media(path) as container:
        stream = _video(container, path)
        tb = stream.time_base
        start = stream.start_time or 0
        target = start + int(time_s / tb)
        container.seek(target, stream=stream, backward=True, any_frame=False)
        chosen = None
        try:
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                if frame.pts > target and chosen is not None:
                    break
                chosen = frame
        except av.FFmpegError as exc:
            raise MediaProbeError(f"cannot decode a frame at {time_s:.3f} s: {exc}", path=path) from exc
        if chosen is None:
            raise MediaProbeError(f"has no frame at {time_s:.3f} s", path=path)
        image = rgb(chosen)
        fps = stream.average_rate or stream.guessed_rate or 1
        shown = float((chosen.pts - start) * tb)
        index = round(shown * float(fps))
    _save(image, out)
    return FrameGrab(out, index, shown, image.width, image.height)
