"""Helpers shared by the node modules: ComfyUI's annotated input paths, folder listings, file fingerprints."""

from __future__ import annotations

import mimetypes
import os
from pathlib import Path
from typing import Any

import numpy as np

from reelforge.hashing import sha256_file
from reelforge.preview.registry import WorkerDirs

# ComfyUI's folder_paths adds these so listings do not depend on the host's mime database.
_EXTRA_TYPES = {
    ".webp": "image/webp",
    ".avif": "image/avif",
    ".flac": "audio/flac",
    ".opus": "audio/ogg",
    ".ogg": "audio/ogg",
    ".m4a": "audio/mp4",
    ".mp3": "audio/mpeg",
    ".wav": "audio/wav",
    ".aac": "audio/aac",
    ".mkv": "video/x-matroska",
    ".webm": "video/webm",
    ".mp4": "video/mp4",
    ".mov": "video/quicktime",
    ".avi": "video/x-msvideo",
    ".gif": "image/gif",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".bmp": "image/bmp",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
}


def content_type(name: str) -> str | None:
    ext = os.path.splitext(name)[1].lower()
    if ext in _EXTRA_TYPES:
        return _EXTRA_TYPES[ext]
    guessed, _ = mimetypes.guess_type(name, strict=False)
    return guessed


def filter_files_content_types(files: list[str], content_types: list[str]) -> list[str]:
    """ComfyUI's ``folder_paths.filter_files_content_types``: keep files whose mime main type is listed."""
    result = []
    for name in files:
        kind = content_type(name)
        if kind is not None and kind.split("/")[0] in content_types:
            result.append(name)
    return result


def list_input_files(dirs: WorkerDirs, content_types: list[str]) -> list[str]:
    """Sorted top-level files of the input folder with the given content types (re-read on every call)."""
    try:
        entries = os.listdir(dirs.input)
    except FileNotFoundError:
        return []
    files = [f for f in entries if os.path.isfile(os.path.join(dirs.input, f))]
    return sorted(filter_files_content_types(files, content_types))


def annotated_filepath(dirs: WorkerDirs, name: str) -> Path:
    """ComfyUI's ``get_annotated_filepath``: ``"sub/x.png"`` is in input, ``"x.png [output]"`` in output.

    Unlike ComfyUI, a name that resolves outside its base folder raises ``ValueError`` (the preview worker
    must not read arbitrary files).
    """
    base: Path = dirs.input
    if name.endswith("[output]"):
        base, name = dirs.output, name[:-9]
    elif name.endswith("[input]"):
        base, name = dirs.input, name[:-8]
    elif name.endswith("[temp]"):
        base, name = dirs.temp, name[:-7]
    root = os.path.abspath(base)
    full = os.path.abspath(os.path.join(root, name))
    if os.path.commonpath((root, full)) != root:
        raise ValueError(f"path {name!r} is outside the {base.name} folder")
    return Path(full)


def annotated_exists(dirs: WorkerDirs, name: Any) -> bool:
    """ComfyUI's ``exists_annotated_filepath`` (plus the containment check)."""
    if not isinstance(name, str):
        return False
    try:
        return annotated_filepath(dirs, name).exists()
    except ValueError:
        return False


def file_fingerprint(input_name: str) -> Any:
    """IS_CHANGED of LoadImage / LoadAudio: sha256 of the file content (NaN = re-run, if unreadable)."""

    def fingerprint(dirs: WorkerDirs, inputs: dict[str, Any]) -> Any:
        try:
            return sha256_file(annotated_filepath(dirs, str(inputs[input_name])))[0]
        except (OSError, ValueError, KeyError):
            return float("nan")  # ComfyUI logs the IS_CHANGED failure and treats the node as changed

    return fingerprint


def to_uint8(image: np.ndarray) -> np.ndarray:
    """ComfyUI's ``np.clip(255. * image, 0, 255).astype(np.uint8)`` (float32 math, truncation)."""
    out: np.ndarray = np.clip(np.float32(255.0) * np.asarray(image, dtype=np.float32), 0, 255).astype(
        np.uint8
    )
    return out
