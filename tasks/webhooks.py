"""Signed webhooks for the milestone events (``reelforge.webhooks``): one call per event, never raising.

``notify`` is called by the emit functions of ``tasks.events`` right after their Prefect event; it reads the
settings, adds the current flow run id and hands the delivery to the engine's background dispatcher, so the
flow goes on at once and a dead receiver never fails or slows it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from reelforge.settings import Settings
from reelforge.storage import ArtifactRef
from reelforge.webhooks import notify_in_background
from tasks.context import current_flow_run_id

__all__ = ["notify"]

log = logging.getLogger(__name__)


def notify(
    event: str,
    subject: str,
    payload: Mapping[str, Any],
    *,
    manifest: ArtifactRef | None = None,
    artifacts: Sequence[ArtifactRef] = (),
) -> str | None:
    """POST ``event`` about ``subject`` to every ``REELFORGE_WEBHOOK_URLS`` URL in the background.

    ``manifest``: the subject's manifest (its artifacts, GPU seconds and cost go into the body); ``artifacts``:
    other stored artifacts to name (a video, a batch summary). Returns the event id, or None when webhooks are
    off or the settings are invalid (logged; the flow is never failed for a webhook).
    """
    try:
        settings = Settings.load()
    except ValidationError as exc:
        log.warning("webhook %s of %s not sent: invalid settings: %s", event, subject, exc.errors()[0]["msg"])
        return None
    try:
        return notify_in_background(settings, event, subject, payload, manifest=manifest, artifacts=artifacts,
                                    flow_run_id=current_flow_run_id())
    except Exception as exc:  # a webhook must never fail the flow
        log.warning("webhook %s of %s not sent: %s", event, subject, type(exc).__name__)
        return None
