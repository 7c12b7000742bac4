"""Summary artifacts of a flow run: a gallery of the images and a table of its stages (GPU jobs and CPU work).

The gallery is markdown that Prefect's UI renders in an http(s) page, which cannot load ``file://`` links. So
with a local store each image is shown as a small thumbnail embedded in the markdown (a ``data:`` URI, which
the UI renders: docs/ui.md) with the file's path under it as text; with S3 the image is its presigned URL, as
before. Embedded thumbnails are capped per gallery (``MAX_EMBEDDED_BYTES``); past the cap an image is listed
by its path only.
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

from PIL import Image
from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact

from reelforge.storage import ArtifactStore, StageRecord

log = logging.getLogger(__name__)

THUMBNAIL_PX = 256  # longest side of an embedded thumbnail
MAX_EMBEDDED_BYTES = 3 * 1024 * 1024  # base64 text of all thumbnails of one gallery


def job_rows(records: Sequence[StageRecord]) -> list[dict[str, str | float]]:
    """One row per stage: stage (template), kind, worker, GPU seconds, cost, cached or executed, outputs."""
    return [
        {
            "job": r.job_id,
            "stage": r.stage,
            "kind": r.kind,
            "worker": r.job.worker if r.job else "",
            "gpu_seconds": round(r.gpu_seconds, 3),
            "cost": round(r.cost, 6),
            "status": "cached" if r.cached else "executed",
            "outputs": ", ".join(o.key for o in r.outputs) or ", ".join(f"{k}={v}" for k, v in r.record.items()),
        }
        for r in records
    ]


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("[", "\\[").replace("]", "\\]")


@dataclass(frozen=True)
class GalleryImage:
    """One image of a gallery: ``src`` is what the UI loads (an http(s) URL or a ``data:`` URI), or None when
    there is nothing it can load; ``location`` is shown as text (a local file's path)."""

    caption: str
    key: str
    src: str | None
    location: str | None = None


def thumbnail_data_uri(data: bytes, *, max_px: int = THUMBNAIL_PX) -> str:
    """A ``data:`` URI of a thumbnail of an image (longest side ``max_px``): PNG, or JPEG when smaller."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        thumb = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    thumb.thumbnail((max_px, max_px))
    encoded: list[tuple[str, bytes]] = []
    for fmt, mime in (("PNG", "image/png"), ("JPEG", "image/jpeg")):
        if fmt == "JPEG" and thumb.mode != "RGB":
            continue
        buffer = io.BytesIO()
        thumb.save(buffer, format=fmt, **({"optimize": True} if fmt == "PNG" else {"quality": 85}))
        encoded.append((mime, buffer.getvalue()))
    mime, best = min(encoded, key=lambda item: len(item[1]))
    return f"data:{mime};base64,{base64.b64encode(best).decode('ascii')}"


def gallery_markdown(title: str, images: Sequence[GalleryImage]) -> str:
    """The gallery's markdown. Never a ``file://`` link: the UI's page could not load it."""
    lines = [f"# {_escape(title)}", ""]
    if not images:
        lines.append("_No images._")
    for image in images:
        lines += [f"**{_escape(image.caption)}**: `{image.key}`", ""]
        if image.src is not None:
            lines += [f"![{_escape(image.caption)}](<{image.src}>)", ""]
        else:
            lines += ["_(no preview)_", ""]
        if image.location is not None:
            lines += [f"`{image.location}`", ""]
    return "\n".join(lines)


async def gallery_image(store: ArtifactStore, caption: str, key: str, *, budget: list[int]) -> GalleryImage:
    """What the gallery shows for one stored image. ``budget``: embedded bytes left (updated)."""
    url = await asyncio.to_thread(store.url, key)
    if "://" in url:  # an object store's (presigned) URL: the browser loads it itself
        return GalleryImage(caption, key, url)
    try:
        src: str | None = await asyncio.to_thread(lambda: thumbnail_data_uri(store.read_bytes(key)))
    except Exception as exc:  # a gallery is a display: never fail a flow for it
        log.warning("no gallery thumbnail for %s: %s", key, exc)
        src = None
    if src is not None:
        if len(src) > budget[0]:
            src = None
        else:
            budget[0] -= len(src)
    return GalleryImage(caption, key, src, location=url)


async def publish_summary(
    records: Sequence[StageRecord], store: ArtifactStore, *, key: str, title: str
) -> tuple[UUID, UUID]:
    """Create the gallery (``<key>-gallery``) and the stages table (``<key>-jobs``); returns their ids."""
    images: list[GalleryImage] = []
    budget = [MAX_EMBEDDED_BYTES]
    for record in records:
        for output in record.outputs:
            if output.kind == "image":
                images.append(await gallery_image(store, record.job_id, output.key, budget=budget))
    executed = sum(1 for r in records if r.executed)
    gallery = await acreate_markdown_artifact(
        markdown=gallery_markdown(title, images), key=f"{key}-gallery", description=f"{title}: images"
    )
    table = await acreate_table_artifact(
        table=job_rows(records),
        key=f"{key}-jobs",
        description=f"{title}: {len(records)} stages, {executed} executed, {len(records) - executed} cached",
    )
    return gallery, table
