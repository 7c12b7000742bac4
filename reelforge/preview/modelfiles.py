"""Model files the preview worker reports: real files in its folders plus the lock's model list.

A provisioned GPU worker has every model file of ``deployments/comfyui/lock.yaml`` on disk; the preview
worker has none of them but must answer ``/models/{folder}`` and the loader combo lists the same way, so
that templates validate on it as on a GPU worker. The listing of a folder key is therefore the union of

* the files under the worker's search paths for that key (``models/<folder>``, legacy folders and the
  ``output/...`` folders ComfyUI's ``main.py`` registers, e.g. ``output/loras`` for trained LoRAs), and
* the lock's file names for that key,

minus the names the worker was told to treat as missing (``"folder/name"``, to rehearse a worker without a
model). Each worker registers its settings with ``configure`` under its root folder; node classes look them
up through ``listed`` / ``resolve`` with only the ``WorkerDirs`` they are given.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from reelforge.preview.registry import WorkerDirs
from reelforge.templates.lock import ComfyLock, LockError, default_lock

_PT_EXTENSIONS = frozenset({".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"})
# folder key -> (directories relative to the worker root, accepted extensions; empty = any file)
MODEL_FOLDERS: dict[str, tuple[tuple[str, ...], frozenset[str]]] = {
    "checkpoints": (("models/checkpoints", "output/checkpoints"), _PT_EXTENSIONS),
    "configs": (("models/configs",), frozenset({".yaml"})),
    "loras": (("models/loras", "output/loras"), _PT_EXTENSIONS),
    "vae": (("models/vae", "output/vae"), _PT_EXTENSIONS),
    "text_encoders": (("models/text_encoders", "models/clip", "output/clip"), _PT_EXTENSIONS),
    "diffusion_models": (
        ("models/unet", "models/diffusion_models", "output/diffusion_models"),
        _PT_EXTENSIONS,
    ),
    "clip_vision": (("models/clip_vision",), _PT_EXTENSIONS),
    "style_models": (("models/style_models",), _PT_EXTENSIONS),
    "embeddings": (("models/embeddings",), _PT_EXTENSIONS),
    "diffusers": (("models/diffusers",), frozenset({"folder"})),
    "vae_approx": (("models/vae_approx",), _PT_EXTENSIONS),
    "controlnet": (("models/controlnet", "models/t2i_adapter"), _PT_EXTENSIONS),
    "gligen": (("models/gligen",), _PT_EXTENSIONS),
    "upscale_models": (("models/upscale_models",), _PT_EXTENSIONS),
    "custom_nodes": (("custom_nodes",), frozenset()),
    "hypernetworks": (("models/hypernetworks",), _PT_EXTENSIONS),
    "photomaker": (("models/photomaker",), _PT_EXTENSIONS),
    "classifiers": (("models/classifiers",), frozenset({""})),
    "model_patches": (("models/model_patches",), _PT_EXTENSIONS),
    "audio_encoders": (("models/audio_encoders",), _PT_EXTENSIONS),
}

# ComfyUI's folder_paths.map_legacy: old folder keys still accepted by loaders and extra_model_paths.
LEGACY_FOLDERS = {"clip": "text_encoders", "unet": "diffusion_models", "t2i_adapter": "controlnet"}

LockModels = Mapping[str, Iterable[str]]


def canonical_folder(folder: str) -> str:
    return LEGACY_FOLDERS.get(folder, folder)


def disk_files(dirs: WorkerDirs, folder: str) -> list[str] | None:
    """Files on disk for a folder key (relative paths with ``/``, sorted), or None if the key is unknown."""
    entry = MODEL_FOLDERS.get(folder)  # like /models/{folder}: legacy keys (clip, unet) are not folders
    if entry is None:
        return None
    return _scan(dirs, *entry)


def _scan(dirs: WorkerDirs, rel_dirs: tuple[str, ...], extensions: frozenset[str]) -> list[str]:
    found: set[str] = set()
    for rel in rel_dirs:
        base = dirs.root / rel
        if not base.is_dir():
            continue
        for dirpath, _dirnames, filenames in os.walk(base, followlinks=True):
            for filename in filenames:
                path = Path(dirpath) / filename
                name = path.relative_to(base).as_posix()
                if not extensions or path.suffix.lower() in extensions:
                    found.add(name)
    return sorted(found)


def parse_missing(missing: Iterable[str]) -> frozenset[tuple[str, str]]:
    """``"folder/name"`` entries (the name may contain ``/``) as (canonical folder key, name) pairs."""
    out: set[tuple[str, str]] = set()
    for entry in missing:
        folder, sep, name = str(entry).partition("/")
        if not sep or not folder or not name:
            raise ValueError(f"missing model {entry!r}: expected 'folder/name', e.g. 'checkpoints/x.safetensors'")
        out.add((canonical_folder(folder), name))
    return frozenset(out)


def lock_models_of(lock: ComfyLock | None) -> dict[str, list[str]]:
    """The lock's model names by canonical folder key (empty for no lock)."""
    if lock is None:
        return {}
    folders: dict[str, list[str]] = {}
    for folder, names in lock.models_by_folder().items():
        folders.setdefault(canonical_folder(folder), []).extend(names)
    return {k: sorted(set(v)) for k, v in folders.items()}


