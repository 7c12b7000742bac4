"""``S3Store``: artifacts in an S3-compatible bucket (AWS S3, MinIO, R2, a loopback moto server).

* Uploads stream from disk through boto3's transfer manager (multipart above ``multipart_threshold_mb``, parts
  read lazily from the file, never the whole file in memory). The sha256 is computed in a first streamed pass
  (it must be known before the upload starts: it travels as ``x-amz-meta-sha256`` in the object's metadata,
  which S3 fixes when the (multipart) upload is created); the file's size and mtime are compared before and
  after, and an upload whose source changed meanwhile is deleted and refused.
* No overwrite: files at or above the multipart threshold are checked with a HEAD first (a re-run of a large
  upload costs one request, not a re-upload); every upload carries ``If-None-Match: *`` (on PutObject and on
  CompleteMultipartUpload), so S3 itself refuses to replace an object that appeared meanwhile; a refusal
  (412/409) is resolved by a HEAD: same sha256 = idempotent, other content = ``StoreConflict``. For servers
  without conditional writes, pass ``conditional_writes=False``: every put then HEADs first, and two writers
  racing on one new key within the upload's duration could both succeed (the last one wins).
* An object is visible only once its upload completed; a failing multipart upload is aborted by the transfer
  manager, so no parts linger.
* ``url()`` is a presigned GET URL; ``get_file`` downloads to a hidden temp file next to ``dest`` and renames
  it (``verify=True``: after checking the sha256).

* ``put_new`` (create-if-absent, the base of ``reserve_version``) is the same conditional PutObject, with any
  existing object a ``StoreConflict``. ``check_writable`` puts and deletes a probe under ``<prefix>/.reelforge/``
  (a hidden segment no caller's key can have; ``list`` skips it).

Errors: connection failures, timeouts, 5xx and throttling -> ``StoreUnavailable``; 404 -> ``ArtifactMissing``;
403 on a write -> ``StoreNotWritable``; a full MinIO (507, ``XMinioStorageFull``) -> ``StoreFull``; 403 on a read
and the rest -> ``StoreError``. Every error carries ``store`` (``s3://bucket/prefix``), ``bucket``, ``key`` and
``operation``; messages never contain credentials.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import boto3
from boto3.s3.transfer import TransferConfig, create_transfer_manager
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
)
from s3transfer.exceptions import RetriesExceededError
from s3transfer.subscribers import BaseSubscriber

from reelforge.hashing import CHUNK_SIZE, sha256_bytes, sha256_file, sha256_stream
from reelforge.storage import versions as _versions
from reelforge.storage.base import ARTIFACT_KINDS, ArtifactRef, guess_media, json_bytes
from reelforge.storage.errors import (
    WRITE_OPERATIONS,
    ArtifactMissing,
    StoreConflict,
    StoreError,
    StoreFull,
    StoreNotWritable,
    StoreUnavailable,
    boundary,
)
from reelforge.storage.keys import check_key, check_prefix, version_number

if TYPE_CHECKING:  # settings import storage's key rules; storage needs only their attributes
    from reelforge.settings import StoreSettings

MIB = 1024 * 1024
# Codes S3 (and compatible servers) use for "try again later".
_TRANSIENT_CODES = frozenset(
    {"SlowDown", "RequestTimeout", "ServiceUnavailable", "InternalError", "Throttling", "RequestTimeTooSkewed"}
)
_PRECONDITION_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})
_FULL_CODES = frozenset({"XMinioStorageFull", "InsufficientStorage"})
# Store-internal objects (write probes) live under this hidden segment: check_key refuses it in callers' keys.
INTERNAL_PREFIX = ".reelforge/"
# User metadata travels in HTTP headers: S3 allows 2 KB for all of them together.
_MAX_METADATA_BYTES = 1800


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ``("bucket", "some/prefix")``."""
    if not url.startswith("s3://"):
        raise ValueError(f"not an s3:// URL: {url!r}")
    bucket, _, prefix = url[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {url!r}")
    prefix = prefix.strip("/")
    if prefix:
        check_key(prefix)
    return bucket, prefix


def make_client(
    settings: StoreSettings,
    *,
    max_attempts: int = 5,
    connect_timeout: float = 10.0,
    read_timeout: float = 60.0,
    max_pool_connections: int = 16,
) -> Any:
    """A boto3 S3 client from settings: endpoint, region, named profile, explicit keys (else boto3's chain)."""
    key_id, secret = settings.s3_access_key_id, settings.s3_secret_access_key
    if (key_id is None) != (secret is None):
        raise StoreError("set both REELFORGE_S3_ACCESS_KEY_ID and REELFORGE_S3_SECRET_ACCESS_KEY, or neither")
    try:
        session = boto3.session.Session(profile_name=settings.aws_profile) if settings.aws_profile else None
    except ProfileNotFound as exc:
        raise StoreError(f"AWS profile {settings.aws_profile!r} not found") from exc
    config = Config(
        retries={"total_max_attempts": max_attempts, "mode": "standard"},  # attempts, first one included
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_pool_connections=max_pool_connections,
        signature_version="s3v4",
        # Custom endpoints (MinIO, R2, test servers) are addressed by path: no per-bucket DNS names.
        s3={"addressing_style": "path"} if settings.s3_endpoint_url else {},
    )
    kwargs: dict[str, Any] = {"endpoint_url": settings.s3_endpoint_url, "region_name": settings.s3_region}
    if key_id is not None and secret is not None:
        kwargs["aws_access_key_id"] = key_id.get_secret_value()
        kwargs["aws_secret_access_key"] = secret.get_secret_value()
    return (session or boto3.session.Session()).client("s3", config=config, **kwargs)


class S3Store(_versions.VersionedFolders):
    """Write-once artifacts under ``s3://bucket/prefix/`` (see docs/storage.md)."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        client: Any = None,
        *,
        multipart_threshold_mb: int = 64,
        presign_expiry_s: int = 3600,
        conditional_writes: bool = True,
        max_concurrency: int = 10,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if self.prefix:
            check_key(self.prefix)
        self.store_uri = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.client = client if client is not None else boto3.session.Session().client("s3")
        self.presign_expiry_s = presign_expiry_s
        self.conditional_writes = conditional_writes
        self.multipart_threshold = multipart_threshold_mb * MIB
        self.transfer_config = TransferConfig(
            multipart_threshold=self.multipart_threshold,
            multipart_chunksize=self.multipart_threshold,
            max_concurrency=max_concurrency,
            use_threads=True,
        )
        self._guarded: dict[tuple[str, str], int] = {}  # keys being written -> how many writers
        self._guard_lock = threading.Lock()
        if conditional_writes:
            events = self.client.meta.events
            for operation in ("PutObject", "CompleteMultipartUpload"):
                events.register(f"before-parameter-build.s3.{operation}", self._add_if_none_match)

    @classmethod
    def from_settings(cls, settings: StoreSettings, *, client: Any = None, **client_options: Any) -> S3Store:
        """Build from ``StoreSettings`` (``store = s3://bucket[/prefix]``); ``client_options`` go to ``make_client``."""
        bucket, prefix = parse_s3_url(settings.store)
        return cls(
            bucket,
            prefix,
            client if client is not None else make_client(settings, **client_options),
            multipart_threshold_mb=settings.multipart_threshold_mb,
            presign_expiry_s=settings.presign_expiry_s,
        )

    def __repr__(self) -> str:
        endpoint = getattr(self.client.meta, "endpoint_url", None)
        return f"S3Store(s3://{self.bucket}/{self.prefix}, endpoint={endpoint!r})"

    # -- keys and errors -----------------------------------------------------------------------------------

    def _full(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._full(key)}"

    def _error(self, exc: Exception, action: str, key: str | None, operation: str) -> StoreError:
        full = (f"{self.prefix}/{key}" if self.prefix else key) if key is not None else self.prefix
        where = f"s3://{self.bucket}/{full}"
        return map_error(
            exc, f"{action} {where}", store=self.store_uri, bucket=self.bucket, key=key, operation=operation
        )

    def _boundary(self, operation: str, key: str | None) -> contextlib.AbstractContextManager[None]:
        return boundary(operation, key, store=self.store_uri, bucket=self.bucket)

    def _add_if_none_match(self, params: dict[str, Any], **_: Any) -> None:
        if (params.get("Bucket"), params.get("Key")) in self._guarded:
            params.setdefault("IfNoneMatch", "*")

    @contextlib.contextmanager
    def _guard(self, full_key: str) -> Iterator[None]:
        item = (self.bucket, full_key)
        with self._guard_lock:
            self._guarded[item] = self._guarded.get(item, 0) + 1
        try:
            yield
        finally:
            with self._guard_lock:
                if self._guarded[item] <= 1:
                    del self._guarded[item]
                else:
                    self._guarded[item] -= 1

    # -- metadata ------------------------------------------------------------------------------------------

    @staticmethod
    def _s3_metadata(ref: ArtifactRef) -> dict[str, str]:
        meta = {"sha256": ref.sha256, "kind": ref.kind}
        if ref.metadata:
            meta["reelforge-meta"] = json.dumps(ref.metadata, sort_keys=True, ensure_ascii=True, default=str)
        size = sum(len(k) + len(v) for k, v in meta.items())
        if size > _MAX_METADATA_BYTES:
            raise ValueError(
                f"metadata for {ref.key!r} is {size} bytes as S3 headers (at most {_MAX_METADATA_BYTES}); "
                "keep large metadata in a manifest"
            )
        return meta

    def _head(self, key: str, operation: str) -> ArtifactRef | None:
        """The stored ref, or None when the key does not exist."""
        full = self._full(key)
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=full)
        except ClientError as exc:
            if _status(exc) == 404:
                return None
            raise self._error(exc, "HEAD", key, operation) from exc
        except BotoCoreError as exc:
            raise self._error(exc, "HEAD", key, operation) from exc
        meta = {k.lower(): v for k, v in (head.get("Metadata") or {}).items()}
        media_type, kind = guess_media(key)
        if meta.get("kind") in ARTIFACT_KINDS:
            media_type, kind = guess_media(key, meta["kind"])
        sha = meta.get("sha256") or self._remote_sha(key, operation)
        try:
            extra = json.loads(meta["reelforge-meta"]) if "reelforge-meta" in meta else {}
        except ValueError:
            extra = {}
        return ArtifactRef(
            key=key,
            uri=self._uri(key),
            sha256=sha,
            size=int(head.get("ContentLength", 0)),
            media_type=head.get("ContentType") or media_type,
            kind=kind,
            metadata=extra,
        )

    def _remote_sha(self, key: str, operation: str) -> str:
        """Hash an object written by something else (no sha256 metadata), streaming it."""
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._full(key))["Body"]
            with contextlib.closing(body):
                return sha256_stream(body)[0]
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, "GET", key, operation) from exc

    def _same_or_conflict(self, existing: ArtifactRef, new: ArtifactRef) -> ArtifactRef:
        if existing.sha256 == new.sha256:
            return existing
        raise StoreConflict(
            f"{self._uri(new.key)} already exists with other content "
            f"(sha256 {existing.sha256[:16]}…, {existing.size} bytes; new {new.sha256[:16]}…, {new.size} bytes)"
        )

    # -- writes --------------------------------------------------------------------------------------------

    def put_file(
        self,
        path: Path,
        key: str,
        *,
        kind: str | None = None,
        metadata: dict[str, Any] | None = None,
        sha256: str | None = None,
    ) -> ArtifactRef:
        full = self._full(key)
        path = Path(path)
        media_type, kind_ = guess_media(key, kind)
        before = path.stat()  # the caller's file: its errors stay plain OSError
        # The digest goes into the object's metadata, which S3 fixes when the upload starts: without a digest from
        # the caller this is a full pass over the file before the first byte is sent.
        if sha256 is None:
            sha, size = sha256_file(path)
        else:
            if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
                raise ValueError(f"sha256 for {key!r} must be 64 lower-case hex digits")
            sha, size = sha256, before.st_size
        new = ArtifactRef(
            key=key,
            uri=self._uri(key),
            sha256=sha,
            size=size,
            media_type=media_type,
            kind=kind_,
            metadata=dict(metadata or {}),
        )
        extra_args = {"ContentType": media_type, "Metadata": self._s3_metadata(new)}
        with self._boundary("put", key):
            if size >= self.multipart_threshold or not self.conditional_writes:
                existing = self._head(key, "put")
                if existing is not None:
                    return self._same_or_conflict(existing, new)
            try:
                with self._guard(full), create_transfer_manager(self.client, self.transfer_config) as manager:
                    manager.upload(str(path), self.bucket, full, extra_args=extra_args).result()
            except ClientError as exc:
                if _refused(exc):
                    return self._after_refusal(new)
                raise self._error(exc, "upload to", key, "put") from exc
            except BotoCoreError as exc:
                raise self._error(exc, "upload to", key, "put") from exc
            after = path.stat()
            if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns) or after.st_size != size:
                with contextlib.suppress(ClientError, BotoCoreError):
                    self.client.delete_object(Bucket=self.bucket, Key=full)
                raise StoreError(
                    f"{path} changed while it was uploaded to {self._uri(key)}; the upload was removed", path=str(path)
                )
        return new

    def _after_refusal(self, new: ArtifactRef) -> ArtifactRef:
        existing = self._head(new.key, "put")
        if existing is None:  # 409 ConditionalRequestConflict: a concurrent upload had not finished yet
            raise StoreUnavailable(f"a concurrent upload to {self._uri(new.key)} was in progress; retry")
        return self._same_or_conflict(existing, new)

    def _bytes_ref(self, data: bytes, key: str, kind: str | None, metadata: dict[str, Any] | None) -> ArtifactRef:
        media_type, kind_ = guess_media(key, kind)
        return ArtifactRef(
            key=key,
            uri=self._uri(key),
            sha256=sha256_bytes(data),
            size=len(data),
            media_type=media_type,
            kind=kind_,
            metadata=dict(metadata or {}),
        )

    def _put_object(self, new: ArtifactRef, data: bytes) -> bool:
        """One conditional PutObject; False when S3 refused it because the key exists (or is being written)."""
        full = self._full(new.key)
        try:
            with self._guard(full):
                self.client.put_object(
                    Bucket=self.bucket, Key=full, Body=data, ContentType=new.media_type, Metadata=self._s3_metadata(new)
                )
        except ClientError as exc:
            if _refused(exc):
                return False
            raise self._error(exc, "PUT", new.key, "put") from exc
        except BotoCoreError as exc:
            raise self._error(exc, "PUT", new.key, "put") from exc
        return True

    def put_bytes(
        self, data: bytes, key: str, *, kind: str | None = None, metadata: dict[str, Any] | None = None
    ) -> ArtifactRef:
        with self._boundary("put", key):
            new = self._bytes_ref(data, key, kind, metadata)
            if not self.conditional_writes:
                existing = self._head(key, "put")
                if existing is not None:
                    return self._same_or_conflict(existing, new)
            if not self._put_object(new, data):
                return self._after_refusal(new)
        return new

    def put_new(
        self, data: bytes, key: str, *, kind: str | None = None, metadata: dict[str, Any] | None = None
    ) -> ArtifactRef:
        """Create-if-absent: ``StoreConflict`` when ``key`` exists (or another writer is creating it).

        Atomic only with ``conditional_writes`` (``If-None-Match: *``); without, a HEAD first leaves a race window.
        """
        with self._boundary("put", key):
            new = self._bytes_ref(data, key, kind, metadata)
            if not self.conditional_writes and self._head(key, "put") is not None:
                raise StoreConflict(f"{self._uri(key)} already exists")
            if not self._put_object(new, data):
                raise StoreConflict(f"{self._uri(key)} already exists (or is being created by another writer)")
        return new

    def put_json(self, obj: Any, key: str) -> ArtifactRef:
        return self.put_bytes(json_bytes(obj), key, kind="json")

    # -- reads ---------------------------------------------------------------------------------------------

    def ref(self, key: str) -> ArtifactRef:
        with self._boundary("ref", key):
            found = self._head(key, "ref")
            if found is None:
                raise ArtifactMissing(f"no artifact at {self._uri(key)}")
            return found

    def exists(self, key: str) -> bool:
        with self._boundary("exists", key):
            return self._head(key, "exists") is not None

    def read_bytes(self, key: str) -> bytes:
        with self._boundary("read", key):
            try:
                body = self.client.get_object(Bucket=self.bucket, Key=self._full(key))["Body"]
                with contextlib.closing(body):
                    data: bytes = body.read()
                    return data
            except (ClientError, BotoCoreError) as exc:
                raise self._error(exc, "GET", key, "read") from exc

    def get_file(self, key: str, dest: Path, *, verify: bool = False) -> Path:
        """Download to ``dest``: parallel ranged GETs into a hidden temp file next to it, then a rename.

        ``verify=True`` also checks the sha256 against the object's metadata before the rename (one HEAD more;
        the hash is computed while the parts arrive, see ``_HashingSink``, but it costs CPU: ~0.3 s per 64 MB
        on a core without SHA extensions).
        """
        with self._boundary("get", key):
            return self._get_file(key, Path(dest), verify)

    def _get_file(self, key: str, dest: Path, verify: bool) -> Path:
        full = self._full(key)
        expected = self._head(key, "get") if verify else None
        if verify and expected is None:
            raise ArtifactMissing(f"no artifact at {self._uri(key)}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name[:100]}.", suffix=".part")
        try:
            with open(fd, "wb", buffering=0, closefd=True) as raw:
                sink = _HashingSink(raw) if expected is not None else None
                subscribers = [_KnownSize(expected.size)] if expected is not None else None
                try:
                    with create_transfer_manager(self.client, self.transfer_config) as manager:
                        target: Any = sink if sink is not None else tmp_name
                        manager.download(self.bucket, full, target, subscribers=subscribers).result()
                except (ClientError, BotoCoreError, RetriesExceededError) as exc:
                    raise self._error(exc, "download", key, "get") from exc
            if sink is not None and expected is not None:
                sha, size = sink.result()
                if sha is None:  # writes arrived in an order the sink could not follow: hash the file
                    sha, size = sha256_file(Path(tmp_name))
                if sha != expected.sha256 or size != expected.size:
                    raise StoreError(
                        f"download of {self._uri(key)} does not match its sha256 "
                        f"(got {sha[:16]}…, {size} bytes; expected {expected.sha256[:16]}…, {expected.size} bytes)"
                    )
            os.replace(tmp_name, dest)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise
        return dest

    def url(self, key: str, *, expires_s: int | None = None) -> str:
        """A presigned GET URL (valid ``expires_s``, default ``presign_expiry_s``); does not check existence."""
        with self._boundary("url", key):
            try:
                url: str = self.client.generate_presigned_url(
                    "get_object",
                    Params={"Bucket": self.bucket, "Key": self._full(key)},
                    ExpiresIn=expires_s or self.presign_expiry_s,
                )
            except BotoCoreError as exc:
                raise self._error(exc, "presign", key, "url") from exc
            return url

    def _list(self, prefix: str, operation: str, delimiter: str | None = None) -> tuple[list[str], list[str]]:
        full_prefix = f"{self.prefix}/{prefix}" if self.prefix else prefix
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys: list[str] = []
        folders: list[str] = []
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": full_prefix}
        if delimiter:
            kwargs["Delimiter"] = delimiter
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(**kwargs):
                keys += [item["Key"][strip:] for item in page.get("Contents", ())]
                folders += [item["Prefix"][strip:] for item in page.get("CommonPrefixes", ())]
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, "list", prefix or None, operation) from exc
        return keys, folders

    def list(self, prefix: str = "") -> list[str]:
        with self._boundary("list", prefix or None):
            check_prefix(prefix)
            return sorted(k for k in self._list(prefix, "list")[0] if not k.startswith(INTERNAL_PREFIX))

    def next_version(self, prefix: str, marker: str = "v") -> int:
        """1 + the highest ``<marker><N>/`` directly under ``prefix`` (1 when there is none)."""
        with self._boundary("next_version", prefix or None):
            check_prefix(prefix)
            folder = prefix.rstrip("/")
            _, folders = self._list(f"{folder}/" if folder else "", "next_version", delimiter="/")
            numbers = [version_number(f.rstrip("/").rsplit("/", 1)[-1], marker) for f in folders]
            return max((n for n in numbers if n is not None), default=0) + 1

    # -- probes (the version methods come from reelforge.storage.versions.VersionedFolders) ---------------

    def check_writable(self) -> None:
        """Put and delete a probe object under ``<prefix>/.reelforge/`` (an internal key, past ``check_key``).

        Raises ``StoreNotWritable`` (403, no bucket, ...; ``StoreFull`` for a full MinIO) or ``StoreUnavailable``.
        A refused delete is ignored: write-once buckets often deny ``s3:DeleteObject``, and the probe is hidden.
        """
        name = f"{INTERNAL_PREFIX}probe-{uuid.uuid4().hex}"
        full = f"{self.prefix}/{name}" if self.prefix else name
        where = f"s3://{self.bucket}/{full}"
        with self._boundary("check_writable", None):
            try:
                self.client.put_object(Bucket=self.bucket, Key=full, Body=b"reelforge write probe\n")
            except (ClientError, BotoCoreError) as exc:
                error = map_error(
                    exc, f"probe PUT {where}", store=self.store_uri, bucket=self.bucket, operation="check_writable"
                )
                if isinstance(error, StoreUnavailable | StoreNotWritable):
                    raise error from exc
                raise StoreNotWritable(error.message) from exc
            with contextlib.suppress(ClientError, BotoCoreError):
                self.client.delete_object(Bucket=self.bucket, Key=full)


