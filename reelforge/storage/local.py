"""``LocalStore``: artifacts in a folder, written atomically and never overwritten.

Layout: ``<root>/<key>`` holds the bytes; ``<root>/.meta/<key>.json`` holds the ref (sha256, kind, media
type, metadata) so ``ref()`` need not re-hash. Temporary files are hidden (``.name.xxxx.tmp``) next to their
target, so the final step is a same-folder ``os.link`` (fails if the key exists: a concurrent writer can never
clobber) and a reader never sees a partial file. Keys starting with ``.`` are refused, so neither kind of hidden
file can collide with a key.

Every ``OSError`` is translated at the public methods (``errors.boundary``): disk full -> ``StoreFull``, read-only
or refused -> ``StoreNotWritable``, ... with the root, key and operation as attributes. A failed write removes
its temp file and leaves what was stored untouched. Errors of the caller's source stream stay the caller's.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import hashlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any

from reelforge.hashing import CHUNK_SIZE, sha256_file
from reelforge.storage import versions as _versions
from reelforge.storage.base import ArtifactRef, guess_media, json_bytes
from reelforge.storage.errors import (
    ArtifactMissing,
    StoreConflict,
    StoreError,
    StoreNotWritable,
    UnsafeKey,
    boundary,
)
from reelforge.storage.keys import check_key, check_prefix, version_number

META_DIR = ".meta"
# os.link fails with these where the file system has no hard links (some FUSE, SMB, FAT mounts).
_NO_LINK_ERRNOS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV, errno.ENOSYS}


class LocalStore(_versions.VersionedFolders):
    """A folder of write-once artifacts (see docs/storage.md)."""

    def __init__(self, root: Path | str) -> None:
        path = Path(root).expanduser()
        with boundary("open", None, store=str(path)):
            path.mkdir(parents=True, exist_ok=True)
            self.root = path.resolve()

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def _boundary(self, operation: str, key: str | None) -> contextlib.AbstractContextManager[None]:
        return boundary(operation, key, store=str(self.root))

    # -- paths ---------------------------------------------------------------------------------------------

    def _inside(self, path: Path, key: str) -> Path:
        resolved = path.resolve()
        if resolved != self.root and not resolved.is_relative_to(self.root):
            raise UnsafeKey(f"key {key!r} resolves outside the store root {self.root} (through a symlink?)")
        return resolved

    def path_for(self, key: str) -> Path:
        """The absolute path of a key, after checking it cannot leave the root (even through symlinks)."""
        check_key(key)
        return self._inside(self.root / key, key)

    def _meta_path(self, key: str) -> Path:
        return self._inside(self.root / META_DIR / f"{key}.json", key)

    def _make_parent(self, target: Path, key: str) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        self._inside(target.parent, key)  # a symlink swapped in meanwhile would show here

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
        with open(path, "rb") as source:  # the caller's file: its errors stay plain OSError
            return self.put_stream(source, key, kind=kind, metadata=metadata, expected_sha256=sha256)

    def put_bytes(
        self, data: bytes, key: str, *, kind: str | None = None, metadata: dict[str, Any] | None = None
    ) -> ArtifactRef:
        return self.put_stream(io.BytesIO(data), key, kind=kind, metadata=metadata)

    def put_new(
        self, data: bytes, key: str, *, kind: str | None = None, metadata: dict[str, Any] | None = None
    ) -> ArtifactRef:
        """Create-if-absent: ``StoreConflict`` when ``key`` exists, whatever its content."""
        return self.put_stream(io.BytesIO(data), key, kind=kind, metadata=metadata, exclusive=True)

    def put_json(self, obj: Any, key: str) -> ArtifactRef:
        return self.put_bytes(json_bytes(obj), key, kind="json")

    def put_stream(
        self,
        source: IO[bytes],
        key: str,
        *,
        kind: str | None = None,
        metadata: dict[str, Any] | None = None,
        expected_sha256: str | None = None,
        exclusive: bool = False,
    ) -> ArtifactRef:
        """Copy a readable binary stream under ``key`` (hashing while copying); the core of every put.

        ``exclusive``: an existing key is a ``StoreConflict`` even with the same content (``put_new``).
        """
        with self._boundary("put", key):
            target = self.path_for(key)
            media_type, kind_ = guess_media(key, kind)
            meta = dict(metadata or {})
            json.dumps(meta)  # metadata must be JSON (it is stored as JSON), fail before writing anything
            self._make_parent(target, key)
            fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name[:100]}.", suffix=".tmp")
        tmp = Path(tmp_name)
        try:
            digest = hashlib.sha256()
            size = 0
            while chunk := source.read(CHUNK_SIZE):  # outside the boundary: the source's errors are the caller's
                digest.update(chunk)
                size += len(chunk)
                with self._boundary("put", key):
                    _write_all(fd, chunk)
            with self._boundary("put", key):
                os.fsync(fd)
                closing, fd = fd, -1  # closed once, even if close itself fails (NFS reports errors there)
                os.close(closing)
                sha = digest.hexdigest()
                if expected_sha256 is not None and sha != expected_sha256:
                    raise StoreError(
                        f"{key}: the source's sha256 is {sha}, not {expected_sha256} as the caller said (changed?)"
                    )
                new = ArtifactRef(
                    key=key,
                    uri=target.as_uri(),
                    sha256=sha,
                    size=size,
                    media_type=media_type,
                    kind=kind_,
                    metadata=meta,
                )
                if not self._publish(tmp, target, exclusive=exclusive):
                    if exclusive:
                        raise StoreConflict(f"{key!r} already exists in {self.root}")
                    return self._existing(target, key, new)
                _fsync_dir(target.parent)
        finally:
            if fd >= 0:
                os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        with self._boundary("put", key):
            self._write_meta(new)
        return new

    def _publish(self, tmp: Path, target: Path, *, exclusive: bool = False) -> bool:
        """Make ``tmp`` visible as ``target``; False when ``target`` already exists (nothing changed)."""
        try:
            os.link(tmp, target)
            return True
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in _NO_LINK_ERRNOS:
                raise
        if exclusive:
            # No hard links: claim the name with O_EXCL, then fill it by rename (a reader may see it empty
            # for that moment; reservations read as unreadable are treated as abandoned, see versions.py).
            try:
                os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            except FileExistsError:
                return False
            os.replace(tmp, target)
            return True
        # No hard links here: check-then-rename leaves a small race window between two writers of one key.
        if target.exists():
            return False
        os.replace(tmp, target)
        return True

    def _existing(self, target: Path, key: str, new: ArtifactRef) -> ArtifactRef:
        sha, size = sha256_file(target)
        if sha != new.sha256:
            raise StoreConflict(
                f"{key!r} already exists in {self.root} with other content "
                f"(sha256 {sha[:16]}…, {size} bytes; new {new.sha256[:16]}…, {new.size} bytes)"
            )
        stored = self._read_meta(key, size)
        if stored is not None and stored.sha256 == sha:
            return stored
        self._write_meta(new)  # a crash between publishing and writing the metadata: repair it
        return new

    def _write_meta(self, ref: ArtifactRef) -> None:
        meta_path = self._meta_path(ref.key)
        meta_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=meta_path.parent, prefix=f".{meta_path.name[:100]}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(ref.model_dump_json(exclude={"uri"}).encode("utf-8"))
            os.replace(tmp_name, meta_path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise

    def _read_meta(self, key: str, size: int) -> ArtifactRef | None:
        try:
            data = json.loads(self._meta_path(key).read_bytes())
            data["uri"] = self.path_for(key).as_uri()
            ref = ArtifactRef.model_validate(data)
        except (OSError, ValueError):
            return None
        return ref if ref.size == size and ref.key == key else None

    # -- reads ---------------------------------------------------------------------------------------------

    def _existing_path(self, key: str) -> Path:
        path = self.path_for(key)
        if not path.is_file():
            raise ArtifactMissing(f"no artifact {key!r} in {self.root}")
        return path

    def ref(self, key: str) -> ArtifactRef:
        with self._boundary("ref", key):
            path = self._existing_path(key)
            size = path.stat().st_size
            stored = self._read_meta(key, size)
            if stored is not None:
                return stored
            sha, size = sha256_file(path)
            media_type, kind = guess_media(key)
            return ArtifactRef(key=key, uri=path.as_uri(), sha256=sha, size=size, media_type=media_type, kind=kind)

    def exists(self, key: str) -> bool:
        with self._boundary("exists", key):
            return self.path_for(key).is_file()

    def read_bytes(self, key: str) -> bytes:
        with self._boundary("read", key):
            return self._existing_path(key).read_bytes()

    def get_file(self, key: str, dest: Path, *, verify: bool = False) -> Path:
        """Copy to ``dest`` through a hidden temp file and a rename, so ``dest`` is never partial.

        ``verify=True`` hashes while copying and checks the recorded sha256; otherwise the copy is the kernel's
        (``shutil.copyfile``, several times faster than any copy through Python).
        """
        with self._boundary("get", key):
            source = self._existing_path(key)
            expected = self._read_meta(key, source.stat().st_size) if verify else None
            dest = Path(dest)
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name[:100]}.", suffix=".part")
            os.close(fd)
            try:
                if verify:
                    sha, _ = _copy_hashing(source, Path(tmp_name))
                    if sha != (expected.sha256 if expected is not None else self.ref(key).sha256):
                        raise StoreError(f"{key!r} in {self.root} does not match its recorded sha256 (corrupted?)")
                else:
                    shutil.copyfile(source, tmp_name)
                os.replace(tmp_name, dest)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp_name)
                raise
        return dest

    def url(self, key: str, *, expires_s: int | None = None) -> str:
        """The absolute file path (``expires_s`` is ignored)."""
        with self._boundary("url", key):
            return str(self._existing_path(key))

    def list(self, prefix: str = "") -> list[str]:
        with self._boundary("list", prefix or None):
            return self._list(prefix)

    def _list(self, prefix: str) -> builtins.list[str]:
        check_prefix(prefix)
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        base = self._inside(self.root / folder, prefix) if folder else self.root
        if not base.is_dir():
            return []
        keys: list[str] = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                if name.startswith("."):
                    continue
                key = name if rel == "." else f"{rel}/{name}"
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def next_version(self, prefix: str, marker: str = "v") -> int:
        """1 + the highest ``<marker><N>`` folder directly under ``prefix`` (1 when there is none)."""
        with self._boundary("next_version", prefix or None):
            check_prefix(prefix)
            folder = prefix.rstrip("/")
            base = self._inside(self.root / folder, prefix) if folder else self.root
            if not base.is_dir():
                return 1
            numbers = [version_number(entry.name, marker) for entry in base.iterdir() if entry.is_dir()]
            return max((n for n in numbers if n is not None), default=0) + 1

    # -- probes (the version methods come from reelforge.storage.versions.VersionedFolders) ---------------

    def check_writable(self) -> None:
        """Write, fsync and delete a hidden probe file in the root; raise ``StoreNotWritable`` / ``StoreFull``."""
        with self._boundary("check_writable", None):
            if not self.root.is_dir():
                raise StoreNotWritable(f"the store root {self.root} is missing or not a folder")
            fd, name = tempfile.mkstemp(dir=self.root, prefix=".probe-", suffix=".tmp")
            try:
                _write_all(fd, b"reelforge write probe\n")
                os.fsync(fd)
            finally:
                os.close(fd)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _copy_hashing(source: Path, target: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(source, "rb") as src, open(target, "wb") as out:
        while chunk := src.read(CHUNK_SIZE):
            digest.update(chunk)
            out.write(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
