"""The storage interface: ``ArtifactRef`` (what tasks pass around) and the ``ArtifactStore`` protocol.

See docs/storage.md. Implementations: ``LocalStore`` (a folder) and ``S3Store`` (S3-compatible storage).
"""

from __future__ import annotations

import builtins
import mimetypes
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast, get_args, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from reelforge.liveness import Holder
    from reelforge.storage.versions import VersionInfo

ArtifactKind = Literal["image", "video", "audio", "lora", "json", "text", "file"]
ARTIFACT_KINDS: tuple[str, ...] = get_args(ArtifactKind)


# Extensions mimetypes gets wrong or does not know on every platform.
_EXPLICIT_TYPES: dict[str, tuple[str, ArtifactKind]] = {
    ".png": ("image/png", "image"),
    ".jpg": ("image/jpeg", "image"),
    ".jpeg": ("image/jpeg", "image"),
    ".webp": ("image/webp", "image"),
    ".gif": ("image/gif", "image"),
    ".flac": ("audio/flac", "audio"),
    ".opus": ("audio/opus", "audio"),
    ".ogg": ("audio/ogg", "audio"),
    ".wav": ("audio/wav", "audio"),
    ".mp3": ("audio/mpeg", "audio"),
    ".m4a": ("audio/mp4", "audio"),
    ".mp4": ("video/mp4", "video"),
    ".webm": ("video/webm", "video"),
    ".mov": ("video/quicktime", "video"),
    ".mkv": ("video/x-matroska", "video"),
    ".safetensors": ("application/octet-stream", "lora"),
    ".json": ("application/json", "json"),
    ".txt": ("text/plain", "text"),
    ".srt": ("application/x-subrip", "text"),
    ".ass": ("text/x-ssa", "text"),
    ".vtt": ("text/vtt", "text"),
    ".yaml": ("application/yaml", "text"),
    ".yml": ("application/yaml", "text"),
}


class ArtifactRef(BaseModel):
    """A stored artifact: tasks pass these around, never media bytes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str  # store-relative: characters/mina-park/v1/base/<sha256[:16]>.png
    uri: str  # file:///abs/path or s3://bucket/prefix/key
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)
    media_type: str  # image/png, video/mp4, audio/flac, application/json, ...
    kind: ArtifactKind
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def name(self) -> str:
        """The last segment of the key (the file name)."""
        return self.key.rsplit("/", 1)[-1]


def guess_media(name: str, kind: str | None = None) -> tuple[str, ArtifactKind]:
    """``(media_type, kind)`` from a file name's extension; ``kind`` (when given) overrides the guessed kind."""
    suffix = Path(name).suffix.lower()
    if suffix in _EXPLICIT_TYPES:
        media_type, guessed = _EXPLICIT_TYPES[suffix]
    else:
        media_type = mimetypes.guess_type(f"x{suffix}", strict=False)[0] or "application/octet-stream"
        major = media_type.split("/", 1)[0]
        if major in ("image", "video", "audio"):
            guessed = cast(ArtifactKind, major)
        elif media_type == "application/json" or media_type.endswith("+json"):
            guessed = "json"
        elif major == "text":
            guessed = "text"
        else:
            guessed = "file"
    if kind is None:
        return media_type, guessed
    if kind not in ARTIFACT_KINDS:
        raise ValueError(f"unknown artifact kind {kind!r}; use one of {', '.join(ARTIFACT_KINDS)}")
    return media_type, cast(ArtifactKind, kind)


@runtime_checkable
class ArtifactStore(Protocol):
    """Content-checked, write-once artifact storage (see docs/storage.md).

    Writes are atomic and never overwrite: the same content under an existing key is an idempotent no-op
    (the existing ref is returned), other content raises ``StoreConflict``. The methods are blocking; async
    callers use ``asyncio.to_thread``.
    """

    def put_file(
        self,
        path: Path,
        key: str,
        *,
        kind: str | None = None,
        metadata: dict[str, Any] | None = None,
        sha256: str | None = None,
    ) -> ArtifactRef:
        """Store ``path`` under ``key``. ``sha256``: the file's digest when the caller already has it (computed as
        the bytes arrived); the store then skips its own pass where it would be a separate read, verifies it
        where it hashes anyway (local copy), and refuses a file that changed while being stored."""
        ...

    def put_bytes(
        self, data: bytes, key: str, *, kind: str | None = None, metadata: dict[str, Any] | None = None
    ) -> ArtifactRef: ...

    def put_json(self, obj: Any, key: str) -> ArtifactRef: ...

    def put_new(
        self, data: bytes, key: str, *, kind: str | None = None, metadata: dict[str, Any] | None = None
    ) -> ArtifactRef:
        """Create-if-absent: like ``put_bytes``, but ``StoreConflict`` whenever the key exists, same content or
        not (a claim: exactly one of several concurrent callers wins)."""
        ...

    def get_file(self, key: str, dest: Path) -> Path: ...

    def read_bytes(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str) -> list[str]: ...

    def url(self, key: str, *, expires_s: int | None = None) -> str: ...

    def next_version(self, prefix: str, marker: str = "v") -> int: ...

    def ref(self, key: str) -> ArtifactRef: ...

    def check_writable(self) -> None:
        """Probe write + delete; ``StoreNotWritable`` (``StoreFull``) or ``StoreUnavailable`` naming the cause."""
        ...

    def reserve_version(self, prefix: str, holder: Holder) -> int:
        """Atomically claim the next ``<prefix>v<N>/`` (see ``reelforge.storage.versions``)."""
        ...

    def versions(
        self, prefix: str, *, max_age_s: float | None = None, complete: str = "manifest.json"
    ) -> builtins.list[VersionInfo]: ...

    def mark_abandoned(
        self, prefix: str, *, max_age_s: float | None = None, complete: str = "manifest.json"
    ) -> builtins.list[int]: ...

    def abandon(self, prefix: str, number: int, *, reason: str) -> bool: ...


def json_bytes(obj: Any) -> bytes:
    """Canonical JSON for ``put_json``: sorted keys, UTF-8, trailing newline (same object -> same sha256)."""
    import json

    if isinstance(obj, BaseModel):
        obj = obj.model_dump(mode="json")
    return (json.dumps(obj, sort_keys=True, ensure_ascii=False, indent=2, default=str) + "\n").encode("utf-8")
