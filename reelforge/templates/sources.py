"""What ``templates init`` reads: a workflow JSON, or the ``prompt`` a ComfyUI save node embedded in a file it wrote.

``read_source(path)`` tells the formats apart by content, not by extension:

* JSON: an **API-format** graph (``{id: {"class_type", "inputs"}}``, what "Export (API)" writes) is kept as the
  exact text given; a **UI-format** workflow (``nodes`` + ``links``, what ComfyUI saves by default) is returned
  as such for :mod:`reelforge.templates.uiformat` to convert;
* PNG (SaveImage's ``tEXt`` chunks, also ``iTXt``/``zTXt``, and SaveAnimatedPNG's ``comf`` chunks after IDAT);
* WebP (SaveAnimatedWEBP: EXIF 0x0110 ``prompt:<json>``, 0x010F ``workflow:<json>``);
* audio and video (SaveAudio / SaveAudioMP3 / SaveAudioOpus / SaveVideo / SaveWEBM: container tags ``prompt``
  and ``workflow``, in any case: WebM writes ``PROMPT``), read with ffmpeg's ``ffmetadata`` output;
* latents (SaveLatent: safetensors header ``__metadata__.prompt``).

A tag whose JSON holds a JSON string again (some ComfyUI versions encoded video metadata twice or three times)
is decoded until it is an object. Failures raise :class:`InitRefused` naming the file and what it is.
"""

from __future__ import annotations

import json
import re
import struct
import subprocess
import zlib
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any, Literal

from reelforge.templates.errors import InitRefused

__all__ = ["Source", "read_source"]

