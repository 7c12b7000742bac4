#!/usr/bin/env python3
"""Download every model file named in lock.yaml into a ComfyUI models directory, verifying size and sha256.

Runs while a GPU worker image is built (or on a worker's first start), never in tests or CI:

    python fetch_models.py --lock lock.yaml --models-dir /opt/ComfyUI/models [--only image_to_video ...]

    python fetch_models.py --lock lock.yaml --models-dir /opt/ComfyUI/models --verify   # readiness, no downloads

Standalone on purpose (stdlib + PyYAML only) so it runs inside the image without reelforge installed.
A file that is already present with the locked size and digest is skipped; a present file that does not
match is removed (ComfyUI must never load it) and fetched again. A download lands in `<name>.part` and is
renamed into place only after its size (the lock's, else the server's Content-Length) and sha256 check
out, so an interrupted build never leaves a truncated model behind. A short read keeps the `.part` and is
resumed with an HTTP Range request (up to --retries more attempts); a digest mismatch deletes it.
Entries whose sha256 (or size) is null in the lock are downloaded, and the digest and size computed are
written into the lock file (comments kept) and printed: from then on a file that differs is refused.
`HF_TOKEN` (if set) is sent to huggingface.co only (never across a redirect to a CDN) for gated
repositories; nothing else is read from the environment.

--verify downloads nothing: it exits 0 only when every planned model is present with the locked size
(and, with --deep, the locked sha256); the worker image's entrypoint and healthcheck use it.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

CHUNK = 8 * 1024 * 1024
# ComfyUI folder keys are directory names under models/ for every key the lock uses.
FOLDER_DIRS = {
    "checkpoints": "checkpoints",
    "diffusion_models": "diffusion_models",
    "text_encoders": "text_encoders",
    "vae": "vae",
    "loras": "loras",
    "clip_vision": "clip_vision",
    "controlnet": "controlnet",
    "upscale_models": "upscale_models",
    "audio_encoders": "audio_encoders",
    "ipadapter": "ipadapter",  # registered by ComfyUI_IPAdapter_plus
    "qwen-tts": "qwen-tts",  # registered by ComfyUI-Qwen-TTS; entries are repository snapshots
}
HF_REPO_URL = "https://huggingface.co/"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}  # plain http is accepted for these only (local mirrors, tests)


class LockFileError(ValueError):
    """The lock names something this script cannot place safely."""


@dataclass(frozen=True)
class Download:
    folder: str
    name: str
    url: str
    sha256: str | None
    size: int | None
    dest: Path

    @property
    def is_snapshot(self) -> bool:
        """A whole Hugging Face repository (a directory), not one file."""
        return self.url.startswith(HF_REPO_URL) and "/resolve/" not in self.url

    @property
    def repo_id(self) -> str:
        return "/".join(self.url[len(HF_REPO_URL) :].strip("/").split("/")[:2])


def safe_relative(name: str) -> PurePosixPath:
    """A model name as a relative path inside its folder; rejects absolute paths and '..' parts."""
    rel = PurePosixPath(name)
    if not name or rel.is_absolute() or any(part in ("", ".", "..") for part in rel.parts) or "\\" in name:
        raise LockFileError(f"unsafe model file name: {name!r}")
    return rel


def target_path(models_dir: Path, folder: str, name: str) -> Path:
    if folder not in FOLDER_DIRS:
        raise LockFileError(f"unknown model folder key {folder!r} for {name!r}")
    return models_dir / FOLDER_DIRS[folder] / Path(*safe_relative(name).parts)


def plan(lock: dict[str, Any], models_dir: Path, only: set[str] | None = None) -> list[Download]:
    """The downloads for a parsed lock: every model, or those used by the templates in `only`."""
    items: list[Download] = []
    for entry in lock.get("models") or []:
        if only and not only.intersection(entry.get("used_by") or []):
            continue
        if entry.get("url") is None:
            continue  # not known yet (added by `reelforge templates init`): see unprovided()
        sha = entry.get("sha256")
        if sha is not None and (len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha)):
            raise LockFileError(f"{entry['name']}: sha256 must be 64 lowercase hex digits or null")
        if not _allowed_url(str(entry.get("url", ""))):
            raise LockFileError(f"{entry['name']}: url must be https (plain http only on loopback)")
        items.append(
            Download(
                entry["folder"],
                entry["name"],
                entry["url"],
                sha,
                entry.get("size"),
                target_path(models_dir, entry["folder"], entry["name"]),
            )
        )
    return items


def _allowed_url(url: str) -> bool:
    parsed = urllib.parse.urlsplit(url)
    return parsed.scheme == "https" or (parsed.scheme == "http" and parsed.hostname in LOOPBACK_HOSTS)


def unprovided(lock: dict[str, Any], models_dir: Path, only: set[str] | None = None) -> list[tuple[str, Path]]:
    """Models the lock names without a url (``url: null``): "folder/name" and where the file must be put."""
    found = []
    for entry in lock.get("models") or []:
        if entry.get("url") is None and not (only and not only.intersection(entry.get("used_by") or [])):
            dest = target_path(models_dir, entry["folder"], entry["name"])
            found.append((f"{entry['folder']}/{entry['name']}", dest))
    return found


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def is_complete(item: Download) -> bool:
    if item.is_snapshot:
        return item.dest.is_dir() and any(item.dest.iterdir())
    if not item.dest.is_file():
        return False
    if item.size is not None and item.dest.stat().st_size != item.size:
        return False
    return item.sha256 is None or sha256_file(item.dest) == item.sha256


def fetch_snapshot(item: Download) -> str:
    """Download a repository snapshot into its directory (huggingface_hub does the per-file checks)."""
    from huggingface_hub import snapshot_download  # only needed for snapshot entries

    part = item.dest.with_name(item.dest.name + ".part")
    snapshot_download(repo_id=item.repo_id, local_dir=part, token=os.environ.get("HF_TOKEN") or None)
    os.replace(part, item.dest)
    return "snapshot"


class DownloadError(RuntimeError):
    """One attempt failed; `resumable` says whether the `.part` file is a good prefix worth resuming."""

    def __init__(self, message: str, resumable: bool = False) -> None:
        super().__init__(message)
        self.resumable = resumable


def _open(item: Download, offset: int) -> http.client.HTTPResponse:
    request = urllib.request.Request(item.url, headers={"User-Agent": "reelforge-fetch-models"})
    token = os.environ.get("HF_TOKEN")
    if token and item.url.startswith(HF_REPO_URL):
        # Unredirected: urllib would otherwise repeat it to whatever host a redirect names (HF's CDN).
        request.add_unredirected_header("Authorization", f"Bearer {token}")
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    response: http.client.HTTPResponse = urllib.request.urlopen(request, timeout=60)
    return response


def _attempt(item: Download, part: Path) -> tuple[str, int]:
    """One download attempt into `part`, resuming a prefix already there; returns (sha256, size)."""
    offset = part.stat().st_size if part.is_file() else 0
    if item.size is not None and offset > item.size:
        part.unlink()
        offset = 0
    digest = hashlib.sha256()
    try:
        response = _open(item, offset)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # range beyond the end: the prefix is useless, start again
            part.unlink(missing_ok=True)
        raise DownloadError(f"HTTP {exc.code} {exc.reason}", resumable=exc.code >= 500 or exc.code == 416) from exc
    except OSError as exc:
        raise DownloadError(f"cannot connect: {exc}", resumable=True) from exc
    with response:
        if offset and response.status == 206:
            with part.open("rb") as handle:  # the kept prefix counts towards the digest
                for chunk in iter(lambda: handle.read(CHUNK), b""):
                    digest.update(chunk)
            mode = "ab"
        else:
            offset, mode = 0, "wb"  # the server ignored the Range header: start over
        length = response.headers.get("Content-Length")
        expected = offset + int(length) if length is not None and length.isdigit() else None
        written = offset
        try:
            with part.open(mode) as out:
                for chunk in iter(lambda: response.read(CHUNK), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    written += len(chunk)
                    if item.size is not None and written > item.size:
                        break
        except OSError as exc:  # reset or timeout mid-body: what was written is a good prefix
            raise DownloadError(f"read failed after {written} bytes: {exc}", resumable=True) from exc
    want = item.size if item.size is not None else expected
    if item.size is not None and written > item.size:
        part.unlink(missing_ok=True)
        raise DownloadError(f"got more than {item.size} bytes (the size in the lock)")
    if want is not None and written < want:
        # http.client returns a short body without an error when the connection closes early.
        raise DownloadError(f"short read: got {written} of {want} bytes", resumable=True)
    if expected is not None and written != expected:
        part.unlink(missing_ok=True)
        raise DownloadError(f"got {written} bytes, the server announced {expected}")
    got = digest.hexdigest()
    if item.sha256 is not None and got != item.sha256:
        part.unlink(missing_ok=True)
        raise DownloadError(f"sha256 {got} does not match the lock ({item.sha256}); file refused")
    return got, written


def fetch(item: Download, retries: int = 3, backoff: float = 2.0) -> str:
    """Download one file; returns its sha256. Raises DownloadError on size or digest mismatch.

    A short read or a dropped connection keeps the `.part` file and is resumed (Range) up to `retries`
    more times; a digest or size mismatch deletes the `.part` and fails at once. Only a file that
    checks out is renamed into place.
    """
    if item.is_snapshot:
        return fetch_snapshot(item)
    item.dest.parent.mkdir(parents=True, exist_ok=True)
    part = item.dest.with_name(item.dest.name + ".part")
    for attempt in range(retries + 1):
        try:
            got, _ = _attempt(item, part)
        except DownloadError as exc:
            if not exc.resumable or attempt == retries:
                raise
            note = f"attempt {attempt + 2} of {retries + 1}"
            print(f"retry    {item.folder}/{item.name}: {exc} ({note})", file=sys.stderr)
            time.sleep(backoff * (attempt + 1))
            continue
        os.replace(part, item.dest)
        return got
    raise AssertionError("unreachable")


def record_in_lock(lock_path: Path, item: Download, sha256: str, size: int) -> bool:
    """Write a computed digest (and size) into the lock entry whose sha256/size are null, keeping comments.

    Returns False (and changes nothing) when the entry cannot be found unambiguously.
    """
    lines = lock_path.read_text(encoding="utf-8").splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if re.match(r"\s*-\s+folder:", line)]
    for n, start in enumerate(starts):
        stop = starts[n + 1] if n + 1 < len(starts) else len(lines)
        block = lines[start:stop]
        folder = re.match(r"\s*-\s+folder:\s*(\S+)", block[0])
        names = [re.match(r"\s*name:\s*(.+?)\s*$", line) for line in block]
        name = next((m.group(1).strip("'\"") for m in names if m), None)
        if not folder or folder.group(1).strip("'\"") != item.folder or name != item.name:
            continue
        for i, line in enumerate(block):
            if re.match(r"\s*sha256:\s*null\s*$", line):
                block[i] = re.sub(r"null", sha256, line, count=1)
            elif re.match(r"\s*size:\s*null\s*$", line):
                block[i] = re.sub(r"null", str(size), line, count=1)
        lines[start:stop] = block
        tmp = lock_path.with_name(lock_path.name + ".tmp")
        tmp.write_text("".join(lines), encoding="utf-8")
        os.replace(tmp, lock_path)
        return True
    return False


def verify(item: Download, deep: bool) -> str | None:
    """Why a planned model is not ready (None when it is): missing, wrong size, or (deep) wrong digest."""
    if item.is_snapshot:
        return None if item.dest.is_dir() and any(item.dest.iterdir()) else "missing"
    if not item.dest.is_file():
        return "missing"
    if item.size is not None and item.dest.stat().st_size != item.size:
        return f"size {item.dest.stat().st_size}, lock says {item.size}"
    if deep and item.sha256 is not None and sha256_file(item.dest) != item.sha256:
        return "sha256 does not match the lock"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lock", type=Path, default=Path(__file__).with_name("lock.yaml"))
    parser.add_argument("--models-dir", type=Path, required=True)
    parser.add_argument("--only", nargs="*", help="template names; default: every model in the lock")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    parser.add_argument("--verify", action="store_true", help="download nothing; exit 1 unless every model is present")
    parser.add_argument("--deep", action="store_true", help="with --verify: also check each locked sha256 (slow)")
    parser.add_argument("--retries", type=int, default=3, help="resumed attempts after a short read (default 3)")
    parser.add_argument("--backoff", type=float, default=2.0, help="seconds between attempts, times the attempt")
    parser.add_argument("--no-record", action="store_true", help="do not write computed digests into the lock")
    args = parser.parse_args(argv)
    lock = yaml.safe_load(args.lock.read_text(encoding="utf-8"))
    only = set(args.only) if args.only else None
    items = plan(lock, args.models_dir, only)
    failures = 0
    for what, dest in unprovided(lock, args.models_dir, only):
        if dest.exists():
            print(f"ok       {what} (no url in the lock; placed by hand)")
        elif args.dry_run:
            print(f"{what} <- no url in the lock: put the file at {dest}")
        else:
            failures += 1
            print(f"MISSING  {what}: no url in the lock; put the file at {dest} or add its url", file=sys.stderr)
    for item in items:
        if args.dry_run:
            print(f"{item.folder}/{item.name} <- {item.url}")
            continue
        if args.verify:
            problem = verify(item, args.deep)
            if problem:
                failures += 1
                print(f"NOTREADY {item.folder}/{item.name}: {problem} ({item.dest})", file=sys.stderr)
            else:
                print(f"ok       {item.folder}/{item.name}")
            continue
        if is_complete(item):
            print(f"ok       {item.folder}/{item.name}")
            continue
        if item.dest.is_file():  # present but not what the lock says: never leave it for ComfyUI to load
            print(f"remove   {item.folder}/{item.name}: does not match the lock", file=sys.stderr)
            item.dest.unlink()
        try:
            got = fetch(item, retries=args.retries, backoff=args.backoff)
        except Exception as exc:  # report every failure, then exit non-zero
            failures += 1
            print(f"FAILED   {item.folder}/{item.name}: {exc}", file=sys.stderr)
            continue
        note = ""
        if not item.is_snapshot and (item.sha256 is None or item.size is None):
            size = item.dest.stat().st_size
            recorded = not args.no_record and _record(args.lock, item, got, size)
            where = f"recorded in {args.lock}" if recorded else "NOT recorded: put them in the lock"
            note = f"  (first download: sha256 {got}, size {size}; {where})"
        print(f"fetched  {item.folder}/{item.name}{note}")
    return 1 if failures else 0


def _record(lock_path: Path, item: Download, sha256: str, size: int) -> bool:
    try:
        return record_in_lock(lock_path, item, sha256, size)
    except OSError as exc:  # a read-only lock (an image layer): say so, the digest is still printed
        print(f"warning  cannot write {lock_path}: {exc}", file=sys.stderr)
        return False


if __name__ == "__main__":
    sys.exit(main())
