"""Prefect events at milestones, with resource ids automations can match.

| event | resource id | when |
|---|---|---|
| ``reelforge.job.completed`` | ``reelforge.job.<job id>`` | a GPU job's outputs are stored (or came from cache) |
| ``reelforge.<stage>.completed`` | ``reelforge.job.<job id>`` | a CPU stage is done (``reelforge.phash.completed``) |
| ``reelforge.character.ready`` | ``reelforge.character.<slug>`` | a character version's manifest is written |
| ``reelforge.character.lora_failed`` | ``reelforge.character.<slug>`` | its LoRA scored below the identity threshold |
| ``reelforge.video.ready`` | ``reelforge.video.<slug>`` | a video is assembled and stored |
| ``reelforge.batch.completed`` | ``reelforge.batch.<batch id>`` | a batch ended, every row made |
| ``reelforge.batch.failed`` | ``reelforge.batch.<batch id>`` | a batch ended with rows failed, rejected or skipped |

The flow run is attached as a related resource by Prefect itself (from the run context). A trigger such as
``{"expect": ["reelforge.character.ready"], "match": {"prefect.resource.id": "reelforge.character.*"}}`` starts
a deployment per finished character.
"""

from __future__ import annotations

from typing import Any

from prefect.events import emit_event

from reelforge.storage import ArtifactRef, StageRecord
from tasks.webhooks import notify

JOB_COMPLETED = "reelforge.job.completed"
CHARACTER_READY = "reelforge.character.ready"
CHARACTER_LORA_FAILED = "reelforge.character.lora_failed"
VIDEO_READY = "reelforge.video.ready"
BATCH_COMPLETED = "reelforge.batch.completed"
BATCH_FAILED = "reelforge.batch.failed"


def _related(kind: str, value: str, role: str) -> dict[str, str]:
    return {"prefect.resource.id": f"reelforge.{kind}.{value}", "prefect.resource.role": role}


def stage_event(record: StageRecord) -> str:
    """``reelforge.job.completed`` for GPU stages (one ComfyUI job), ``reelforge.<stage>.completed`` otherwise."""
    return JOB_COMPLETED if record.kind == "gpu" else f"reelforge.{record.stage}.completed"


def stage_completed(record: StageRecord, *, flow_run_id: str | None = None) -> None:
    """Emit the stage's completion event (resource ``reelforge.job.<job id>``), whether executed or cached."""
    payload: dict[str, Any] = {
        "stage": record.stage,
        "version": record.version,
        "kind": record.kind,
        "cached": record.cached,
        "record": record.record,
        "outputs": [{"key": r.key, "uri": r.uri, "sha256": r.sha256} for r in record.outputs],
    }
    if record.job is not None:
        payload |= {
            "template": record.stage,
            "template_version": record.version,
            "worker": record.job.worker,
            "prompt_id": record.job.prompt_id,
            "gpu_seconds": record.job.gpu_seconds,
            "cost": record.job.cost,
        }
    if flow_run_id:
        payload["flow_run_id"] = flow_run_id
    emit_event(
        stage_event(record),
        resource={
            "prefect.resource.id": f"reelforge.job.{record.job_id}",
            "prefect.resource.name": record.job_id,
            "reelforge.stage": record.stage,
            "reelforge.cached": "true" if record.cached else "false",
        },
        related=[_related("template" if record.kind == "gpu" else "stage", record.stage, "stage")],
        payload=payload,
    )


def character_ready(
    slug: str, version: int, manifest: ArtifactRef, *, name: str, executed: int, cached: int,
    score: float | None = None,
) -> None:
    payload: dict[str, Any] = {
        "slug": slug,
        "version": version,
        "manifest_key": manifest.key,
        "manifest_uri": manifest.uri,
        "jobs_executed": executed,
        "jobs_cached": cached,
        "identity_score": score,
    }
    emit_event(
        CHARACTER_READY,
        resource={
            "prefect.resource.id": f"reelforge.character.{slug}",
            "prefect.resource.name": name,
            "reelforge.version": str(version),
        },
        payload=payload,
    )
    notify(CHARACTER_READY, slug, {"name": name, **payload}, manifest=manifest)


def character_lora_failed(
    slug: str, version: int, manifest: ArtifactRef, *, name: str, verdict: dict[str, Any]
) -> None:
    """The character's LoRA scored below its identity threshold: the verdict (score, threshold, scorer, failing)."""
    payload = {"slug": slug, "version": version, "manifest_key": manifest.key, "manifest_uri": manifest.uri, **verdict}
    emit_event(
        CHARACTER_LORA_FAILED,
        resource={
            "prefect.resource.id": f"reelforge.character.{slug}",
            "prefect.resource.name": name,
            "reelforge.version": str(version),
        },
        payload=payload,
    )
    notify(CHARACTER_LORA_FAILED, slug, {"name": name, **payload}, manifest=manifest)


def video_ready(slug: str, video: ArtifactRef, *, manifest: ArtifactRef | None = None) -> None:
    payload: dict[str, Any] = {"slug": slug, "key": video.key, "uri": video.uri, "sha256": video.sha256}
    if manifest is not None:
        payload |= {"manifest_key": manifest.key, "manifest_uri": manifest.uri}
    emit_event(
        VIDEO_READY,
        resource={"prefect.resource.id": f"reelforge.video.{slug}", "prefect.resource.name": slug},
        payload=payload,
    )
    notify(VIDEO_READY, slug, payload, manifest=manifest, artifacts=[video])


def batch_finished(batch_id: str, summary: ArtifactRef, *, ok: bool, totals: dict[str, Any]) -> None:
    """A batch ended: its summary's location and totals (rows, completed, failed, rejected, skipped, cost)."""
    event = BATCH_COMPLETED if ok else BATCH_FAILED
    payload = {"batch_id": batch_id, "summary_key": summary.key, "summary_uri": summary.uri, **totals}
    emit_event(
        event,
        resource={"prefect.resource.id": f"reelforge.batch.{batch_id}", "prefect.resource.name": batch_id},
        payload=payload,
    )
    notify(event, batch_id, payload, artifacts=[summary])
