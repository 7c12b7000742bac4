"""Artifact storage and lineage (docs/storage.md): a local folder or S3-compatible storage, write-once."""

from __future__ import annotations

from reelforge.settings import StoreSettings
from reelforge.storage.base import ArtifactKind, ArtifactRef, ArtifactStore, guess_media
from reelforge.storage.errors import (
    ArtifactMissing,
    StoreConflict,
    StoreError,
    StoreFull,
    StoreNotWritable,
    StoreUnavailable,
    UnsafeKey,
)
from reelforge.storage.local import LocalStore
from reelforge.storage.versions import VersionInfo

__all__ = [
    "ArtifactKind",
    "ArtifactMissing",
    "ArtifactRef",
    "ArtifactStore",
    "LocalStore",
    "StoreConflict",
    "StoreError",
    "StoreFull",
    "StoreNotWritable",
    "StoreUnavailable",
    "UnsafeKey",
    "VersionInfo",
    "guess_media",
    "open_store",
]


def open_store(settings: StoreSettings) -> ArtifactStore:
    """``S3Store`` for ``REELFORGE_STORE=s3://bucket[/prefix]``, else a ``LocalStore`` on the folder."""
    if settings.is_s3:
        from reelforge.storage.s3 import S3Store  # boto3 is imported only when S3 is used

        return S3Store.from_settings(settings)
    return LocalStore(settings.store)
