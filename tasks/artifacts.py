"""Summary artifacts of a flow run: a gallery of the images and a table of the GPU jobs."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from uuid import UUID

from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact

from reelforge.storage.base import ArtifactStore
from tasks.gpu import GpuJobResult


def job_rows(results: Sequence[GpuJobResult]) -> list[dict[str, str | float]]:
    """One row per job: template, worker, GPU seconds, cost, cached or executed, outputs."""
    return [
        {
            "job": r.job_id,
            "template": r.template,
            "worker": r.worker,
            "gpu_seconds": round(r.gpu_seconds, 3),
            "cost": round(r.cost, 6),
            "status": "cached" if r.cached else "executed",
            "outputs": ", ".join(o.key for o in r.outputs),
        }
        for r in results
    ]


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("[", "\\[").replace("]", "\\]")


def gallery_markdown(title: str, images: Sequence[tuple[str, str, str]]) -> str:
    """``images``: (caption, key, url). Local stores give file paths, S3 stores presigned URLs."""
    lines = [f"# {_escape(title)}", ""]
    if not images:
        lines.append("_No images._")
    for caption, key, url in images:
        target = url if "://" in url else f"file://{url}"
        lines += [f"**{_escape(caption)}**: `{key}`", "", f"![{_escape(caption)}](<{target}>)", ""]
    return "\n".join(lines)


async def publish_summary(
    results: Sequence[GpuJobResult], store: ArtifactStore, *, key: str, title: str
) -> tuple[UUID, UUID]:
    """Create the gallery (``<key>-gallery``) and the jobs table (``<key>-jobs``); returns their ids."""
    images: list[tuple[str, str, str]] = []
    for result in results:
        for record in result.outputs:
            if record.kind == "image":
                url = await asyncio.to_thread(store.url, record.key)
                images.append((result.job_id, record.key, url))
    executed = sum(1 for r in results if r.executed)
    gallery = await acreate_markdown_artifact(
        markdown=gallery_markdown(title, images), key=f"{key}-gallery", description=f"{title}: images"
    )
    table = await acreate_table_artifact(
        table=job_rows(results),
        key=f"{key}-jobs",
        description=f"{title}: {len(results)} GPU jobs, {executed} executed, {len(results) - executed} cached",
    )
    return gallery, table