def model_files(
    dirs: WorkerDirs,
    folder: str,
    lock_models: LockModels | None = None,
    missing: Iterable[str] | frozenset[tuple[str, str]] = (),
) -> list[str] | None:
    """Names a worker lists for ``folder``: files on disk plus the lock's names, minus ``missing``.

    ``lock_models`` maps folder keys to file names; ``missing`` holds ``"folder/name"`` strings (or parsed
    pairs). Returns None for a folder key that is neither a ComfyUI folder nor one of the lock's folders
    (``/models/{folder}`` answers 404 then).
    """
    key = folder
    lock_names: set[str] = set()
    for lock_folder, names in (lock_models or {}).items():
        if canonical_folder(lock_folder) == key:
            lock_names.update(names)
    on_disk = disk_files(dirs, key)
    if on_disk is None:
        if not lock_names:
            return None
        # A folder key only the lock uses (a custom pack's, e.g. ipadapter): models/<key> like the pack.
        on_disk = _scan(dirs, (f"models/{key}",), _PT_EXTENSIONS)
    gone = missing if isinstance(missing, frozenset) else parse_missing(missing)
    names = set(on_disk or ()) | lock_names
    return sorted(n for n in names if (key, n) not in gone)


# ---- per-worker settings ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSettings:
    """What one worker lists besides its files: the lock's names and the names configured missing."""

    lock_models: Mapping[str, list[str]]
    missing: frozenset[tuple[str, str]] = frozenset()

    def files(self, dirs: WorkerDirs, folder: str) -> list[str] | None:
        return model_files(dirs, folder, self.lock_models, self.missing)

    def folder_keys(self) -> list[str]:
        """``GET /models``: ComfyUI's folder keys, then folder keys only the lock uses (custom packs)."""
        return [*MODEL_FOLDERS, *(k for k in self.lock_models if k not in MODEL_FOLDERS)]


_settings: dict[Path, ModelSettings] = {}
_settings_lock = threading.Lock()


def tolerant_default_lock() -> ComfyLock | None:
    """The checkout's lock, or None when it is missing or malformed (the preview worker still starts)."""
    try:
        return default_lock()
    except LockError:
        return None


def configure(dirs: WorkerDirs, lock: ComfyLock | None, missing: Iterable[str] = ()) -> ModelSettings:
    """Register a worker's model settings under its root (a later call for the same root replaces them)."""
    settings = ModelSettings(lock_models_of(lock), parse_missing(missing))
    with _settings_lock:
        _settings[Path(dirs.root).absolute()] = settings
    return settings


def settings_for(dirs: WorkerDirs) -> ModelSettings:
    """The settings registered for ``dirs``; unregistered folders list the default lock, nothing missing."""
    with _settings_lock:
        found = _settings.get(Path(dirs.root).absolute())
    if found is not None:
        return found
    return ModelSettings(lock_models_of(tolerant_default_lock()))


def listed(dirs: WorkerDirs, folder: str) -> list[str]:
    """A loader's combo list for ``folder`` on the worker rooted at ``dirs``."""
    return settings_for(dirs).files(dirs, folder) or []


def resolve(dirs: WorkerDirs, folder: str, name: str) -> Path | None:
    """Where a listed model file is: its path when it exists on disk, None when only the lock lists it.

    Raises ``FileNotFoundError`` with ComfyUI's message when the worker does not list the name at all
    (``folder_paths.get_full_path_or_raise``): validation rejects such names, but a file can go away
    between validation and execution.
    """
    key = canonical_folder(folder)
    if name not in listed(dirs, key):
        raise FileNotFoundError(f"Model in folder '{folder}' with filename '{name}' not found.")
    entry = MODEL_FOLDERS.get(key)
    for rel in entry[0] if entry is not None else (f"models/{key}",):
        candidate = dirs.root / rel / name
        if candidate.is_file():
            return candidate
    return None
