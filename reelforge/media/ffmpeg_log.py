"""The old way of probing: parsing the stream summary ``ffmpeg -i`` prints on stderr.

``reelforge.media.probe`` reads files through PyAV instead (exact frame counts without a second process, full
tag values: ffmpeg's log cuts each tag at 255 characters). This parser stays for logs that exist only as text
(a worker's ffmpeg output) and as the fallback the tests pin down.
"""

from __future__ import annotations

import re

from reelforge.media.errors import MediaProbeError
from reelforge.media.probe_types import AudioStream, MediaInfo, VideoStream

__all__ = ["parse_ffmpeg_info"]

_LAYOUT_CHANNELS = {
    "mono": 1,
    "stereo": 2,
    "2.1": 3,
    "3.0": 3,
    "3.0(back)": 3,
    "4.0": 4,
    "quad": 4,
    "quad(side)": 4,
    "3.1": 4,
    "5.0": 5,
    "5.0(side)": 5,
    "4.1": 5,
    "5.1": 6,
    "5.1(side)": 6,
    "6.0": 6,
    "6.0(front)": 6,
    "hexagonal": 6,
    "6.1": 7,
    "6.1(back)": 7,
    "6.1(front)": 7,
    "7.0": 7,
    "7.0(front)": 7,
    "7.1": 8,
    "7.1(wide)": 8,
    "7.1(wide-side)": 8,
    "octagonal": 8,
    "downmix": 2,
}

_INPUT_RE = re.compile(r"^Input #0, (?P<format>.+?), from '")
_DURATION_RE = re.compile(
    r"^\s*Duration: (?P<dur>N/A|\d+:\d+:\d+(?:\.\d+)?)(?:, start: [^,]+)?, bitrate: (?P<br>N/A|[\d.]+) kb/s"
)
_STREAM_RE = re.compile(r"^\s*Stream #0:(?P<idx>\d+)(?:\[[^\]]*\])?(?:\([^)]*\))?: (?P<kind>\w+): (?P<rest>.*)$")
_SIZE_RE = re.compile(r"(?<![\w])(\d{1,5})x(\d{1,5})(?![\w])")
_FPS_RE = re.compile(r"([\d.]+)(k?) fps")
_TBR_RE = re.compile(r"([\d.]+)(k?) tbr")
_HZ_RE = re.compile(r"(\d+) Hz")
_CHANNELS_RE = re.compile(r"(\d+) channels")
_FRAME_RE = re.compile(r"frame=\s*(\d+)")
_TAG_RE = re.compile(r"^ {4}(?P<key>[^:]+?)\s*: (?P<value>.*)$")


def _seconds(text: str) -> float:
    h, m, s = text.split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


def _split_top_level(text: str) -> list[str]:
    """Split a stream description on commas that are not inside parentheses or brackets."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for ch in text:
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth = max(0, depth - 1)
        if ch == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    if current:
        parts.append("".join(current).strip())
    return parts


def _rate(match: re.Match[str] | None) -> float | None:
    if match is None:
        return None
    value = float(match.group(1))
    return value * 1000 if match.group(2) == "k" else value


def parse_ffmpeg_info(path: str, stderr: str) -> MediaInfo:
    """Parse the ``Input #0`` summary ffmpeg prints for ``ffmpeg -i <path>``."""
    fmt: str | None = None
    duration: float | None = None
    bitrate: float | None = None
    videos: list[VideoStream] = []
    audios: list[AudioStream] = []
    tags: dict[str, str] = {}
    in_input = False
    in_format_metadata = False
    last_tag: str | None = None
    for line in stderr.splitlines():
        m = _INPUT_RE.match(line)
        if m:
            if in_input:
                break  # only the first input
            in_input = True
            fmt = m.group("format")
            continue
        if not in_input:
            continue
        if line.startswith("Output #") or line.startswith("Stream mapping:"):
            break
        if line == "  Metadata:":
            in_format_metadata = True
            continue
        if in_format_metadata:
            t = _TAG_RE.match(line)
            if t:
                key = t.group("key").strip()
                if key:
                    tags[key] = t.group("value")
                    last_tag = key
                elif last_tag is not None:  # continuation line of a multi-line value
                    tags[last_tag] += "\n" + t.group("value")
                continue
            in_format_metadata = False
        m = _DURATION_RE.match(line)
        if m:
            if m.group("dur") != "N/A":
                duration = _seconds(m.group("dur"))
            if m.group("br") != "N/A":
                bitrate = float(m.group("br"))
            continue
        m = _STREAM_RE.match(line)
        if not m:
            continue
        idx = int(m.group("idx"))
        kind = m.group("kind")
        parts = _split_top_level(m.group("rest"))
        codec = parts[0].split(" ")[0] if parts else ""
        if kind == "Video":
            size = None
            for part in parts[1:]:
                size = _SIZE_RE.search(part)
                if size:
                    break
            if size is None:
                continue
            pix_fmt = parts[1].split("(")[0].strip() if len(parts) > 1 and not _SIZE_RE.match(parts[1]) else None
            rest = m.group("rest")
            fps = _rate(_FPS_RE.search(rest))
            if fps is None:
                fps = _rate(_TBR_RE.search(rest))
            videos.append(
                VideoStream(
                    index=idx,
                    codec=codec,
                    width=int(size.group(1)),
                    height=int(size.group(2)),
                    fps=fps,
                    pix_fmt=pix_fmt or None,
                )
            )
        elif kind == "Audio":
            hz = _HZ_RE.search(m.group("rest"))
            if hz is None:
                continue
            layout: str | None = None
            channels = 0
            for part in parts[1:]:
                part = part.strip()
                if part in _LAYOUT_CHANNELS:
                    layout, channels = part, _LAYOUT_CHANNELS[part]
                    break
                cm = _CHANNELS_RE.fullmatch(part)
                if cm:
                    channels = int(cm.group(1))
                    break
                if "(" in part and part.split("(")[0] in _LAYOUT_CHANNELS:
                    layout, channels = part, _LAYOUT_CHANNELS[part.split("(")[0]]
                    break
            audios.append(
                AudioStream(
                    index=idx,
                    codec=codec,
                    sample_rate=int(hz.group(1)),
                    channels=channels or 1,
                    channel_layout=layout,
                )
            )
    if fmt is None:
        raise MediaProbeError(f"ffmpeg does not recognise this file as media: {_reason(stderr)}", path=path)
    return MediaInfo(
        path=path,
        format=fmt,
        duration_s=duration,
        bitrate_kbps=bitrate,
        video=videos,
        audio=audios,
        tags=tags,
    )


def _reason(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "At least one output file must be specified" in ln:
            continue
        return ln
    return "no output from ffmpeg"
