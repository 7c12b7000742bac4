"""S3Store against moto in server mode on 127.0.0.1 (the real HTTP S3 protocol, multipart included)."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from reelforge.liveness import Holder
from reelforge.settings import StoreSettings
from reelforge.storage import open_store
from reelforge.storage.errors import (
    ArtifactMissing,
    StoreConflict,
    StoreError,
    StoreFull,
    StoreNotWritable,
    StoreUnavailable,
)
from reelforge.storage.lineage import Manifest, StageRecord, StoredOutput, read_manifest, write_manifest
from reelforge.storage.s3 import S3Store

MIB = 1024 * 1024


def _store(settings: StoreSettings, **client_options: Any) -> S3Store:
    store = open_store(settings) if not client_options else S3Store.from_settings(settings, **client_options)
    assert isinstance(store, S3Store)
    return store


def _sparse_file(path: Path, size: int) -> str:
    """A file of ``size`` bytes, mostly holes, with random blocks at a few offsets; returns its sha256."""
    with open(path, "wb") as out:
        out.truncate(size)
        for offset in range(0, size, 17 * MIB):
            out.seek(offset)
            out.write(os.urandom(4096))
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        while chunk := source.read(MIB):
            digest.update(chunk)
    return digest.hexdigest()


def _no_pending_uploads(client: Any, bucket: str) -> bool:
    return not client.list_multipart_uploads(Bucket=bucket).get("Uploads")


def _bucket(settings: StoreSettings) -> str:
    return settings.store[len("s3://") :].split("/", 1)[0]


def test_put_get_round_trip(s3_settings: StoreSettings, s3_client: Any, tmp_path: Path) -> None:
    store = _store(s3_settings)
    data = os.urandom(2 * MIB + 5)
    src = tmp_path / "in.webm"
    src.write_bytes(data)
    ref = store.put_file(src, "characters/mina/v1/base/clip.webm", metadata={"seed": 7, "note": "ünï"})
    assert ref.sha256 == hashlib.sha256(data).hexdigest() and ref.size == len(data)
    assert (ref.kind, ref.media_type) == ("video", "video/webm")
    assert ref.uri == f"s3://{_bucket(s3_settings)}/characters/mina/v1/base/clip.webm"
    head = s3_client.head_object(Bucket=_bucket(s3_settings), Key=ref.key)
    assert head["Metadata"]["sha256"] == ref.sha256 and head["Metadata"]["kind"] == "video"
    assert head["ContentType"] == "video/webm"
    assert store.ref(ref.key) == ref
    out = store.get_file(ref.key, tmp_path / "dl" / "clip.webm", verify=True)
    assert hashlib.sha256(out.read_bytes()).hexdigest() == ref.sha256
    plain = store.get_file(ref.key, tmp_path / "dl" / "plain.webm")
    assert plain.read_bytes() == data
    assert sorted(p.name for p in out.parent.iterdir()) == ["clip.webm", "plain.webm"]
    assert store.exists(ref.key) and not store.exists("characters/mina/v1/base/other.webm")
    small = store.put_json({"b": 1, "a": [1, 2]}, "runs/r1/params.json")
    assert small.kind == "json" and json.loads(store.read_bytes(small.key)) == {"a": [1, 2], "b": 1}


def test_multipart_upload_streams_from_disk(s3_settings: StoreSettings, s3_client: Any, tmp_path: Path) -> None:
    """A 105 MiB file in 16 MiB parts; peak Python memory of the uploading process stays far below the size."""
    src = tmp_path / "big.safetensors"
    size = 105 * MIB
    sha = _sparse_file(src, size)
    settings = s3_settings.model_copy(update={"multipart_threshold_mb": 16})
    # The upload runs in a child process so that tracemalloc sees only the client (moto, in this process,
    # keeps every byte it receives in memory).
    script = textwrap.dedent(
        """
        import json, sys, time, tracemalloc
        from pathlib import Path
        from reelforge.settings import StoreSettings
        from reelforge.storage.s3 import S3Store
        settings = StoreSettings.model_validate_json(sys.argv[1])
        store = S3Store.from_settings(settings)
        tracemalloc.start()
        started = time.perf_counter()
        ref = store.put_file(Path(sys.argv[2]), "loras/mina/v1/mina.safetensors")
        seconds = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        print(json.dumps({"peak": peak, "sha256": ref.sha256, "size": ref.size, "kind": ref.kind, "s": seconds}))
        """
    )
    payload = settings.model_dump(mode="json")
    payload["s3_access_key_id"] = settings.s3_access_key_id.get_secret_value()  # type: ignore[union-attr]
    payload["s3_secret_access_key"] = settings.s3_secret_access_key.get_secret_value()  # type: ignore[union-attr]
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(payload), str(src)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["sha256"] == sha and result["size"] == size and result["kind"] == "lora"
    print(f"multipart upload: {result['s']:.2f} s, peak traced {result['peak'] / MIB:.2f} MiB")
    assert result["peak"] < 32 * MIB, f"peak traced memory {result['peak'] / MIB:.1f} MiB for a {size // MIB} MiB file"
    head = s3_client.head_object(Bucket=_bucket(s3_settings), Key="loras/mina/v1/mina.safetensors")
    assert "-" in head["ETag"] and head["ETag"].strip('"').endswith("-7")  # 105 MiB / 16 MiB parts
    assert head["ContentLength"] == size and head["Metadata"]["sha256"] == sha
    # idempotent re-run: HEAD first (above the threshold), no second upload
    store = _store(settings)
    started = time.perf_counter()
    assert store.put_file(src, "loras/mina/v1/mina.safetensors").sha256 == sha
    assert _no_pending_uploads(s3_client, _bucket(s3_settings))
    assert time.perf_counter() - started < result["s"]


def test_failed_multipart_upload_leaves_nothing(s3_settings: StoreSettings, s3_client: Any, tmp_path: Path) -> None:
    src = tmp_path / "video.mp4"
    src.write_bytes(os.urandom(24 * MIB))
    store = _store(s3_settings.model_copy(update={"multipart_threshold_mb": 5}))
    calls: list[int] = []

    def fail_third_part(params: dict[str, Any], **_: Any) -> None:
        calls.append(params["PartNumber"])
        if params["PartNumber"] == 3:  # the connection dies half way
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1")

    store.client.meta.events.register("before-parameter-build.s3.UploadPart", fail_third_part)
    with pytest.raises(StoreUnavailable, match=r"unreachable during upload to s3://.*/runs/r1/video.mp4"):
        store.put_file(src, "runs/r1/video.mp4")
    assert 3 in calls
    bucket = _bucket(s3_settings)
    assert s3_client.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    assert _no_pending_uploads(s3_client, bucket)
    assert not store.exists("runs/r1/video.mp4")
    store.client.meta.events.unregister("before-parameter-build.s3.UploadPart", fail_third_part)
    assert store.put_file(src, "runs/r1/video.mp4").size == 24 * MIB  # the key is still free


def test_conflict_and_idempotency(s3_settings: StoreSettings, s3_client: Any, tmp_path: Path) -> None:
    store = _store(s3_settings)
    first = store.put_bytes(b"hello", "runs/r1/a.txt", metadata={"n": 1})
    assert store.put_bytes(b"hello", "runs/r1/a.txt", metadata={"n": 2}) == first
    with pytest.raises(StoreConflict, match=r"s3://.*/runs/r1/a.txt already exists with other content"):
        store.put_bytes(b"HELLO", "runs/r1/a.txt")
    src = tmp_path / "a.txt"
    src.write_bytes(b"other")
    with pytest.raises(StoreConflict):
        store.put_file(src, "runs/r1/a.txt")
    assert store.read_bytes("runs/r1/a.txt") == b"hello"
    # Without conditional writes every put looks first (HEAD) and finds the same answers.
    careful = S3Store(first.uri.split("/")[2], client=store.client, conditional_writes=False)
    assert careful.put_bytes(b"hello", "runs/r1/a.txt") == first
    with pytest.raises(StoreConflict):
        careful.put_file(src, "runs/r1/a.txt")


def test_object_appearing_during_upload_is_not_overwritten(
    s3_settings: StoreSettings, s3_client: Any, tmp_path: Path
) -> None:
    """A concurrent writer completes first: If-None-Match on CompleteMultipartUpload refuses ours."""
    bucket = _bucket(s3_settings)
    store = _store(s3_settings.model_copy(update={"multipart_threshold_mb": 5}))
    src = tmp_path / "take.mp4"
    src.write_bytes(os.urandom(11 * MIB))

    def sneak_in(params: dict[str, Any], **_: Any) -> None:
        s3_client.put_object(Bucket=bucket, Key=params["Key"], Body=b"the other writer")

    store.client.meta.events.register("before-parameter-build.s3.CompleteMultipartUpload", sneak_in)
    with pytest.raises(StoreConflict):
        store.put_file(src, "productions/ad/scene-01/shot-01/take-01/take.mp4")
    body = s3_client.get_object(Bucket=bucket, Key="productions/ad/scene-01/shot-01/take-01/take.mp4")["Body"]
    assert body.read() == b"the other writer"
    assert _no_pending_uploads(s3_client, bucket)
    # the same race on a small (single PUT) file
    s3_client.put_object(Bucket=bucket, Key="runs/r1/small.txt", Body=b"theirs")
    with pytest.raises(StoreConflict):
        store.put_bytes(b"ours", "runs/r1/small.txt")


def test_source_changed_during_upload_is_refused(s3_settings: StoreSettings, tmp_path: Path) -> None:
    store = _store(s3_settings)
    src = tmp_path / "a.png"
    src.write_bytes(b"version one")

    def edit(**_: Any) -> None:
        with open(src, "ab") as handle:
            handle.write(b" and more")

    store.client.meta.events.register("before-call.s3.PutObject", edit)
    with pytest.raises(StoreError, match="changed while it was uploaded"):
        store.put_file(src, "runs/r1/a.png")
    store.client.meta.events.unregister("before-call.s3.PutObject", edit)
    assert not store.exists("runs/r1/a.png")


def test_presigned_url_serves_the_bytes(s3_settings: StoreSettings) -> None:
    store = _store(s3_settings)
    data = os.urandom(300_000)
    ref = store.put_bytes(data, "characters/mina/v1/base/a.png")
    url = store.url(ref.key)
    assert url.startswith(s3_settings.s3_endpoint_url or "") and "X-Amz-Signature=" in url
    assert f"X-Amz-Expires={s3_settings.presign_expiry_s}" in url
    assert "X-Amz-Expires=60" in store.url(ref.key, expires_s=60)
    response = httpx.get(url)
    assert response.status_code == 200 and response.content == data
    assert response.headers["content-type"] == "image/png"


def test_prefix_list_and_next_version(make_s3_settings: Any, s3_client: Any) -> None:
    settings = make_s3_settings("team/a")
    store = _store(settings)
    assert store.list("characters/") == [] and store.next_version("characters/mina") == 1
    keys = [
        "characters/mina/v1/base/a.png",
        "characters/mina/v2/base/a.png",
        "characters/mina/v10/manifest.json",
        "characters/mina-b/v4/x.png",
        "productions/ad/scene-01/shot-01/take-03/c.mp4",
    ]
    for key in keys:
        store.put_bytes(key.encode(), key)
    listed = s3_client.list_objects_v2(Bucket=_bucket(settings))["Contents"]
    assert sorted(item["Key"] for item in listed) == sorted(f"team/a/{k}" for k in keys)
    assert store.list("characters/mina/") == sorted(keys[:3])
    assert store.list("") == sorted(keys)
    assert store.next_version("characters/mina") == 11
    assert store.next_version("characters/mina/") == 11
    assert store.next_version("productions/ad/scene-01/shot-01", marker="take-") == 4
    assert (
        store.ref("characters/mina/v1/base/a.png").uri
        == f"s3://{_bucket(settings)}/team/a/characters/mina/v1/base/a.png"
    )


def test_missing_and_corrupt_objects(s3_settings: StoreSettings, s3_client: Any, tmp_path: Path) -> None:
    store = _store(s3_settings)
    with pytest.raises(ArtifactMissing, match=r"nope\.png"):
        store.ref("nope.png")
    with pytest.raises(ArtifactMissing, match=r"nope\.png"):
        store.read_bytes("nope.png")
    with pytest.raises(ArtifactMissing):
        store.get_file("nope.png", tmp_path / "x.png")
    with pytest.raises(ArtifactMissing):
        store.get_file("nope.png", tmp_path / "x.png", verify=True)
    bucket = _bucket(s3_settings)
    s3_client.put_object(Bucket=bucket, Key="bad.png", Body=b"abc", Metadata={"sha256": "0" * 64})
    with pytest.raises(StoreError, match="does not match its sha256"):
        store.get_file("bad.png", tmp_path / "x.png", verify=True)
    assert list(tmp_path.iterdir()) == []
    # an object written by another tool (no sha256 metadata) is hashed on demand
    s3_client.put_object(Bucket=bucket, Key="foreign.txt", Body=b"abc")
    assert store.ref("foreign.txt").sha256 == hashlib.sha256(b"abc").hexdigest()
    missing_bucket = S3Store("reelforge-no-such-bucket", client=store.client)
    with pytest.raises(StoreError, match="bucket does not exist"):
        missing_bucket.put_bytes(b"x", "a.txt")


def test_manifest_on_s3(s3_settings: StoreSettings) -> None:
    store = _store(s3_settings)
    ref = store.put_bytes(b"img", "characters/mina/v1/base/a.png")
    stage = StageRecord(
        stage="portrait",
        version="t1",
        kind="gpu",
        job_id="mina-v1-base",
        cache_key="k",
        params={"seed": 1},
        outputs=[StoredOutput(**ref.model_dump())],
    )
    manifest = Manifest(subject="mina", kind="character", name="Mina", version=1, stages=[stage])
    write_manifest(store, manifest, "characters/mina/v1/manifest.json")
    assert read_manifest(store, "characters/mina/v1/manifest.json") == manifest


def test_endpoint_down_is_unavailable(s3_settings: StoreSettings, tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = s3_settings.model_copy(update={"s3_endpoint_url": f"http://127.0.0.1:{port}"})
    store = _store(settings, max_attempts=1, connect_timeout=1.0)
    started = time.perf_counter()
    with pytest.raises(StoreUnavailable, match=r"unreachable.*s3://") as caught:
        store.put_bytes(b"x", "runs/r1/a.txt")
    assert "reelforge-test-secret" not in str(caught.value)
    with pytest.raises(StoreUnavailable):
        store.exists("runs/r1/a.txt")
    src = tmp_path / "a.bin"
    src.write_bytes(b"x" * 1000)
    with pytest.raises(StoreUnavailable):
        store.put_file(src, "runs/r1/a.bin")
    with pytest.raises(StoreUnavailable):
        store.get_file("runs/r1/a.bin", tmp_path / "b.bin", verify=False)
    with pytest.raises(StoreUnavailable):
        store.list("runs/")
    assert time.perf_counter() - started < 10
    assert "secret" not in repr(store)


def test_hashing_sink_follows_out_of_order_writes(tmp_path: Path) -> None:
    from reelforge.storage.s3 import _HashingSink

    data = os.urandom(3 * MIB + 123)
    chunks = [(offset, data[offset : offset + 256 * 1024]) for offset in range(0, len(data), 256 * 1024)]
    order = chunks[4:8] + chunks[:2] + chunks[10:] + chunks[2:4] + chunks[8:10] + chunks[:1]  # and a rewrite
    with open(tmp_path / "out", "w+b", buffering=0) as raw:  # readable: the sink reads back
        sink = _HashingSink(raw)  # type: ignore[arg-type]
        for offset, chunk in order:
            sink.seek(offset)
            sink.write(chunk)
        assert sink.result() == (hashlib.sha256(data).hexdigest(), len(data))
    assert (tmp_path / "out").read_bytes() == data


def test_concurrent_writers_of_one_key(s3_settings: StoreSettings, tmp_path: Path) -> None:
    """Four writers all pass the HEAD check and upload; the conditional completes let exactly one win.

    moto checks If-None-Match and then completes without a lock, so truly simultaneous completes can all
    succeed there (AWS S3 decides atomically); the completes are therefore sent one at a time here, after all
    four writers have uploaded their parts.
    """
    import threading
    from concurrent.futures import ThreadPoolExecutor

    store = _store(s3_settings.model_copy(update={"multipart_threshold_mb": 5}))
    sources = []
    for i in range(4):
        src = tmp_path / f"take-{i}.mp4"
        src.write_bytes(bytes([i]) * (6 * MIB))  # multipart: 2 parts each
        sources.append(src)
    all_uploaded = threading.Barrier(4, timeout=30)
    one_at_a_time = threading.Lock()

    def wait_for_all(**_: Any) -> None:
        all_uploaded.wait()

    def take_turn(**_: Any) -> None:  # handlers return None: a value from before-call would be the response
        one_at_a_time.acquire()

    def end_turn(**_: Any) -> None:
        one_at_a_time.release()

    events = store.client.meta.events
    events.register("before-parameter-build.s3.CompleteMultipartUpload", wait_for_all)
    events.register("before-call.s3.CompleteMultipartUpload", take_turn)
    events.register("after-call.s3.CompleteMultipartUpload", end_turn)
    events.register("after-call-error.s3.CompleteMultipartUpload", end_turn)

    def put(src: Path) -> str:
        try:
            store.put_file(src, "runs/r1/take.mp4")
            return "ok"
        except StoreConflict:
            return "conflict"

    with ThreadPoolExecutor(4) as pool:
        outcomes = sorted(pool.map(put, sources))
    assert outcomes == ["conflict", "conflict", "conflict", "ok"]
    stored = store.ref("runs/r1/take.mp4")
    assert stored.sha256 in {hashlib.sha256(s.read_bytes()).hexdigest() for s in sources}
    assert _no_pending_uploads(store.client, _bucket(s3_settings))


def test_put_file_with_the_callers_digest_skips_the_hash_pass(
    s3_settings: StoreSettings, s3_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import reelforge.storage.s3 as s3_module

    store = _store(s3_settings)
    data = os.urandom(MIB + 3)
    src = tmp_path / "clip.mp4"
    src.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()

    def no_second_pass(path: Path) -> tuple[str, int]:
        raise AssertionError("the file was hashed again although its digest was given")

    monkeypatch.setattr(s3_module, "sha256_file", no_second_pass)
    ref = store.put_file(src, "takes/clip.mp4", sha256=sha)
    assert ref.sha256 == sha and ref.size == len(data)
    head = s3_client.head_object(Bucket=_bucket(s3_settings), Key=store._full("takes/clip.mp4"))
    assert head["Metadata"]["sha256"] == sha
    with pytest.raises(ValueError, match="64 lower-case hex"):
        store.put_file(src, "takes/bad.mp4", sha256="xyz")


def _client_error(status: int, code: str, operation: str = "PutObject") -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "refused"}, "ResponseMetadata": {"HTTPStatusCode": status}}, operation
    )


@pytest.fixture
def atomic_moto(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto checks If-None-Match and then stores, unlocked; AWS S3 decides atomically. Make moto do the same."""
    from moto.s3.responses import S3Response

    lock = threading.Lock()
    real = S3Response.put_object

    def put_object(self: Any) -> Any:
        with lock:
            return real(self)

    monkeypatch.setattr(S3Response, "put_object", put_object)


