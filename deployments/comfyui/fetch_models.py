#!/usr/bin/env python3
"""Download every model file named in lock.yaml into a ComfyUI models directory, verifying size and sha256.

Runs while a GPU worker image is built (or on a worker's first start), never in tests or CI:

    python fetch_models.py --lock lock.yaml --models-dir /opt/ComfyUI/models [--only image_to_video ...]

Standalone on purpose (stdlib + PyYAML only) so it runs inside the image without reelforge installed.
A file that is already present with the locked size and digest is skipped. A download lands in
`<name>.part` and is renamed into place only after it checks out, so an interrupted build never
leaves a truncated model behind. Entries whose sha256 is null in the lock are downloaded anyway and
their computed digest is printed so the lock can be completed. `HF_TOKEN` (if set) is sent to
huggingface.co for gated repositories; nothing else is read from the environment.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

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


def plan(lock: dict, models_dir: Path, only: set[str] | None = None) -> list[Download]:
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
        if not str(entry.get("url", "")).startswith("https://"):
            raise LockFileError(f"{entry['name']}: url must be https")
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


def unprovided(lock: dict, models_dir: Path, only: set[str] | None = None) -> list[tuple[str, Path]]:
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


def fetch(item: Download) -> str:
    """Download one file; returns its sha256. Raises on size or digest mismatch."""
    if item.is_snapshot:
        return fetch_snapshot(item)
    item.dest.parent.mkdir(parents=True, exist_ok=True)
    part = item.dest.with_name(item.dest.name + ".part")
    request = urllib.request.Request(item.url, headers={"User-Agent": "reelforge-fetch-models"})
    token = os.environ.get("HF_TOKEN")
    if token and item.url.startswith("https://huggingface.co/"):
        request.add_header("Authorization", f"Bearer {token}")
    digest = hashlib.sha256()
    written = 0
    with urllib.request.urlopen(request, timeout=60) as response, part.open("wb") as out:
        for chunk in iter(lambda: response.read(CHUNK), b""):
            out.write(chunk)
            digest.update(chunk)
            written += len(chunk)
    got = digest.hexdigest()
    if item.size is not None and written != item.size:
        part.unlink(missing_ok=True)
        raise RuntimeError(f"{item.name}: got {written} bytes, lock says {item.size}")
    if item.sha256 is not None and got != item.sha256:
        part.unlink(missing_ok=True)
        raise RuntimeError(f"{item.name}: sha256 {got} does not match the lock ({item.sha256})")
    os.replace(part, item.dest)
    return got


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lock", type=Path, default=Path(__file__).with_name("lock.yaml"))
    parser.add_argument("--models-dir", type=Path, required=True)
    parser.add_argument("--only", nargs="*", help="template names; default: every model in the lock")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    args = parser.parse_args(argv)
    lock = yaml.safe_load(args.lock.read_text(encoding="utf-8"))
    items = plan(lock, args.models_dir, set(args.only) if args.only else None)
    failures = 0
    for what, dest in unprovided(lock, args.models_dir, set(args.only) if args.only else None):
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
        if is_complete(item):
            print(f"ok       {item.folder}/{item.name}")
            continue
        try:
            got = fetch(item)
        except Exception as exc:  # report every failure, then exit non-zero
            failures += 1
            print(f"FAILED   {item.folder}/{item.name}: {exc}", file=sys.stderr)
            continue
        note = (
            ""
            if item.sha256 or item.is_snapshot
            else f"  (unlocked digest: sha256 {got}, size {item.dest.stat().st_size})"
        )
        print(f"fetched  {item.folder}/{item.name}{note}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