class _KnownSize(BaseSubscriber):  # type: ignore[misc]
    """Tells the transfer manager the object's size, so it skips its own HEAD request."""

    def __init__(self, size: int) -> None:
        self.size = size

    def on_queued(self, future: Any, **_: Any) -> None:
        future.meta.provide_transfer_size(self.size)


class _HashingSink:
    """A seekable file wrapper that computes the sha256 of what the transfer manager writes into it.

    The manager writes ranges of the object out of order (one writer thread, parts arriving concurrently).
    Bytes that extend the hashed prefix are hashed as they come; the others are noted and, once the prefix
    reaches them, read back from the file (page cache). So the hash overlaps the download instead of costing a
    pass after it. ``result()`` is ``(None, size)`` if the writes could not be followed (then hash the file).
    """

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._fd = raw.fileno()
        self._pos = 0
        self._hashed = 0
        self._pending: dict[int, int] = {}  # start -> end of written, not yet hashed runs
        self._digest = hashlib.sha256()
        self._size = 0

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        self._pos = self._raw.seek(offset, whence)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def write(self, data: bytes) -> int:
        written = self._raw.write(data) or 0
        start, end = self._pos, self._pos + written
        self._pos = end
        self._size = max(self._size, end)
        if start <= self._hashed < end:
            self._digest.update(memoryview(data)[self._hashed - start : written])
            self._hashed = end
            self._catch_up()
        elif start > self._hashed:
            self._pending[start] = max(end, self._pending.get(start, end))
        return written

    def _catch_up(self) -> None:
        while self._pending:
            ready = [s for s in self._pending if s <= self._hashed]
            if not ready:
                return
            for start in ready:
                end = self._pending.pop(start)
                while self._hashed < end:
                    chunk = os.pread(self._fd, min(CHUNK_SIZE, end - self._hashed), self._hashed)
                    if not chunk:
                        return
                    self._digest.update(chunk)
                    self._hashed += len(chunk)

    def result(self) -> tuple[str | None, int]:
        self._catch_up()
        if self._pending or self._hashed != self._size:
            return None, self._size
        return self._digest.hexdigest(), self._size


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _refused(exc: ClientError) -> bool:
    """S3 refused a conditional write: the key exists (412) or another writer is completing it (409)."""
    return _code(exc) in _PRECONDITION_CODES or _status(exc) == 412


