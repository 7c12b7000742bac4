"""REELFORGE_BATCH_FAN_OUT=deployment: each row is a run of the character deployment, served by another process
(as an orchestrator on another machine would), and the batch reads each character's manifest back from the store."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.batch import BatchResult, batch_flow
from reelforge.storage import LocalStore, read_manifest

pytestmark = pytest.mark.timeout(300)


async def test_batch_rows_run_as_runs_of_the_character_deployment(
    served_flow: Any, prefect_server: str, comfy_worker: Any, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REELFORGE_STORE", str(workdir / "store"))  # the served process writes here too
    monkeypatch.setenv("REELFORGE_COMFY_URLS", comfy_worker.url)
    monkeypatch.setenv("REELFORGE_BATCH_FAN_OUT", "deployment")
    monkeypatch.setenv("REELFORGE_BATCH_CHARACTER_DEPLOYMENT", "reelforge-character/served-character")
    with temporary_settings({PREFECT_API_URL: prefect_server}):
        state = await batch_flow(  # type: ignore[call-overload]
            character_type="rapper", count=2, seed=11, variations=1, lora=False, intro=False, width=512,
            height=512, return_state=True,
        )
        result = await state.result(raise_on_failure=False)
        assert isinstance(result, BatchResult), result
        assert state.is_completed(), [(r.row, r.status, r.error) for r in result.summary.rows]
        async with get_client() as client:
            batch_run = await client.read_flow_run(state.state_details.flow_run_id)
            deployment = await client.read_deployment_by_name("reelforge-character/served-character")
            for row in result.summary.rows:
                assert row.status == "completed" and row.manifest_key and row.flow_run_id
                run = await client.read_flow_run(UUID(row.flow_run_id))
                assert run.deployment_id == deployment.id  # a run of the deployment, not a subflow here
                assert run.name.startswith(f"{result.batch_id}-row{row.row}-")
                parent = await client.read_task_run(run.parent_task_run_id)  # type: ignore[arg-type]
                assert parent.flow_run_id == batch_run.id
    store = LocalStore(workdir / "store")
    for row in result.summary.rows:
        manifest = read_manifest(store, row.manifest_key)
        assert manifest.version == row.version and manifest.total_gpu_seconds > 0
