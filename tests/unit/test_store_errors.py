"""LocalStore failures: full disk, read-only, a file where a folder should be, refused permissions.

Real conditions where this machine allows them (a file in place of the root; a tmpfs of a few KiB and a
read-only mount inside ``unshare -rm``, which needs no privileges where user namespaces are enabled; chmod
when not root), else ``os.write`` / ``os.fsync`` monkeypatched to fail with the errno the kernel would give.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from reelforge.storage import LocalStore
from reelforge.storage.errors import ArtifactMissing, StoreError, StoreFull, StoreNotWritable


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def test_root_that_is_a_file_is_not_writable(tmp_path: Path) -> None:
    (tmp_path / "store").write_text("not a folder")
    with pytest.raises(StoreNotWritable) as caught:
        LocalStore(tmp_path / "store")
    err = caught.value
    assert (err.store, err.key, err.operation) == (str(tmp_path / "store"), None, "open")
    assert isinstance(err.__cause__, FileExistsError)
    assert "is a file" in str(err) and str(tmp_path / "store") in str(err)
    (tmp_path / "parent").write_text("x")
    with pytest.raises(StoreNotWritable, match="is a file") as caught:
        LocalStore(tmp_path / "parent" / "store")  # ENOTDIR: a parent is a file
    assert isinstance(caught.value.__cause__, NotADirectoryError)


def test_root_replaced_by_a_file_after_opening(store: LocalStore) -> None:
    shutil.rmtree(store.root)
    store.root.write_text("oops")
    with pytest.raises(StoreNotWritable) as caught:
        store.put_bytes(b"x", "runs/r1/a.txt")
    err = caught.value
    assert (err.store, err.key, err.operation, err.bucket) == (str(store.root), "runs/r1/a.txt", "put", None)
    assert "operation put" in str(err) and "'runs/r1/a.txt'" in str(err) and str(store.root) in str(err)
    with pytest.raises(StoreNotWritable, match="missing or not a folder"):
        store.check_writable()
    with pytest.raises(ArtifactMissing):  # a read: no such key
        store.read_bytes("runs/r1/a.txt")


def test_a_key_below_a_file_is_not_writable(store: LocalStore) -> None:
    store.put_bytes(b"file", "a/b")
    with pytest.raises(StoreNotWritable, match="a folder on the way to the key is a file") as caught:
        store.put_bytes(b"x", "a/b/c.txt")
    assert caught.value.key == "a/b/c.txt"
    assert _files(store.root / "a") == ["b"]


@pytest.mark.parametrize("failing", ["write", "fsync"])
@pytest.mark.parametrize(("code", "expected"), [(errno.ENOSPC, StoreFull), (errno.EDQUOT, StoreFull)])
def test_disk_full_leaves_no_temp_file_and_keeps_what_was_stored(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch, failing: str, code: int, expected: type[StoreError]
) -> None:
    kept = store.put_bytes(b"earlier take", "runs/r1/take.txt")
    real = getattr(os, failing)
    calls = 0
    fail_from = 2 if failing == "write" else 1  # write: the first chunk goes through, then the disk is full

    def full(fd: int, *args: object) -> object:
        nonlocal calls
        calls += 1
        if calls >= fail_from:
            raise OSError(code, os.strerror(code))
        return real(fd, *args)

    monkeypatch.setattr(os, failing, full)
    with pytest.raises(expected) as caught:
        store.put_bytes(os.urandom(3 * 1024 * 1024), "runs/r1/big.bin")
    monkeypatch.undo()
    err = caught.value
    assert isinstance(err, StoreNotWritable)  # StoreFull is a StoreNotWritable
    assert (err.key, err.operation) == ("runs/r1/big.bin", "put")
    assert isinstance(err.__cause__, OSError) and err.__cause__.errno == code
    assert "free space" in str(err)
    assert not store.exists("runs/r1/big.bin")
    assert [p for p in _files(store.root) if not p.startswith(".meta/")] == ["runs/r1/take.txt"]  # no temp file
    assert store.read_bytes("runs/r1/take.txt") == b"earlier take" and store.ref(kept.key) == kept
    assert store.put_bytes(b"ok", "runs/r1/big.bin").size == 2  # the key is still free


def test_read_only_file_system(store: LocalStore, monkeypatch: pytest.MonkeyPatch) -> None:
    def read_only(*_: object, **__: object) -> object:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(store.root / "runs"))

    monkeypatch.setattr("tempfile.mkstemp", read_only)
    with pytest.raises(StoreNotWritable, match="read-only file system") as caught:
        store.put_bytes(b"x", "runs/r1/a.txt")
    assert caught.value.path == str(store.root / "runs")
    with pytest.raises(StoreNotWritable, match="read-only"):
        store.check_writable()


_PERMISSION_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from reelforge.storage import LocalStore
    from reelforge.storage.errors import StoreNotWritable
    store = LocalStore(sys.argv[1])
    out = {"read": store.read_bytes("runs/r1/a.txt").decode()}
    for name, call in [("put", lambda: store.put_bytes(b"y", "other/b.txt")), ("probe", store.check_writable)]:
        try:
            call()
        except StoreNotWritable as exc:
            out[name] = [type(exc).__name__, exc.operation, exc.__cause__.errno, "permission denied" in str(exc)]
    print(json.dumps(out))
    """
)