def test_errors_carry_their_context_on_s3(make_s3_settings: Any) -> None:
    settings = make_s3_settings("studio/v")
    store = _store(settings)
    bucket = _bucket(settings)
    with pytest.raises(ArtifactMissing) as caught:
        store.ref("runs/nope.png")
    err = caught.value
    assert (err.store, err.bucket, err.key, err.operation) == (
        f"s3://{bucket}/studio/v",
        bucket,
        "runs/nope.png",
        "ref",
    )
    assert f"store s3://{bucket}/studio/v" in str(err) and "operation ref" in str(err)
    store.put_bytes(b"a", "runs/a.txt")
    with pytest.raises(StoreConflict) as conflict:
        store.put_bytes(b"b", "runs/a.txt")
    assert (conflict.value.bucket, conflict.value.key, conflict.value.operation) == (bucket, "runs/a.txt", "put")


def test_map_error_classes() -> None:
    from reelforge.storage.s3 import map_error

    context = {"store": "s3://b/p", "bucket": "b", "key": "k"}
    denied_put = map_error(_client_error(403, "AccessDenied"), "PUT s3://b/p/k", operation="put", **context)
    assert type(denied_put) is StoreNotWritable and denied_put.key == "k" and "refused" not in str(denied_put)
    denied_get = map_error(_client_error(403, "AccessDenied", "GetObject"), "GET", operation="read", **context)
    assert type(denied_get) is StoreError
    assert type(map_error(_client_error(507, "XMinioStorageFull"), "PUT", operation="put", **context)) is StoreFull
    assert type(map_error(_client_error(503, "SlowDown"), "PUT", operation="put", **context)) is StoreUnavailable