def map_error(
    exc: Exception,
    what: str,
    *,
    store: str | None = None,
    bucket: str | None = None,
    key: str | None = None,
    operation: str | None = None,
) -> StoreError:
    """A botocore / s3transfer exception as a ``StoreError``; ``what`` names the action and object."""
    context: dict[str, Any] = {"store": store, "bucket": bucket, "key": key, "operation": operation}
    if isinstance(exc, ClientError):
        status, code = _status(exc), _code(exc)
        message = str(exc.response.get("Error", {}).get("Message", ""))[:200]
        if status == 507 or code in _FULL_CODES:
            return StoreFull(f"{what}: the storage server is full ({code or status})", **context)
        if status >= 500 or code in _TRANSIENT_CODES:
            return StoreUnavailable(f"S3 unavailable ({code or status}) during {what}; retry later", **context)
        if code == "NoSuchBucket":
            return StoreError(f"{what}: the bucket does not exist", **context)
        if status == 404 or code in ("NoSuchKey", "NotFound", "404"):
            return ArtifactMissing(f"{what}: not found", **context)
        if status == 403:  # no server message: signature errors echo the access key id
            error = StoreNotWritable if operation in WRITE_OPERATIONS else StoreError
            return error(f"{what}: access denied ({code or 403}); check the credentials and bucket policy", **context)
        detail = f": {message}" if message and "signature" not in message.lower() else ""
        return StoreError(f"{what}: S3 error {code or status}{detail}", **context)
    if isinstance(exc, ConnectionError | HTTPClientError | RetriesExceededError):
        return StoreUnavailable(f"S3 endpoint unreachable during {what} ({type(exc).__name__}); retry later", **context)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return StoreError(
            f"{what}: no usable AWS credentials (set a profile or REELFORGE_S3_ACCESS_KEY_ID/...)", **context
        )
    return StoreError(f"{what}: {type(exc).__name__}", **context)
