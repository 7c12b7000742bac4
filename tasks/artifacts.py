"""Summary artifacts of a flow run: a gallery of the images and a table of its stages (GPU jobs and CPU work)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from uuid import UUID

from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact

from reelforge.storage import ArtifactStore, StageRecord


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
    records: Sequence[StageRecord], store: ArtifactStore, *, key: str, title: str
) -> tuple[UUID, UUID]:
    """Create the gallery (``<key>-gallery``) and the stages table (``<key>-jobs``); returns their ids."""
    images: list[tuple[str, str, str]] = []
    for record in records:
        for output in record.outputs:
            if output.kind == "image":
                url = await asyncio.to_thread(store.url, output.key)
                images.append((record.job_id, output.key, url))
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
