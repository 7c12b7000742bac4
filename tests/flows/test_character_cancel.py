"""A Python caller that cancels a running character flow leaves nothing of it on the workers."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from flows.character import character_flow
from reelforge.comfy.client import ComfyClient
from reelforge.preview.server import PreviewWorker


async def test_cancelling_the_flow_task_removes_its_prompts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with PreviewWorker(tmp_path / "worker", latency="fixed:1.0") as worker, ComfyClient(worker.url) as client:
        monkeypatch.setenv("REELFORGE_COMFY_URLS", worker.url)
        monkeypatch.setenv("REELFORGE_STORE", str(tmp_path / "store"))
        run = asyncio.create_task(
            character_flow(name="Cancel Me", character_type="mascot", variations=4, width=512, height=512)
        )
        flow_run_id = None
        deadline = time.monotonic() + 60
        while flow_run_id is None:  # wait until variations are queued behind a running one
            assert time.monotonic() < deadline, "the flow never queued its variations"
            queue = await client.get_queue()
            owners = [i.owner for i in [*queue.running, *queue.pending] if i.owner is not None]
            if queue.pending and owners and owners[0].job_id.endswith(("var00", "var01", "var02", "var03")):
                flow_run_id = owners[0].flow_run_id
            await asyncio.sleep(0.05)
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
        cleaned_at = time.time()

        queue = await client.get_queue()
        assert not [i for i in [*queue.running, *queue.pending] if i.owner and i.owner.flow_run_id == flow_run_id]
        await asyncio.sleep(1.5)  # anything left would have started by now
        async with httpx.AsyncClient() as http:
            history = (await http.get(f"{worker.url}/history")).json()
        ours = {
            pid: entry for pid, entry in history.items()
            if entry["prompt"][3].get("reelforge", {}).get("flow_run_id") == flow_run_id
        }
        assert ours, "the base image at least ran"
        for entry in ours.values():
            starts = [m[1]["timestamp"] for m in entry["status"]["messages"] if m[0] == "execution_start"]
            assert all(ts / 1000 <= cleaned_at for ts in starts), "a prompt of the cancelled run started later"
        interrupted = [e for e in ours.values() if e["status"]["status_str"] == "error"]
        assert len(interrupted) <= 1  # the one running at the cancel, stopped by prompt id
