from __future__ import annotations

import hashlib
import io
import os
import threading
from pathlib import Path

import pytest

from reelforge.settings import StoreSettings
from reelforge.storage import ArtifactStore, LocalStore, open_store
from reelforge.storage.errors import ArtifactMissing, StoreConflict, StoreError, UnsafeKey
from reelforge.storage.lineage import Manifest, StageRecord, StoredOutput, read_manifest, write_manifest


class FailingSource(io.RawIOBase):
    """A stream that returns ``fail_after`` bytes, then raises (a dying network mount, a killed producer)."""

    def __init__(self, fail_after: int) -> None:
        self.left = fail_after

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
        if self.left <= 0:
            raise OSError("source went away")
        n = min(len(buffer), self.left)
        buffer[:n] = b"x" * n
        self.left -= n
        return n


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def test_put_file_round_trip(store: LocalStore, tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    src = tmp_path / "in.png"
    src.write_bytes(data)
    ref = store.put_file(src, "characters/mina/v1/base/a.png", metadata={"seed": 7})
    assert ref.sha256 == hashlib.sha256(data).hexdigest() and ref.size == len(data)
    assert (ref.kind, ref.media_type) == ("image", "image/png")
    assert ref.uri == (store.root / ref.key).as_uri()
    assert store.url(ref.key) == str(store.root / ref.key) and Path(store.url(ref.key)).is_absolute()
    assert store.exists(ref.key) and not store.exists("characters/mina/v1/base/b.png")
    assert store.ref(ref.key) == ref  # metadata survives, read from the sidecar
    out = store.get_file(ref.key, tmp_path / "out" / "copy.png", verify=True)
    assert out.read_bytes() == data
    assert store.get_file(ref.key, tmp_path / "out" / "plain.png").read_bytes() == data
    assert sorted(p.name for p in out.parent.iterdir()) == ["copy.png", "plain.png"]  # no temp file left
    assert store.read_bytes(ref.key) == data
    assert isinstance(store, ArtifactStore)


def test_ref_without_sidecar_hashes_the_file(store: LocalStore) -> None:
    (store.root / "a").mkdir()
    (store.root / "a" / "b.flac").write_bytes(b"abc")
    ref = store.ref("a/b.flac")
    assert ref.sha256 == hashlib.sha256(b"abc").hexdigest() and ref.kind == "audio"


def test_same_content_is_idempotent_other_content_conflicts(store: LocalStore, tmp_path: Path) -> None:
    first = store.put_bytes(b"hello", "runs/r1/a.txt", metadata={"n": 1})
    again = store.put_bytes(b"hello", "runs/r1/a.txt", metadata={"n": 2})
    assert again == first  # the existing ref, metadata included
    with pytest.raises(StoreConflict, match=r"runs/r1/a.txt.*other content"):
        store.put_bytes(b"HELLO", "runs/r1/a.txt")
    assert store.read_bytes("runs/r1/a.txt") == b"hello"
    src = tmp_path / "x.txt"
    src.write_bytes(b"hello")
    assert store.put_file(src, "runs/r1/a.txt").sha256 == first.sha256
    assert [p for p in _files(store.root) if not p.startswith(".meta/")] == ["runs/r1/a.txt"]


def test_failed_copy_leaves_nothing(store: LocalStore) -> None:
    with pytest.raises(OSError, match="source went away"):
        store.put_stream(io.BufferedReader(FailingSource(5 * 1024 * 1024 + 3)), "runs/r1/video.mp4")
    assert not store.exists("runs/r1/video.mp4")
    assert _files(store.root) == []  # no temp file, no sidecar
    # and the key is still free for a good write
    assert store.put_bytes(b"ok", "runs/r1/video.mp4").size == 2


def test_reader_never_sees_a_partial_file(store: LocalStore) -> None:
    """While a 24 MB put is running, the key is either absent or complete."""
    data = os.urandom(24 * 1024 * 1024)
    seen: list[int] = []
    stop = threading.Event()
    path = store.root / "runs" / "r1" / "big.bin"

    def watch() -> None:
        while not stop.is_set():
            try:
                seen.append(path.stat().st_size)
            except FileNotFoundError:
                seen.append(-1)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        store.put_bytes(data, "runs/r1/big.bin")
    finally:
        stop.set()
        watcher.join()
    assert set(seen) <= {-1, len(data)}


def test_concurrent_writers_of_one_key_never_clobber(store: LocalStore) -> None:
    payloads = [bytes([i]) * (2 * 1024 * 1024) for i in range(6)]
    results: list[str] = []
    lock = threading.Lock()

    def put(data: bytes) -> None:
        try:
            store.put_bytes(data, "runs/r1/race.bin")
            outcome = "ok"
        except StoreConflict:
            outcome = "conflict"
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=put, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["conflict"] * 5 + ["ok"]
    stored = store.read_bytes("runs/r1/race.bin")
    assert stored in payloads
    assert store.ref("runs/r1/race.bin").sha256 == hashlib.sha256(stored).hexdigest()


def test_keys_escaping_the_root_are_refused(store: LocalStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (store.root / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafeKey, match="outside the store root"):
        store.put_bytes(b"x", "link/evil.txt")
    with pytest.raises(UnsafeKey, match="outside the store root"):
        store.put_bytes(b"x", "link/deeper/evil.txt")  # would create folders outside first
    (outside / "secret.txt").write_text("s")
    with pytest.raises(UnsafeKey):
        store.read_bytes("link/secret.txt")
    (store.root / "file-link.txt").symlink_to(outside / "secret.txt")
    with pytest.raises(UnsafeKey):
        store.ref("file-link.txt")
    with pytest.raises(UnsafeKey, match=r"'\.\.' segment"):
        store.put_bytes(b"x", "../escape.txt")
    with pytest.raises(UnsafeKey, match="absolute"):
        store.get_file("/etc/passwd", tmp_path / "p")
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]


def test_verified_get_detects_corruption(store: LocalStore, tmp_path: Path) -> None:
    ref = store.put_bytes(b"original", "runs/r1/a.bin")
    stored = store.root / ref.key
    stored.chmod(0o644)
    stored.write_bytes(b"tampered")  # same size
    with pytest.raises(StoreError, match="does not match its recorded sha256"):
        store.get_file(ref.key, tmp_path / "a.bin", verify=True)
    assert not (tmp_path / "a.bin").exists() and list(tmp_path.glob(".*")) == []
    assert store.get_file(ref.key, tmp_path / "a.bin").read_bytes() == b"tampered"  # unverified: a plain copy


def test_missing_keys(store: LocalStore, tmp_path: Path) -> None:
    with pytest.raises(ArtifactMissing, match=r"nope\.png"):
        store.ref("nope.png")
    with pytest.raises(ArtifactMissing):
        store.get_file("nope.png", tmp_path / "x.png")
    with pytest.raises(ArtifactMissing):
        store.read_bytes("a/nope.json")
    assert not (tmp_path / "x.png").exists()


def test_list_and_next_version(store: LocalStore) -> None:
    assert store.next_version("characters/mina/") == 1
    assert store.list("characters/") == []
    for key in [
        "characters/mina/v1/base/a.png",
        "characters/mina/v2/base/a.png",
        "characters/mina/v10/manifest.json",
        "characters/mina-b/v4/x.png",
        "productions/ad/scene-01/shot-01/take-01/c.mp4",
        "productions/ad/scene-01/shot-01/take-07/c.mp4",
    ]:
        store.put_bytes(key.encode(), key)
    (store.root / "characters" / "mina" / "vnext").mkdir()
    assert store.next_version("characters/mina") == 11
    assert store.next_version("characters/mina/") == 11
    assert store.next_version("characters/nobody") == 1
    assert store.next_version("productions/ad/scene-01/shot-01", marker="take-") == 8
    assert store.list("characters/mina/") == [
        "characters/mina/v1/base/a.png",
        "characters/mina/v10/manifest.json",
        "characters/mina/v2/base/a.png",
    ]
    assert store.list("characters/mina") == sorted([*store.list("characters/mina/"), "characters/mina-b/v4/x.png"])
    assert len(store.list("")) == 6  # no sidecars, no temp files


def test_manifest_round_trip_and_write_once(store: LocalStore) -> None:
    ref = store.put_bytes(b"png", "characters/mina/v1/base/a.png")
    stage = StageRecord(
        stage="portrait",
        version="t1",
        kind="gpu",
        job_id="mina-v1-base",
        cache_key="k",
        params={"seed": 3},
        outputs=[StoredOutput(**ref.model_dump())],
    )
    manifest = Manifest(subject="mina", kind="character", name="Mina", version=1, stages=[stage])
    key = "characters/mina/v1/manifest.json"
    written = write_manifest(store, manifest, key)
    assert written.kind == "json" and written.media_type == "application/json"
    assert read_manifest(store, key) == manifest
    assert write_manifest(store, manifest, key) == written  # idempotent
    with pytest.raises(StoreConflict):
        write_manifest(store, manifest.model_copy(update={"subject": "other"}), key)


def test_open_store_local(tmp_path: Path) -> None:
    store = open_store(StoreSettings(store=str(tmp_path / "media")))
    assert isinstance(store, LocalStore) and store.root == (tmp_path / "media").resolve()


def test_put_file_with_the_callers_digest(store: LocalStore, tmp_path: Path) -> None:
    src = tmp_path / "in.png"
    src.write_bytes(b"png bytes")
    sha = hashlib.sha256(b"png bytes").hexdigest()
    ref = store.put_file(src, "a/ok.png", sha256=sha)
    assert ref.sha256 == sha and store.read_bytes("a/ok.png") == b"png bytes"
    with pytest.raises(StoreError, match=r"not 0+ as the caller said"):
        store.put_file(src, "a/wrong.png", sha256="0" * 64)
    assert not store.exists("a/wrong.png")
    assert _files(store.root / "a") == ["ok.png"]