def test_permission_denied_for_real(store: LocalStore) -> None:
    """chmod 500 on the root; as root (which writes through chmod) the checks run without capabilities."""
    store.put_bytes(b"x", "runs/r1/a.txt")
    command = [sys.executable, "-c", _PERMISSION_SCRIPT, str(store.root)]
    if os.geteuid() == 0:
        # A user namespace mapping us to our own uid: the owner's mode bits apply, CAP_DAC_OVERRIDE does not.
        if shutil.which("unshare") is None or subprocess.run(["unshare", "-U", "true"]).returncode != 0:
            pytest.skip("root, and no unprivileged user namespaces to drop the capabilities")
        command = ["unshare", "-U", "--map-user=1000", *command]
    store.root.chmod(0o500)
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    finally:
        store.root.chmod(0o700)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["read"] == "x"  # still readable
    assert out["put"] == ["StoreNotWritable", "put", errno.EACCES, True]
    assert out["probe"] == ["StoreNotWritable", "check_writable", errno.EACCES, True]


def test_permission_denied_on_a_read_is_not_called_unwritable(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.put_bytes(b"x", "runs/r1/a.txt")

    def refused(self: Path) -> bytes:
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", refused)
    with pytest.raises(StoreError, match="Permission denied") as caught:
        store.read_bytes("runs/r1/a.txt")
    assert type(caught.value) is StoreError and caught.value.operation == "read"


def test_full_destination_in_get_file(store: LocalStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store.put_bytes(b"abc", "runs/r1/a.txt")

    def full(src: object, dst: str) -> None:
        Path(dst).write_bytes(b"a")  # half written
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), dst)

    monkeypatch.setattr(shutil, "copyfile", full)
    with pytest.raises(StoreFull) as caught:
        store.get_file("runs/r1/a.txt", tmp_path / "out" / "a.txt")
    assert caught.value.operation == "get" and str(tmp_path / "out") in str(caught.value.path)
    assert list((tmp_path / "out").iterdir()) == []


def test_check_writable(store: LocalStore, monkeypatch: pytest.MonkeyPatch) -> None:
    store.check_writable()
    assert list(store.root.iterdir()) == []  # the probe is gone
    monkeypatch.setattr(os, "write", lambda fd, data: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space")))
    with pytest.raises(StoreFull) as caught:
        store.check_writable()
    assert caught.value.operation == "check_writable" and caught.value.store == str(store.root)
    assert list(store.root.iterdir()) == []


def test_errors_pickle_with_their_context(store: LocalStore) -> None:
    with pytest.raises(ArtifactMissing) as caught:
        store.ref("runs/nope.png")
    again = pickle.loads(pickle.dumps(caught.value))
    assert type(again) is ArtifactMissing and str(again) == str(caught.value)
    assert (again.store, again.key, again.operation) == (str(store.root), "runs/nope.png", "ref")


_REAL_FS_SCRIPT = textwrap.dedent(
    """
    import json, os, subprocess, sys
    from reelforge.storage import LocalStore
    from reelforge.storage.errors import StoreFull, StoreNotWritable
    mount = sys.argv[1]
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", mount], check=True)
    store = LocalStore(os.path.join(mount, "store"))
    kept = store.put_bytes(b"first take", "runs/r1/a.txt")
    out = {}
    try:
        store.put_bytes(os.urandom(512 * 1024), "runs/r1/big.bin")
    except StoreFull as exc:
        out["full"] = [exc.operation, exc.key, exc.__cause__.errno]
    out["left"] = sorted(str(p.relative_to(store.root)) for p in store.root.rglob("*") if p.is_file())
    out["kept"] = store.read_bytes("runs/r1/a.txt").decode()
    subprocess.run(["mount", "-o", "remount,ro", mount], check=True)
    try:
        store.put_bytes(b"x", "runs/r2/b.txt")
    except StoreNotWritable as exc:
        out["ro"] = [type(exc).__name__, exc.__cause__.errno]
    try:
        store.check_writable()
    except StoreNotWritable as exc:
        out["probe"] = type(exc).__name__
    print(json.dumps(out))
    """
)


def test_full_and_read_only_file_systems_for_real(tmp_path: Path) -> None:
    """A 64 KiB tmpfs and then a read-only remount, in a private user + mount namespace."""
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        pytest.skip("unshare/mount not available")
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"no unprivileged user namespaces here: {probe.stderr.decode().strip()}")
    mount = tmp_path / "mnt"
    mount.mkdir()
    result = subprocess.run(
        ["unshare", "-rm", sys.executable, "-c", _REAL_FS_SCRIPT, str(mount)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["full"] == ["put", "runs/r1/big.bin", errno.ENOSPC]
    assert out["left"] == [".meta/runs/r1/a.txt.json", "runs/r1/a.txt"]  # no temp file, nothing half-written
    assert out["kept"] == "first take"
    assert out["ro"] == ["StoreNotWritable", errno.EROFS]
    assert out["probe"] == "StoreNotWritable"