def test_check_writable_on_s3(s3_settings: StoreSettings, s3_client: Any, tmp_path: Path) -> None:
    store = _store(s3_settings)
    store.check_writable()
    bucket = _bucket(s3_settings)
    assert s3_client.list_objects_v2(Bucket=bucket).get("KeyCount") == 0  # the probe was deleted

    def denied(**_: Any) -> None:
        raise _client_error(403, "AccessDenied")

    store.client.meta.events.register("before-parameter-build.s3.PutObject", denied)
    with pytest.raises(StoreNotWritable, match="access denied") as caught:
        store.check_writable()
    assert (caught.value.operation, caught.value.bucket) == ("check_writable", bucket)
    with pytest.raises(StoreNotWritable):
        store.put_bytes(b"x", "runs/a.txt")
    store.client.meta.events.unregister("before-parameter-build.s3.PutObject", denied)

    def no_delete(**_: Any) -> None:
        raise _client_error(403, "AccessDenied", "DeleteObject")

    store.client.meta.events.register("before-parameter-build.s3.DeleteObject", no_delete)
    store.check_writable()  # a write-once bucket that denies deletes is still writable
    assert s3_client.list_objects_v2(Bucket=bucket)["KeyCount"] == 1 and store.list("") == []  # hidden probe
    with pytest.raises(StoreNotWritable, match="bucket does not exist"):
        S3Store("reelforge-no-such-bucket", client=store.client).check_writable()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    down = _store(s3_settings.model_copy(update={"s3_endpoint_url": f"http://127.0.0.1:{port}"}), max_attempts=1)
    with pytest.raises(StoreUnavailable):
        down.check_writable()


