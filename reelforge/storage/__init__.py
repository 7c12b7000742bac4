"""Artifact storage and lineage (docs/storage.md): a local folder or S3-compatible storage, write-once."""

from __future__ import annotations

from typing import TYPE_CHECKING

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
from reelforge.storage.keys import (
    batch_key,
    character_key,
    character_prefix,
    character_stage_prefix,
    check_key,
    content_key,
    group_key,
    name_claim_key,
    production_key,
    production_part_prefix,
    production_prefix,
    production_shot_prefix,
    run_key,
    safe_slug,
    template_prefix,
)
from reelforge.storage.lineage import (
    JobFacts,
    Manifest,
    ParentRef,
    StageKind,
    StageRecord,
    StoredOutput,
    character_manifest_key,
    cost_for,
    read_manifest,
    run_manifest_key,
    write_manifest,
)
from reelforge.storage.local import LocalStore
from reelforge.storage.versions import VersionInfo

if TYPE_CHECKING:  # settings import storage's key rules; storage needs only their attributes
    from reelforge.settings import StoreSettings

__all__ = [
    "ArtifactKind",
    "ArtifactMissing",
    "ArtifactRef",
    "ArtifactStore",
    "JobFacts",
    "LocalStore",
    "Manifest",
    "ParentRef",
    "StageKind",
    "StageRecord",
    "StoreConflict",
    "StoreError",
    "StoreFull",
    "StoreNotWritable",
    "StoreUnavailable",
    "StoredOutput",
    "UnsafeKey",
    "VersionInfo",
    "batch_key",
    "character_key",
    "character_manifest_key",
    "character_prefix",
    "character_stage_prefix",
    "check_key",
    "content_key",
    "cost_for",
    "group_key",
    "guess_media",
    "name_claim_key",
    "open_store",
    "production_key",
    "production_part_prefix",
    "production_prefix",
    "production_shot_prefix",
    "read_manifest",
    "run_key",
    "run_manifest_key",
    "safe_slug",
    "template_prefix",
    "write_manifest",
]


def open_store(settings: StoreSettings) -> ArtifactStore:
    """``S3Store`` for ``REELFORGE_STORE=s3://bucket[/prefix]``, else a ``LocalStore`` on the folder."""
    if settings.is_s3:
        from reelforge.storage.s3 import S3Store  # boto3 is imported only when S3 is used

        return S3Store.from_settings(settings)
    return LocalStore(settings.store)