SourceFormat = Literal["api", "ui", "png", "webp", "media", "latent"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HOW_TO_EXPORT = (
    "in ComfyUI use Workflow > Export (API) (enable the dev mode options in older versions), or give an image, "
    "audio or video file that ComfyUI saved"
)


@dataclass(frozen=True)
class Source:
    """A graph found in a file: its exact text (API format) or the UI workflow to convert."""

    path: Path
    format: SourceFormat
    graph_text: str | None  # the API-format graph's text as found (None for a UI-format workflow)
    workflow: dict[str, Any] | None  # a UI-format workflow: the file itself, or the `workflow` tag of a media file

    @property
    def graph(self) -> Any:
        return json.loads(self.graph_text) if self.graph_text is not None else None

    @property
    def described(self) -> str:
        return {
            "api": "API-format JSON", "ui": "UI-format workflow JSON", "png": "PNG metadata",
            "webp": "WebP EXIF metadata", "media": "audio/video container tags", "latent": "latent file metadata",
        }[self.format]


def _refuse(path: Path, message: str) -> InitRefused:
    return InitRefused(str(path), [message])


def is_ui_workflow(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("nodes"), list) and "links" in data


def _decoded(text: str, path: Path, where: str) -> tuple[str, Any]:
    """The JSON text and its value, unwrapping JSON strings that hold JSON again."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise _refuse(path, f"the {where} is not valid JSON: {exc}") from exc
    for _ in range(3):
        if not isinstance(value, str):
            break
        text = value
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise _refuse(path, f"the {where} is not valid JSON: {exc}") from exc
    return text, value


def _png_chunks(data: bytes) -> dict[str, str]:
    """Text metadata of a PNG: tEXt, zTXt, iTXt and ComfyUI's ``comf`` chunks (``key\\0json``)."""
    found: dict[str, str] = {}
    pos = len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind in (b"tEXt", b"comf") and b"\0" in body:
            key, _, text = body.partition(b"\0")
            found.setdefault(key.decode("latin-1"), text.decode("latin-1"))
        elif kind == b"zTXt" and b"\0" in body:
            key, _, rest = body.partition(b"\0")
            try:
                found.setdefault(key.decode("latin-1"), zlib.decompress(rest[1:]).decode("latin-1"))
            except zlib.error:
                continue
        elif kind == b"iTXt" and b"\0" in body:
            key, _, rest = body.partition(b"\0")
            compressed, rest = rest[0], rest[2:]
            _lang, _, rest = rest.partition(b"\0")
            _translated, _, text = rest.partition(b"\0")
            try:
                found.setdefault(key.decode("latin-1"), (zlib.decompress(text) if compressed else text).decode())
            except (zlib.error, UnicodeDecodeError):
                continue
        elif kind == b"IEND":
            break
    return found


def _webp_tags(data: bytes) -> dict[str, str]:
    from PIL import Image

    try:
        with Image.open(BytesIO(data)) as image:
            exif = image.getexif()
    except Exception:
        return {}
    found: dict[str, str] = {}
    for value in exif.values():
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if isinstance(value, str) and ":" in value:
            key, _, text = value.partition(":")
            if key and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                found.setdefault(key, text)
    return found


_FFMETADATA_ESCAPE = re.compile(r"\\(.)", re.DOTALL)


def parse_ffmetadata(text: str) -> dict[str, str]:
    """The tags of ffmpeg's ``-f ffmetadata`` output (``key=value``, ``\\`` escapes ``=;#\\`` and newlines), keys
    lower-cased: the global ones first, then those of the streams (an Ogg file keeps its tags on the stream)."""
    found: dict[str, str] = {}
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if line.startswith(";") or not line:
            continue
        if line.startswith("["):
            continue  # [STREAM] / [CHAPTER]: their tags count after the global ones (Ogg keeps tags per stream)
        while line.endswith("\\") and not line.endswith("\\\\") and i < len(lines):  # an escaped newline
            line = line[:-1] + "\n" + lines[i]
            i += 1
        key, sep, value = _split_unescaped(line)
        if sep:
            found.setdefault(key.lower(), _FFMETADATA_ESCAPE.sub(r"\1", value))
    return found


def _split_unescaped(line: str) -> tuple[str, str, str]:
    escaped = False
    for index, char in enumerate(line):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "=":
            return _FFMETADATA_ESCAPE.sub(r"\1", line[:index]), "=", line[index + 1 :]
    return line, "", ""


def _ffmetadata(path: Path, *extra: str) -> dict[str, str] | None:
    from reelforge.media.ffmpeg import ffmpeg_exe

    try:
        done = subprocess.run(
            [ffmpeg_exe(), "-v", "error", "-i", str(path), *extra, "-f", "ffmetadata", "-"],
            capture_output=True, timeout=60, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return parse_ffmetadata(done.stdout.decode("utf-8", "replace"))


def _media_tags(path: Path) -> dict[str, str] | None:
    """Tags of an audio or video file (the container's, else its first stream's: Ogg keeps them there), or None
    when ffmpeg cannot read it as media."""
    tags = _ffmetadata(path)
    if tags is not None and "prompt" not in tags:
        tags = {**(_ffmetadata(path, "-map_metadata", "0:s:0") or {}), **tags}
    return tags


def _latent_tags(data: bytes) -> dict[str, str] | None:
    if len(data) < 8:
        return None
    (size,) = struct.unpack("<Q", data[:8])
    if not 2 <= size <= len(data) - 8:
        return None
    try:
        header = json.loads(data[8 : 8 + size])
    except ValueError:
        return None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}


def _from_tags(path: Path, tags: dict[str, str], fmt: SourceFormat, what: str) -> Source:
    lowered = {k.lower(): v for k, v in tags.items()}
    workflow = None
    if "workflow" in lowered:
        try:
            _, value = _decoded(lowered["workflow"], path, "embedded workflow")
            workflow = value if is_ui_workflow(value) else None
        except InitRefused:
            workflow = None
    if "prompt" not in lowered:
        if workflow is not None:
            return Source(path=path, format="ui", graph_text=None, workflow=workflow)
        listed = ", ".join(sorted(tags)) or "none"
        raise _refuse(
            path,
            f"{what} carries no ComfyUI 'prompt' metadata (tags found: {listed}); it was not saved by ComfyUI, or "
            f"saved with --disable-metadata: {HOW_TO_EXPORT}",
        )
    text, value = _decoded(lowered["prompt"], path, f"'prompt' metadata of this {what}")
    if not isinstance(value, dict):
        raise _refuse(path, f"the 'prompt' metadata of this {what} is not a graph (a JSON object)")
    return Source(path=path, format=fmt, graph_text=text, workflow=workflow)


def read_source(path: Path) -> Source:
    """The graph ``path`` holds, or :class:`InitRefused` saying what the file is and what would work."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise _refuse(path, "file not found") from exc
    except IsADirectoryError as exc:
        raise _refuse(path, "is a directory, not a file") from exc
    except OSError as exc:
        raise _refuse(path, f"cannot be read: {exc.strerror or exc}") from exc
    if not data.strip():
        raise _refuse(path, f"the file is empty: {HOW_TO_EXPORT}")
    if data.startswith(PNG_SIGNATURE):
        return _from_tags(path, _png_chunks(data), "png", "PNG")
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _from_tags(path, _webp_tags(data), "webp", "WebP image")
    text = None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = None
    if text is not None and text.lstrip()[:1] in ("{", "["):
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise _refuse(path, f"looks like JSON but is not valid JSON: {exc}") from exc
        if is_ui_workflow(value):
            return Source(path=path, format="ui", graph_text=None, workflow=value)
        if isinstance(value, dict) and isinstance(value.get("prompt"), dict) and "class_type" not in value:
            # a /prompt request body or a history entry's shape: the graph is under "prompt"
            raise _refuse(path, f"this is a request body with the graph under 'prompt', not a graph: {HOW_TO_EXPORT}")
        if not isinstance(value, dict):
            raise _refuse(path, f"is JSON but not a ComfyUI graph (a {type(value).__name__}): {HOW_TO_EXPORT}")
        return Source(path=path, format="api", graph_text=text, workflow=None)  # a BOM is the only change
    latent = _latent_tags(data) if path.suffix.lower() in (".latent", ".safetensors") else None
    if latent is not None:
        return _from_tags(path, latent, "latent", "latent file")
    tags = _media_tags(path)
    if tags is not None:
        return _from_tags(path, tags, "media", "audio/video file")
    raise _refuse(
        path,
        "is neither a ComfyUI workflow (JSON) nor an image, audio or video file ComfyUI wrote "
        f"(no PNG, WebP, latent or media container found): {HOW_TO_EXPORT}",
    )
