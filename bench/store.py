"""Benchmark: artifact store throughput against the plain copies underneath it.

Run: ``.venv/bin/python bench/store.py [--rounds 3] [--big 4x64] [--small 50x1] [--threshold-mb 16] [--strict]``

(a) S3: ``S3Store.put_file`` / ``get_file`` vs raw boto3 ``upload_file`` / ``download_file`` on one loopback
    moto server (ThreadedMotoServer on 127.0.0.1, in this process), the same client, the same TransferConfig,
    the same files (random bytes). The store adds: a sha256 pass over the file, a HEAD for files at or above the
    multipart threshold, ``If-None-Match: *`` on the upload, a stat check after it; ``get_file`` does what
    ``download_file`` does (``verify=True``: plus a HEAD and the sha256 of the result, computed as parts
    arrive). Reported: MB/s per side and the ratio store / raw (target >= 0.9), and the put against
    boto3 + the same sha256 pass, which shows what the store costs beyond the hash it must compute.
(b) Local: ``LocalStore.put_file`` / ``get_file`` vs ``shutil.copyfile`` of the same files on the same disk.
    The store adds the sha256 while copying, an fsync, a hard link and a metadata sidecar.

The sides alternate file by file (raw, store, raw + the store's sha256 pass; then the gets) so that load
drifting on a shared machine hits all alike (whole sets one after the other gave ratios from 0.55 to 1.1);
every round uses new keys (the store is write-once) and the objects are deleted between rounds (moto keeps
them in memory). Exit status 0, or 1 with ``--strict`` when an S3 ratio is under 0.9.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from reelforge.hashing import sha256_file
from reelforge.settings import StoreSettings
from reelforge.storage.local import LocalStore
from reelforge.storage.s3 import S3Store

MB = 1_000_000
MIB = 1024 * 1024


def parse_set(spec: str) -> tuple[int, int]:
    count, _, size = spec.partition("x")
    return int(count), int(size)


def make_files(folder: Path, name: str, count: int, size_mib: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    block = os.urandom(MIB)
    for i in range(count):
        path = folder / f"{name}-{i:03d}.bin"
        with open(path, "wb") as out:
            out.write(os.urandom(64))  # every file differs
            for _ in range(size_mib):
                out.write(block)
        files.append(path)
    return files


def timed(action: Callable[[], Any]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def rate(total_bytes: int, seconds: float) -> float:
    return total_bytes / MB / seconds


class Results:
    def __init__(self) -> None:
        self.rows: dict[str, dict[str, list[float]]] = {}

    def add(self, row: str, side: str, mb_s: float) -> None:
        self.rows.setdefault(row, {}).setdefault(side, []).append(mb_s)

    def report(self, sides: tuple[str, str], min_ratio: float | None) -> list[str]:
        failures = []
        base, ours = sides
        print(f"  {'':28s} {base + ' MB/s':>16s} {ours + ' MB/s':>16s} {'ratio':>7s}")
        for row, by_side in self.rows.items():
            if base not in by_side or ours not in by_side:
                continue
            a, b = statistics.median(by_side[base]), statistics.median(by_side[ours])
            ratio = b / a
            flag = ""
            if min_ratio is not None and ratio < min_ratio:
                flag = f"  < {min_ratio}"
                failures.append(row)
            print(f"  {row:28s} {a:16.1f} {b:16.1f} {ratio:7.3f}{flag}")
        return failures


def _upload_raw(client: Any, bucket: str, config: Any, files: list[Path], keys: list[str], hash_first: bool) -> None:
    for path, key in zip(files, keys, strict=True):
        if hash_first:
            sha256_file(path)
        client.upload_file(str(path), bucket, key, Config=config)


def _download_raw(client: Any, bucket: str, config: Any, keys: list[str], out: Path) -> None:
    for i, key in enumerate(keys):
        client.download_file(bucket, key, str(out / f"raw-{i}"), Config=config)


def _put_store(store: S3Store | LocalStore, files: list[Path], keys: list[str]) -> None:
    for path, key in zip(files, keys, strict=True):
        store.put_file(path, key)


def _get_store(store: S3Store | LocalStore, keys: list[str], out: Path, tag: str) -> None:
    for i, key in enumerate(keys):
        store.get_file(key, out / f"{tag}-{i}")


def bench_s3(args: argparse.Namespace, work: Path, sets: list[tuple[str, list[Path]]]) -> list[str]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        settings = StoreSettings(
            store="s3://reelforge-bench",
            s3_endpoint_url=f"http://{host}:{port}",
            s3_region="us-east-1",
            s3_access_key_id=SecretStr("bench"),
            s3_secret_access_key=SecretStr("bench-secret"),
            multipart_threshold_mb=args.threshold_mb,
        )
        store = S3Store.from_settings(settings)
        client, bucket, config = store.client, store.bucket, store.transfer_config
        client.create_bucket(Bucket=bucket)
        results = Results()
        print(
            f"(a) S3, moto on {host}:{port}, multipart threshold/chunk {args.threshold_mb} MiB, "
            f"{config.max_request_concurrency} threads; median of {args.rounds} rounds (+1 warm-up)"
        )
        out = work / "s3-out"
        # The GPU task already has each output's digest (computed while the file downloaded from the worker) and
        # passes it to put_file; measure that path too, with the digest computed once outside the timing.
        digests = {path: sha256_file(path)[0] for _, files in sets for path in files}
        for rnd in range(args.rounds + 1):
            for label, files in sets:
                total = sum(f.stat().st_size for f in files)
                out.mkdir(exist_ok=True)
                sums: dict[tuple[str, str], float] = {}
                keys: list[str] = []
                # Interleaved file by file, so that load drifting on a shared machine hits every side alike.
                for path in files:
                    raw_key, sha_key, store_key, known_key = (
                        f"{side}/{rnd}/{path.name}" for side in ("raw", "sha", "store", "known")
                    )
                    keys += [raw_key, sha_key, store_key, known_key]
                    steps: dict[tuple[str, str], Callable[[], Any]] = {
                        ("put", "boto3"): lambda: _upload_raw(client, bucket, config, [path], [raw_key], False),  # noqa: B023
                        ("put", "S3Store"): lambda: store.put_file(path, store_key),  # noqa: B023
                        ("put", "S3Store, digest given"): lambda: store.put_file(
                            path, known_key, sha256=digests[path]  # noqa: B023
                        ),
                        ("put", "boto3+sha256"): lambda: _upload_raw(client, bucket, config, [path], [sha_key], True),  # noqa: B023
                        ("get", "boto3"): lambda: _download_raw(client, bucket, config, [raw_key], out),  # noqa: B023
                        ("get", "S3Store"): lambda: store.get_file(store_key, out / "store-0"),  # noqa: B023
                        ("get", "S3Store verify"): lambda: store.get_file(store_key, out / "v-0", verify=True),  # noqa: B023
                    }
                    for step, action in steps.items():
                        sums[step] = sums.get(step, 0.0) + timed(action)
                    assert (out / "raw-0").stat().st_size == (out / "store-0").stat().st_size == path.stat().st_size
                shutil.rmtree(out)
                for key in keys:
                    client.delete_object(Bucket=bucket, Key=key)
                if rnd == 0:
                    continue  # warm-up
                for (op, side), seconds in sums.items():
                    results.add(f"{op} {label}", side, rate(total, seconds))
        failures = results.report(("boto3", "S3Store"), args.min_ratio)
        print("  put with the digest the caller already has (the GPU task's path: hashed while downloading):")
        failures += results.report(("boto3", "S3Store, digest given"), args.min_ratio)
        print("  against boto3 + the same sha256 pass (put) / the verified get:")
        results.report(("boto3+sha256", "S3Store"), None)
        results.report(("boto3", "S3Store verify"), None)
        return failures
    finally:
        server.stop()


def _copy_all(pairs: list[tuple[Path, Path]]) -> None:
    for source, target in pairs:
        shutil.copyfile(source, target)


def bench_local(args: argparse.Namespace, work: Path, sets: list[tuple[str, list[Path]]]) -> None:
    results = Results()
    print(f"(b) local disk ({work}); median of {args.rounds} rounds (+1 warm-up)")
    for rnd in range(args.rounds + 1):
        root = work / f"local-{rnd}"
        store = LocalStore(root / "store")
        for label, files in sets:
            total = sum(f.stat().st_size for f in files)
            plain = root / "plain" / label
            plain.mkdir(parents=True, exist_ok=True)
            out = root / "out" / label
            out.mkdir(parents=True, exist_ok=True)
            keys = [f"{label.replace(' ', '')}/{f.name}" for f in files]
            figures = {
                ("put", "copyfile"): timed(lambda: _copy_all([(f, plain / f.name) for f in files])),  # noqa: B023
                ("put", "LocalStore"): timed(lambda: _put_store(store, files, keys)),  # noqa: B023
                ("get", "copyfile"): timed(
                    lambda: _copy_all([(plain / f.name, out / f"p-{f.name}") for f in files])  # noqa: B023
                ),
                ("get", "LocalStore"): timed(lambda: _get_store(store, keys, out, "s")),  # noqa: B023
            }
            if rnd:
                for (op, side), seconds in figures.items():
                    results.add(f"{op} {label}", side, rate(total, seconds))
        shutil.rmtree(root)
    results.report(("copyfile", "LocalStore"), None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--big", default="4x64", help="COUNTxMiB, default 4x64")
    parser.add_argument("--small", default="50x1", help="COUNTxMiB, default 50x1")
    parser.add_argument("--threshold-mb", type=int, default=16, help="multipart threshold and part size (MiB)")
    parser.add_argument("--min-ratio", type=float, default=0.9)
    parser.add_argument("--skip-local", action="store_true")
    parser.add_argument("--skip-s3", action="store_true")
    parser.add_argument("--strict", action="store_true", help="exit 1 when an S3 ratio is under --min-ratio")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="reelforge-bench-store-") as tmp:
        work = Path(tmp)
        sets = []
        for spec in (args.big, args.small):
            count, size = parse_set(spec)
            sets.append((f"{count} x {size} MiB", make_files(work / "src" / f"{count}x{size}", "f", count, size)))
        failures: list[str] = []
        if not args.skip_s3:
            failures = bench_s3(args, work, sets)
        if not args.skip_local:
            bench_local(args, work, sets)
    if failures:
        print(f"below the {args.min_ratio} ratio target: {', '.join(failures)}")
        return 1 if args.strict else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
