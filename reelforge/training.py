"""Training sets: images with their captions, as one content-addressed artifact in the layout trainers expect.

A training set is a zip of ``<name>.png`` + ``<name>.txt`` pairs (kohya / ai-toolkit / ComfyUI's
LoadImageTextSetFromFolderNode all read images with same-named caption files) plus ``dataset.json`` (the trigger
word and the items in order). The zip is written deterministically (sorted entries, fixed timestamps, no extra
metadata), so the same images and captions always give the same bytes and therefore the same sha256: the
training stage's cache key depends on the set's content only.

``dataset_stage`` is a CPU stage's engine call; ``read_dataset`` unpacks a stored set into a folder for a trainer
(or for ``reelforge.comfy.datasets.upload_captioned_folder``, which puts it on a ComfyUI worker).
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel, Field

from reelforge.records import Product, StageOutput

__all__ = ["DATASET_INDEX", "DatasetItem", "DatasetSpec", "dataset_stage", "read_dataset", "write_dataset"]

DATASET_INDEX = "dataset.json"
_EPOCH = (1980, 1, 1, 0, 0, 0)  # zip's earliest timestamp: every entry gets it, so the bytes never vary


class DatasetItem(BaseModel):
    """One training image: its name inside the set and its caption."""

    name: str  # "00.png"; its caption is stored as "00.txt"
    caption: str = Field(min_length=1)


class DatasetSpec(BaseModel):
    """``dataset.json``: the trigger word and the items in training order."""

    trigger: str
    items: list[DatasetItem]


class DatasetError(ValueError):
    """A training set that cannot be built or read; ``path`` names the file."""

    def __init__(self, message: str, *, path: Path | str | None = None) -> None:
        self.path = str(path) if path is not None else None
        super().__init__(f"{message} ({self.path})" if self.path else message)


def write_dataset(images: Sequence[tuple[Path, str]], trigger: str, dest: Path) -> DatasetSpec:
    """Write ``(image file, caption)`` pairs as a deterministic zip at ``dest``; returns its index."""
    if not images:
        raise DatasetError("a training set needs at least one image", path=dest)
    items = []
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_STORED) as archive:
        for position, (image, caption) in enumerate(images):
            suffix = image.suffix.lower() or ".png"
            item = DatasetItem(name=f"{position:03d}{suffix}", caption=caption.strip())
            _add(archive, item.name, image.read_bytes())
            _add(archive, f"{PurePosixPath(item.name).stem}.txt", item.caption.encode("utf-8"))
            items.append(item)
        spec = DatasetSpec(trigger=trigger, items=items)
        _add(archive, DATASET_INDEX, (spec.model_dump_json(indent=2) + "\n").encode("utf-8"))
    return spec


def _add(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_EPOCH)
    info.external_attr = 0o644 << 16
    archive.writestr(info, data)


def read_dataset(path: Path, dest: Path) -> tuple[DatasetSpec, list[tuple[Path, str]]]:
    """Unpack a training set into ``dest``; returns its index and the ``(image file, caption)`` pairs."""
    try:
        with zipfile.ZipFile(path) as archive:
            spec = DatasetSpec.model_validate_json(archive.read(DATASET_INDEX))
            dest.mkdir(parents=True, exist_ok=True)
            pairs = []
            for item in spec.items:
                name = PurePosixPath(item.name).name  # never a path out of dest
                target = dest / name
                target.write_bytes(archive.read(item.name))
                (dest / f"{PurePosixPath(name).stem}.txt").write_text(item.caption, encoding="utf-8")
                pairs.append((target, item.caption))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise DatasetError(f"not a training set ({type(exc).__name__}: {exc})", path=path) from exc
    return spec, pairs


def dataset_stage(inputs: Mapping[str, Path], params: Mapping[str, Any], out_dir: Path) -> StageOutput:
    """Stage function: the images ``inputs`` (in name order) with ``params["captions"]`` (same order) and
    ``params["trigger"]`` as one training-set zip."""
    names = sorted(inputs)
    captions = list(params["captions"])
    if len(captions) != len(names):
        raise DatasetError(f"{len(names)} images but {len(captions)} captions")
    out_dir.mkdir(parents=True, exist_ok=True)
    dest = out_dir / "dataset.zip"
    spec = write_dataset([(inputs[n], c) for n, c in zip(names, captions, strict=True)], str(params["trigger"]), dest)
    return StageOutput(
        products=[Product(path=dest, kind="file")],
        record={"images": len(spec.items), "trigger": spec.trigger, "index": json.loads(spec.model_dump_json())},
    )
