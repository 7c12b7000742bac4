"""What a unit of work hands back before anything is stored: the files it produced and a small typed record.

Every stage, GPU or CPU, returns a ``StageOutput``; the stage mechanism (tasks/stage.py) stores each ``Product``
under its content hash and turns the whole into a ``reelforge.storage.lineage.StageRecord``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from reelforge.storage.base import ArtifactKind
from reelforge.storage.lineage import JobFacts

if TYPE_CHECKING:  # only GPU stages make products from downloads; CPU stage functions need no ComfyUI import
    from reelforge.comfy.types import DownloadedFile

__all__ = ["JobFacts", "Product", "StageOutput"]


class Product(BaseModel):
    """One file a stage produced on local disk, not stored yet.

    ``sha256``/``size``, when given, were computed while the bytes arrived (a download), so the store need not
    read the file again to hash it.
    """

    model_config = ConfigDict(frozen=True)

    path: Path
    kind: ArtifactKind
    node_id: str | None = None
    sha256: str | None = None
    size: int | None = None

    @classmethod
    def downloaded(cls, file: DownloadedFile, kind: ArtifactKind) -> Product:
        """A worker's output; ``kind`` is the template manifest's kind for its node (e.g. ``lora``)."""
        return cls(path=file.path, kind=kind, node_id=file.node_id, sha256=file.sha256, size=file.size)


class StageOutput(BaseModel):
    """What one run of a stage produced: files to store, a small JSON record, and the GPU job's facts."""

    products: list[Product] = Field(default_factory=list)
    record: dict[str, Any] = Field(default_factory=dict)
    job: JobFacts | None = None
