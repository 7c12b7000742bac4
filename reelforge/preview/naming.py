"""Output file naming exactly like ComfyUI's ``folder_paths.get_save_image_path``.

Files are named ``<prefix>_<counter:05>_.<ext>``; the counter is one more than the highest counter of any
file in the target folder that starts with the same prefix, whatever its extension. A ``/`` in the prefix
selects a subfolder, which must stay inside ``base_dir``.
"""

from __future__ import annotations

import os
import re
from datetime import datetime
from pathlib import Path


def _substitute(prefix: str, width: int, height: int) -> str:
    """Replace ComfyUI's ``%width%``, ``%height%``, ``%year%``... variables."""
    if "%" not in prefix:
        return prefix
    now = datetime.now()
    values = {
        "%width%": str(width),
        "%height%": str(height),
        "%year%": str(now.year),
        "%month%": f"{now.month:02}",
        "%day%": f"{now.day:02}",
        "%hour%": f"{now.hour:02}",
        "%minute%": f"{now.minute:02}",
        "%second%": f"{now.second:02}",
    }
    for key, value in values.items():
        prefix = prefix.replace(key, value)
    return prefix


def split_prefix(base_dir: Path, prefix: str, *, width: int = 0, height: int = 0) -> tuple[Path, str, str]:
    """Return (folder, base name, subfolder) for a filename prefix; raise ValueError if it leaves base_dir."""
    prefix = _substitute(prefix, width, height)
    norm = os.path.normpath(prefix)
    subfolder = os.path.dirname(norm).replace(os.sep, "/")
    name = os.path.basename(norm)
    base = os.path.abspath(base_dir)
    folder = os.path.abspath(os.path.join(base, subfolder))
    if os.path.commonpath((base, folder)) != base:
        raise ValueError(
            "**** ERROR: Saving image outside the output folder is not allowed."
            f"\n full_output_folder: {folder}\n         output_dir: {base}"
        )
    return Path(folder), name, subfolder


def next_counter(folder: Path, name: str) -> int:
    """One more than the highest ``<name>_<NNNNN>_`` counter in ``folder`` (any extension), or 1."""
    try:
        entries = os.listdir(folder)
    except FileNotFoundError:
        return 1
    pattern = re.compile(re.escape(name) + r"_(\d+)(?:_|$)", re.IGNORECASE)
    best = 0
    for entry in entries:
        m = pattern.match(entry)
        if m:
            best = max(best, int(m.group(1)))
    return best + 1


def next_output_path(
    base_dir: Path, prefix: str, ext: str, *, width: int = 0, height: int = 0, batch_num: int | None = None
) -> tuple[Path, str, str]:
    """Pick the next free output file for ``prefix``: (full path, file name, subfolder).

    ``ext`` is given without or with a leading dot. The folder is created. ``%batch_num%`` in the
    prefix is replaced by ``batch_num`` (ComfyUI substitutes it per batch item).
    """
    folder, name, subfolder = split_prefix(base_dir, prefix, width=width, height=height)
    if batch_num is not None:
        name = name.replace("%batch_num%", str(batch_num))
    folder.mkdir(parents=True, exist_ok=True)
    counter = next_counter(folder, name)
    filename = f"{name}_{counter:05}_.{ext.lstrip('.')}"
    return folder / filename, filename, subfolder
