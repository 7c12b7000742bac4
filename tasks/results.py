"""Where Prefect persists stage results and cache records, and where their locks live: beside the store.

* Local store: results under ``<store>/.prefect-results`` (a ``pathlib.Path``: a bare string would be read as a
  block name), locks under ``<store>/.prefect-locks``.
* S3 store: an ``S3Bucket`` block (prefect-aws) for ``s3://bucket/prefix/.prefect-results``, because Prefect
  only accepts saved blocks as remote result storage. It is saved once per store as
  ``reelforge-results-<hash of the store URL>``: a run loads the saved block and saves it again only when the
  store's endpoint, region, profile or keys changed. Locks are per machine under ``$PREFECT_HOME``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from pathlib import Path
from typing import Any

from reelforge.settings import StoreSettings

__all__ = ["LOCKS_DIR", "RESULTS_DIR", "block_name", "lock_folder_for", "result_storage_for"]

log = logging.getLogger(__name__)

RESULTS_DIR = ".prefect-results"
LOCKS_DIR = ".prefect-locks"

_saved: dict[str, Any] = {}  # block name -> block, per process


def _store_hash(settings: StoreSettings) -> str:
    return hashlib.sha256(settings.store.encode("utf-8")).hexdigest()[:16]


def block_name(settings: StoreSettings) -> str:
    return f"reelforge-results-{_store_hash(settings)}"


def _local_results_dir(settings: StoreSettings) -> Path:
    return Path(settings.store).expanduser().resolve() / RESULTS_DIR


def _s3_block(settings: StoreSettings) -> Any:
    from prefect_aws import AwsClientParameters, AwsCredentials, S3Bucket

    bucket, _, prefix = settings.store.removeprefix("s3://").partition("/")
    folder = f"{prefix.strip('/')}/{RESULTS_DIR}" if prefix.strip("/") else RESULTS_DIR
    credentials = AwsCredentials(
        aws_access_key_id=settings.s3_access_key_id.get_secret_value() if settings.s3_access_key_id else None,
        aws_secret_access_key=settings.s3_secret_access_key if settings.s3_secret_access_key else None,
        region_name=settings.s3_region,
        profile_name=settings.aws_profile,
        aws_client_parameters=AwsClientParameters(endpoint_url=settings.s3_endpoint_url),
    )
    return S3Bucket(bucket_name=bucket, bucket_folder=folder, credentials=credentials)


def _fields(block: Any) -> Any:
    """What identifies a block's target: its fields with secrets revealed (a changed key must re-save)."""
    # Only the declared fields: a loaded block also carries its document id and name.
    data = {name: value for name, value in block.model_dump(mode="python").items() if name in type(block).model_fields}
    creds = block.credentials
    secret = creds.aws_secret_access_key
    data["credentials"]["aws_secret_access_key"] = secret.get_secret_value() if secret is not None else None
    return data


async def result_storage_for(settings: StoreSettings) -> Any:
    """A ``Path`` for a local store; for S3 the saved ``S3Bucket`` block (saved only when absent or changed)."""
    if not settings.is_s3:
        return await asyncio.to_thread(_local_results_dir, settings)
    from prefect_aws import S3Bucket

    name = block_name(settings)
    wanted = _s3_block(settings)
    known = _saved.get(name)
    if known is not None and _fields(known) == _fields(wanted):
        return known
    try:
        existing = await S3Bucket.aload(name)
    except ValueError:  # no block of that name yet
        existing = None
    if existing is not None and _fields(existing) == _fields(wanted):
        _saved[name] = existing
        return existing
    log.info("saving result-storage block %s for %s", name, settings.store)
    await wanted.asave(name, overwrite=True)
    _saved[name] = wanted
    return wanted


def lock_folder_for(settings: StoreSettings) -> Path:
    """Cache locks: beside a local store; for S3 under PREFECT_HOME (locks are per machine, see README)."""
    if not settings.is_s3:
        return Path(settings.store).expanduser().resolve() / LOCKS_DIR
    from prefect.settings import PREFECT_HOME

    return Path(PREFECT_HOME.value()) / "reelforge-locks" / _store_hash(settings)