def test_put_new_on_s3(s3_settings: StoreSettings) -> None:
    store = _store(s3_settings)
    store.put_new(b"claim", "locks/a.json")
    with pytest.raises(StoreConflict, match="already exists") as caught:
        store.put_new(b"claim", "locks/a.json")
    assert caught.value.key == "locks/a.json"
    assert store.put_bytes(b"claim", "locks/a.json").size == 5


def test_threads_reserving_on_s3_get_distinct_numbers(s3_settings: StoreSettings, atomic_moto: None) -> None:
    from concurrent.futures import ThreadPoolExecutor

    prefix = "characters/mina-park/"
    _store(s3_settings).put_bytes(b"old", f"{prefix}v1/base/a.png")  # older code: counts, never reused
    stores = [_store(s3_settings) for _ in range(6)]  # one client each, like separate processes
    barrier = threading.Barrier(len(stores))

    def reserve(store: S3Store) -> list[int]:
        holder = Holder.current(label=f"thread {threading.get_ident()}")
        barrier.wait()
        return [store.reserve_version(prefix, holder) for _ in range(3)]

    with ThreadPoolExecutor(len(stores)) as pool:
        numbers = sorted(n for batch in pool.map(reserve, stores) for n in batch)
    assert numbers == list(range(2, 2 + 3 * len(stores)))
    assert stores[0].next_version(prefix) == 2 + 3 * len(stores)
    assert {v.state for v in stores[0].versions(prefix)[1:]} == {"reserved"}  # this process is alive


def test_versions_on_s3(s3_settings: StoreSettings, s3_client: Any) -> None:
    store = _store(s3_settings)
    prefix = "characters/kim/"
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    dead = Holder.current().model_copy(update={"pid": child.pid, "pid_started": None})
    assert store.reserve_version(prefix, Holder.current()) == 1
    store.put_json({"done": True}, f"{prefix}v1/manifest.json")
    assert store.reserve_version(prefix, Holder.current()) == 2
    assert store.reserve_version(prefix, dead) == 3
    assert [(v.number, v.state) for v in store.versions(prefix)] == [(1, "complete"), (2, "reserved"), (3, "abandoned")]
    assert store.mark_abandoned(prefix) == [3] and store.mark_abandoned(prefix) == []
    assert store.exists(f"{prefix}v3/abandoned.json") and store.exists(f"{prefix}v3/reservation.json")
    assert store.reserve_version(prefix, Holder.current()) == 4
