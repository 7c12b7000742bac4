"""Prefect events at milestones, with resource ids automations can match.

| event | resource id | when |
|---|---|---|
| ``reelforge.job.completed`` | ``reelforge.job.<job id>`` | a GPU job's outputs are stored (or came from cache) |
| ``reelforge.character.ready`` | ``reelforge.character.<slug>`` | a character version's manifest is written |
| ``reelforge.video.ready`` | ``reelforge.video.<slug>`` | a video is assembled and stored |

The flow run is attached as a related resource by Prefect itself (from the run context). A trigger such as
``{"expect": ["reelforge.character.ready"], "match": {"prefect.resource.id": "reelforge.character.*"}}`` starts
a deployment per finished character.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prefect.events import emit_event

from reelforge.storage.base import ArtifactRef

if TYPE_CHECKING:
    from tasks.gpu import GpuJobResult

JOB_COMPLETED = "reelforge.job.completed"
CHARACTER_READY = "reelforge.character.ready"
VIDEO_READY = "reelforge.video.ready"


def _related(kind: str, value: str, role: str) -> dict[str, str]:
    return {"prefect.resource.id": f"reelforge.{kind}.{value}", "prefect.resource.role": role}


def job_completed(result: GpuJobResult, *, flow_run_id: str | None = None) -> None:
    payload: dict[str, Any] = {
        "template": result.template,
        "template_version": result.template_version,
        "worker": result.worker,
        "prompt_id": result.prompt_id,
        "gpu_seconds": result.gpu_seconds,
        "cost": result.cost,
        "cached": result.cached,
        "outputs": [{"key": r.key, "uri": r.uri, "sha256": r.sha256} for r in result.outputs],
    }
    if flow_run_id:
        payload["flow_run_id"] = flow_run_id
    emit_event(
        JOB_COMPLETED,
        resource={
            "prefect.resource.id": f"reelforge.job.{result.job_id}",
            "prefect.resource.name": result.job_id,
            "reelforge.template": result.template,
            "reelforge.cached": "true" if result.cached else "false",
        },
        related=[_related("template", result.template, "template")],
        payload=payload,
    )


def character_ready(
    slug: str, version: int, manifest: ArtifactRef, *, name: str, executed: int, cached: int
) -> None:
    emit_event(
        CHARACTER_READY,
        resource={
            "prefect.resource.id": f"reelforge.character.{slug}",
            "prefect.resource.name": name,
            "reelforge.version": str(version),
        },
        payload={
            "slug": slug,
            "version": version,
            "manifest_key": manifest.key,
            "manifest_uri": manifest.uri,
            "jobs_executed": executed,
            "jobs_cached": cached,
        },
    )


def video_ready(slug: str, video: ArtifactRef, *, manifest: ArtifactRef | None = None) -> None:
    payload: dict[str, Any] = {"slug": slug, "key": video.key, "uri": video.uri, "sha256": video.sha256}
    if manifest is not None:
        payload |= {"manifest_key": manifest.key, "manifest_uri": manifest.uri}
    emit_event(
        VIDEO_READY,
        resource={"prefect.resource.id": f"reelforge.video.{slug}", "prefect.resource.name": slug},
        payload=payload,
    )
