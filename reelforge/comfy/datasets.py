"""Training sets on a worker: images with same-named caption files in one input subfolder."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from pathlib import Path

from reelforge.comfy.client import ComfyClient


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def upload_captioned_folder(client: ComfyClient, items: Sequence[tuple[Path, str]]) -> str:
    """Upload ``(image, caption)`` pairs for LoadImageTextSetFromFolderNode; returns the input subfolder.

    The folder is named by the content of the whole set (``rf-dataset-<hash>``), images by their content hash
    and each caption by its image's stem, so uploading the same set again changes nothing and two sets never
    mix.
    """
    if not items:
        raise ValueError("a training set needs at least one image")
    digests = await asyncio.gather(*(asyncio.to_thread(_digest, image) for image, _ in items))
    whole = hashlib.sha256()
    for digest, (_, caption) in zip(digests, items, strict=True):
        whole.update(digest.encode())
        whole.update(hashlib.sha256(caption.encode("utf-8")).digest())
    folder = f"rf-dataset-{whole.hexdigest()[:16]}"
    for image, caption in items:
        uploaded = await client.upload(image, filename=image.name, subfolder=folder)
        stem = uploaded.name.rsplit(".", 1)[0]
        await client.upload(caption.encode("utf-8"), filename="caption.txt", subfolder=folder, name=f"{stem}.txt")
    return folder
