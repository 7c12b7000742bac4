"""Cancel one of two deployed flow runs sharing one worker; the other completes untouched.

Two runs of the served test flow (6 images each, 1 s per prompt on one preview worker) interleave on the
worker. One is cancelled through the Prefect API (state Cancelling, as ``prefect flow-run cancel`` does).
The worker's own history is the judge: the other run completes all of its prompts successfully and none of
them is interrupted; no prompt of the cancelled run starts after the cancel; the cancelled run ends Cancelled.
Repeated three times, alternating which run is cancelled and whose prompt runs at the cancel.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.objects import FlowRun
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Cancelling

pytestmark = pytest.mark.timeout(240)

REPO = Path(__file__).resolve().parents[2]

JOBS = 6
REPEATS = 3
FINAL = {"COMPLETED", "CANCELLED", "FAILED", "CRASHED"}


@dataclass
class Prompt:
    prompt_id: str
    flow_run_id: str
    number: float
    start: float | None  # worker time.time() of execution_start
    status: str  # success | interrupted | error


async def worker_history(http: httpx.AsyncClient) -> list[Prompt]:
    data: dict[str, Any] = (await http.get("/history")).json()
    prompts = []
    for prompt_id, entry in data.items():
        extra = entry["prompt"][3].get("reelforge", {})
        messages = entry["status"]["messages"]
        kinds = [m[0] for m in messages]
        start = next((m[1]["timestamp"] / 1000 for m in messages if m[0] == "execution_start"), None)
        status = "interrupted" if "execution_interrupted" in kinds else entry["status"]["status_str"]
        prompts.append(Prompt(prompt_id, extra.get("flow_run_id", ""), entry["prompt"][0], start, status))
    return prompts


async def running_prompt(http: httpx.AsyncClient) -> str | None:
    queue = (await http.get("/queue")).json()
    return str(queue["queue_running"][0][1]) if queue["queue_running"] else None


async def queue_owners(http: httpx.AsyncClient) -> tuple[list[str], list[tuple[float, str]]]:
    """(flow run ids of the running prompts, [(number, flow run id)] of the pending ones, sorted)."""
    queue = (await http.get("/queue")).json()

    def run_of(item: list[Any]) -> str:
        return str(item[3].get("reelforge", {}).get("flow_run_id", ""))

    running = [run_of(i) for i in queue["queue_running"]]
    pending = sorted((float(i[0]), run_of(i)) for i in queue["queue_pending"])
    return running, pending


async def wait_final(client: PrefectClient, ids: list[UUID], within: float) -> dict[UUID, tuple[FlowRun, float]]:
    done: dict[UUID, tuple[FlowRun, float]] = {}
    deadline = time.monotonic() + within
    while len(done) < len(ids):
        for fid in ids:
            if fid in done:
                continue
            run = await client.read_flow_run(fid)
            if run.state is not None and run.state.type.value in FINAL:
                done[fid] = (run, time.time())
        assert time.monotonic() < deadline, f"flow runs not final within {within} s: {set(ids) - set(done)}"
        await asyncio.sleep(0.2)
    return done


async def one_scenario(
    client: PrefectClient, http: httpx.AsyncClient, served: Any, out: Path, rep: int
) -> dict[str, float]:
    deployment = await client.read_deployment_by_name(served.deployment)
    runs = []
    for k in range(2):
        params = {"jobs": JOBS, "seed": 1000 * rep + 100 * k, "out_dir": str(out / f"rep{rep}-run{k}")}
        runs.append(await client.create_flow_run_from_deployment(deployment.id, parameters=params))
    victim, survivor = (runs[0], runs[1]) if rep % 2 == 0 else (runs[1], runs[0])
    vid, sid = str(victim.id), str(survivor.id)

    # Wait until both runs have prompts on the worker, the victim has finished `done` prompts, the prompt
    # running is the victim's (even reps: it is interrupted) or the survivor's (odd reps: it must not be), and
    # it has only just started: the cancel reaches the flow in ~0.1 s and its cleanup is done by ~0.35 s, so a
    # prompt boundary inside that window would let the worker pop the victim's next prompt before the delete
    # lands (it would then be interrupted, not prevented; asserted separately below).
    want_running, done = (vid, rep) if rep % 2 == 0 else (sid, rep)
    deadline = time.monotonic() + 90
    previous = await running_prompt(http)
    while True:
        current = await running_prompt(http)
        fresh = current is not None and current != previous
        previous = current
        running, pending = await queue_owners(http)
        history = await worker_history(http)
        seen = set(running) | {r for _, r in pending} | {p.flow_run_id for p in history}
        finished = sum(p.flow_run_id == vid and p.status == "success" for p in history)
        victim_pending = vid in {r for _, r in pending}
        moment = running == [want_running] and finished >= done and victim_pending and fresh
        if {vid, sid} <= seen and moment:
            break
        assert time.monotonic() < deadline, "never saw the wanted moment to cancel"
        await asyncio.sleep(0.05)

    cancel_at = time.time()
    await client.set_flow_run_state(victim.id, Cancelling(), force=True)

    # When do the victim's prompts leave the worker's queue?
    removed_at = None
    while removed_at is None and time.time() - cancel_at < 30:
        running, pending = await queue_owners(http)
        if vid not in running and vid not in {r for _, r in pending}:
            removed_at = time.time()
        else:
            await asyncio.sleep(0.05)

    final = await wait_final(client, [victim.id, survivor.id], 90)
    history = await worker_history(http)
    mine = [p for p in history if p.flow_run_id == vid]
    theirs = [p for p in history if p.flow_run_id == sid]
    scope = json.loads((out / f"rep{rep}-run{runs.index(victim)}" / "scope.json").read_text())

    v_state, v_final_at = final[victim.id]
    s_state, _ = final[survivor.id]
    late = [p for p in mine if p.start is not None and p.start > cancel_at]
    timings = {
        "signal_s": (scope["caught_at"] or float("nan")) - cancel_at,
        "cleanup_done_s": (scope["finished_at"] or float("nan")) - cancel_at,
        "removed_s": (removed_at or float("nan")) - cancel_at,
        "cancelled_s": v_final_at - cancel_at,
        "victim_prompts": len(mine),
        "victim_interrupted": sum(p.status == "interrupted" for p in mine),
        "late_starts": len(late),
    }
    print(f"\nrep {rep}: {timings} scope={scope['exception']} report={scope['report'] and scope['report']['workers']}")

    assert s_state.state is not None and s_state.state.type.value == "COMPLETED", s_state.state
    assert len(theirs) == JOBS and {p.status for p in theirs} == {"success"}, theirs  # zero collateral
    images = list((out / f"rep{rep}-run{runs.index(survivor)}" / "images").glob("*.png"))
    assert len(images) == JOBS, images
    assert v_state.state is not None and v_state.state.type.value == "CANCELLED", v_state.state
    # What cancellation guarantees: nothing of the run starts after its cleanup, and whatever the worker popped
    # before the cleanup reached it was interrupted (never recorded as done).
    assert scope["finished_at"] is not None
    assert all(p.status == "interrupted" and p.start < scope["finished_at"] for p in late), late
    # With the cancel placed just after a prompt boundary, nothing of the run starts after the cancel at all.
    assert not late, f"prompts of the cancelled run started after the cancel: {late} (cancel at {cancel_at})"
    assert removed_at is not None
    assert all(p.status in ("success", "interrupted") for p in mine), mine
    assert sum(p.status == "success" for p in mine) < JOBS
    assert scope["exception"] is not None and scope["report"] is not None
    # The on_cancellation hook ran in the serving process too (it finds nothing left: the flow body cleaned up).
    deadline = time.monotonic() + 15
    while f"cancel hook: flow run {vid}" not in served.log.read_text():
        assert time.monotonic() < deadline, "the on_cancellation hook did not report"
        await asyncio.sleep(0.2)
    return timings


async def test_cancel_one_deployed_run_the_other_completes(
    served_flow: Any, comfy_worker: Any, prefect_server: str, tmp_path: Path
) -> None:
    results = []
    with temporary_settings({PREFECT_API_URL: prefect_server}):
        async with get_client() as client, httpx.AsyncClient(base_url=comfy_worker.url, timeout=10) as http:
            for rep in range(REPEATS):
                results.append(await one_scenario(client, http, served_flow, tmp_path, rep))
    for i, r in enumerate(results):
        print(f"rep {i}: " + ", ".join(f"{k}={v:.2f}" for k, v in r.items()))


async def test_direct_call_ctrl_c_runs_the_same_cleanup(
    comfy_worker: Any, prefect_server: str, workdir: Path, tmp_path: Path
) -> None:
    """A flow called from Python cannot be cancelled through the API; Ctrl-C (SIGINT) in its process can."""
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_server,
        "PREFECT_HOME": str(workdir / "prefect-home"),
        "REELFORGE_COMFY_URLS": comfy_worker.url,
        "PYTHONPATH": str(REPO),
    }
    out = tmp_path / "direct"
    log = tmp_path / "direct.log"
    async with httpx.AsyncClient(base_url=comfy_worker.url, timeout=10) as http:
        known = {p.flow_run_id for p in await worker_history(http)}
        with log.open("wb") as sink:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "tests/deployments/served_flow.py", "--direct", str(out), "7000",
                cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT,
            )
        try:
            deadline = time.monotonic() + 90
            previous = await running_prompt(http)
            while True:
                current = await running_prompt(http)
                fresh, previous = current is not None and current != previous, current  # just after a boundary
                running, pending = await queue_owners(http)
                history = await worker_history(http)
                mine = {p.flow_run_id for p in history if p.status == "success"} - known
                if fresh and running and running[0] not in known and pending and mine:
                    run_id = running[0]
                    break
                assert proc.returncode is None, log.read_text()[-2000:]
                assert time.monotonic() < deadline, "the direct run never got going"
                await asyncio.sleep(0.05)
            interrupt_at = time.time()
            proc.send_signal(signal.SIGINT)
            code = await asyncio.wait_for(proc.wait(), 60)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        output = log.read_text(errors="replace")
        history = await worker_history(http)
        running, pending = await queue_owners(http)
    scope = json.loads((out / "scope.json").read_text())
    ours = [p for p in history if p.flow_run_id == run_id]
    late = [p for p in ours if p.start is not None and p.start > interrupt_at]
    print(f"\ndirect: exit {code}, scope={scope['exception']} signal_s={scope['caught_at'] - interrupt_at:.2f} "
          f"cleanup_done_s={scope['finished_at'] - interrupt_at:.2f} report={scope['report']['workers']}")
    with temporary_settings({PREFECT_API_URL: prefect_server}):
        async with get_client() as client:
            run = await client.read_flow_run(UUID(run_id))
    print(f"direct run's state after Ctrl-C: {run.state.type.value if run.state else None}")
    assert code != 0, output[-2000:]
    assert scope["exception"] in ("CancelledError", "KeyboardInterrupt"), scope
    assert scope["report"] is not None and all(not w["remaining"] for w in scope["report"]["workers"])
    assert run_id not in running and run_id not in {r for _, r in pending}
    assert not late, late
    assert all(p.status in ("success", "interrupted") for p in ours)
