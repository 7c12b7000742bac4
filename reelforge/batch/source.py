"""Where a batch CSV comes from: a local path or an ``s3://bucket/key`` URI (read with the store's S3 settings)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reelforge.characters.batch import BatchFileError
from reelforge.settings import StoreSettings

__all__ = ["read_source"]


def read_source(location: str, settings: StoreSettings, *, max_bytes: int, client: Any = None) -> bytes:
    """The file's bytes; ``BatchFileError`` naming the location when it is missing, unreadable or too big.

    Size is checked before reading (``stat`` / ``HEAD``), so a huge file is refused without being fetched.
    ``client``: a boto3 client (default: one from ``settings``: endpoint, region, credentials).
    """
    if location.startswith("s3://"):
        return _read_s3(location, settings, max_bytes, client)
    path = Path(location).expanduser()
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise BatchFileError("no such file", source=location) from None
    except OSError as exc:
        raise BatchFileError(f"cannot be read ({exc.strerror})", source=location) from None
    if path.is_dir():
        raise BatchFileError("is a folder, not a CSV file", source=location)
    _check_size(size, max_bytes, location)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise BatchFileError(f"cannot be read ({exc.strerror})", source=location) from None


def _check_size(size: int, max_bytes: int, location: str) -> None:
    if size > max_bytes:
        raise BatchFileError(f"{size} bytes, over the limit of {max_bytes} (REELFORGE_BATCH_MAX_BYTES)",
                             source=location)


def _read_s3(location: str, settings: StoreSettings, max_bytes: int, client: Any) -> bytes:
    from botocore.exceptions import BotoCoreError, ClientError

    from reelforge.storage.s3 import make_client

    bucket, _, key = location[len("s3://"):].partition("/")
    if not bucket or not key or key.endswith("/"):
        raise BatchFileError("not an s3://bucket/key URI of a file", source=location)
    client = client if client is not None else make_client(settings, max_attempts=3)
    try:
        head = client.head_object(Bucket=bucket, Key=key)
        _check_size(int(head.get("ContentLength", 0)), max_bytes, location)
        body = client.get_object(Bucket=bucket, Key=key)["Body"]
        try:
            data: bytes = body.read(max_bytes + 1)
        finally:
            body.close()
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        what = {"404": "no such object", "NoSuchKey": "no such object", "NoSuchBucket": "no such bucket",
                "403": "access denied", "AccessDenied": "access denied"}.get(code, f"S3 error {code}")
        raise BatchFileError(what, source=location) from None
    except BotoCoreError as exc:
        raise BatchFileError(f"S3 unreachable ({type(exc).__name__})", source=location) from None
    _check_size(len(data), max_bytes, location)
    return data
