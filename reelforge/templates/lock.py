"""The GPU-side lock (deployments/comfyui/lock.yaml): ComfyUI version, custom node packs, model files.

It is what a GPU worker image is built from, what a worker is checked against, and what the preview worker
reports in /models so templates validate on it as on a provisioned GPU worker.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

DEFAULT_LOCK = Path(__file__).resolve().parents[2] / "deployments" / "comfyui" / "lock.yaml"


class LockError(ValueError):
    """The lock file is missing or malformed; the message names the file and the entry."""


class ComfyUIPin(BaseModel):
    model_config = ConfigDict(extra="forbid")

    repo: str
    commit: str
    version: str


class CustomNodePack(BaseModel):
    """A custom node pack: repository pinned to a commit, and the node classes it provides."""

    model_config = ConfigDict(extra="forbid")

    pack: str
    repo: str
    commit: str
    classes: list[str] = Field(default_factory=list)
    pip: list[str] = Field(default_factory=list)  # extra Python requirements of the pack, pinned
    notes: str = ""


class ModelFile(BaseModel):
    """A model file a template needs: where it goes, where it comes from, and how to check it."""

    model_config = ConfigDict(extra="forbid")

    folder: str  # ComfyUI folder key: checkpoints, diffusion_models, loras, vae, text_encoders, ...
    name: str  # file name (relative path with '/') inside that folder
    url: str | None = None  # where to download it; None: not known yet (added by `templates init`)
    sha256: str | None = None  # None: not yet verified here (no network); filled by `reelforge lock verify`
    size: int | None = None  # bytes
    license: str = ""
    used_by: list[str] = Field(default_factory=list)  # template names

    @property
    def key(self) -> tuple[str, str]:
        return (self.folder, self.name)


class ComfyLock(BaseModel):
    model_config = ConfigDict(extra="forbid")

    comfyui: ComfyUIPin
    custom_nodes: list[CustomNodePack] = Field(default_factory=list)
    models: list[ModelFile] = Field(default_factory=list)

    def models_by_folder(self) -> dict[str, list[str]]:
        folders: dict[str, list[str]] = {}
        for model in self.models:
            folders.setdefault(model.folder, []).append(model.name)
        return {k: sorted(v) for k, v in sorted(folders.items())}

    def pack_of(self, class_name: str) -> CustomNodePack | None:
        return next((p for p in self.custom_nodes if class_name in p.classes), None)


def load_lock(path: Path | None = None) -> ComfyLock:
    """Read and validate a lock file (default: deployments/comfyui/lock.yaml of this checkout)."""
    path = path or DEFAULT_LOCK
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise LockError(f"{path}: lock file not found") from exc
    except yaml.YAMLError as exc:
        raise LockError(f"{path}: not valid YAML: {exc}") from exc
    try:
        return ComfyLock.model_validate(data)
    except ValidationError as exc:
        raise LockError(f"{path}: {exc}") from exc


@cache
def default_lock() -> ComfyLock:
    """The checkout's lock, read once."""
    return load_lock(DEFAULT_LOCK)
