"""cancel_owned, WorkerPool.stop_dispatch and cancel_scope against real preview workers on loopback."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from reelforge.comfy.cancel import cancel_owned
from reelforge.comfy.client import ComfyClient
from reelforge.comfy.errors import PromptInterrupted
from reelforge.comfy.pool import DispatchStopped, WorkerPool
from reelforge.comfy.types import JobOwner
from reelforge.preview.server import PreviewWorker
from tasks.cancellation import cancel_scope

pytestmark = pytest.mark.timeout(60)


def graph(seed: int) -> dict[str, dict[str, Any]]:
    """Two executed nodes; a distinct colour per seed so that nothing is served from the worker's cache."""
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": seed}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": f"c{seed}"}},
    }


def owner(run: str, job: str) -> JobOwner:
    return JobOwner(job_id=job, flow_run_id=run, task_run_id=f"task-{job}")


@pytest.fixture
async def worker(tmp_path: Path) -> AsyncIterator[PreviewWorker]:
    w = PreviewWorker(tmp_path / "w", latency="fixed:1")
    await w.start()
    yield w
    await w.stop()


@pytest.fixture
async def client(worker: PreviewWorker) -> AsyncIterator[ComfyClient]:
    async with ComfyClient(worker.url, name="w", poll_interval=0.2, request_timeout=5) as c:
        yield c


async def wait_until(predicate: Callable[[], Any], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def running_owner(client: ComfyClient) -> str | None:
    queue = await client.get_queue()
    owners = [i.owner for i in queue.running]
    return owners[0].flow_run_id if owners and owners[0] else None


async def history(client: ComfyClient) -> dict[str, Any]:
    data: dict[str, Any] = (await client._get_json("/history")) or {}
    return data


def status_of(entry: dict[str, Any]) -> str:
    messages = [m[0] for m in entry["status"]["messages"]]
    return "interrupted" if "execution_interrupted" in messages else entry["status"]["status_str"]


async def test_cancel_owned_removes_one_runs_prompts_and_leaves_the_other_run_alone(client: ComfyClient) -> None:
    ids = {
        name: await client.submit(graph(i + 1), owner=owner(name[0], name))
        for i, name in enumerate(["A1", "B1", "A2", "B2", "A3"])
    }

    async def a_running() -> bool:
        return await running_owner(client) == "A"

    await wait_until(a_running, 5, "A1 running")
    report = await cancel_owned([client], "A")
    assert report.clean and not report.unreachable
    assert report.interrupted == [ids["A1"]]
    assert sorted(report.deleted) == sorted([ids["A2"], ids["A3"]])
    assert report.workers[0].worker == "w"

    results = await asyncio.gather(client.wait(ids["B1"], timeout=15), client.wait(ids["B2"], timeout=15))
    assert all(r.outputs for r in results)
    with pytest.raises(PromptInterrupted):
        await client.wait(ids["A1"], timeout=5)
    done = await history(client)
    assert {status_of(done[ids[n]]) for n in ("B1", "B2")} == {"success"}
    assert status_of(done[ids["A1"]]) == "interrupted"
    assert ids["A2"] not in done and ids["A3"] not in done  # deleted: never started
    queue = await client.get_queue()
    assert not queue.running and not queue.pending


async def test_cancel_while_another_runs_prompt_is_running_interrupts_nothing(client: ComfyClient) -> None:
    b1 = await client.submit(graph(11), owner=owner("B", "B1"))
    a1 = await client.submit(graph(12), owner=owner("A", "A1"))
    a2 = await client.submit(graph(13), owner=owner("A", "A2"))

    async def b_running() -> bool:
        return await running_owner(client) == "B"

    await wait_until(b_running, 5, "B1 running")
    report = await cancel_owned([client], "A")
    assert report.interrupted == [] and sorted(report.deleted) == sorted([a1, a2])
    result = await client.wait(b1, timeout=10)
    assert result.outputs
    done = await history(client)
    assert status_of(done[b1]) == "success" and a1 not in done and a2 not in done


async def test_unreachable_worker_is_reported_not_raised(client: ComfyClient, worker: PreviewWorker) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    a1 = await client.submit(graph(21), owner=owner("A", "A1"))
    a2 = await client.submit(graph(22), owner=owner("A", "A2"))
    async with ComfyClient(f"http://127.0.0.1:{port}", name="down", request_timeout=2) as down:
        report = await cancel_owned([down, client], "A")
    by_name = {w.worker: w for w in report.workers}
    assert by_name["down"].unreachable and by_name["down"].error
    assert report.unreachable == ["down"]
    assert not report.clean
    assert by_name["w"].clean and set(by_name["w"].deleted + by_name["w"].interrupted) == {a1, a2}


async def test_prompts_without_a_flow_run_id_are_never_matched(client: ComfyClient) -> None:
    with pytest.raises(ValueError):
        await cancel_owned([client], "")
    other = await client.submit(graph(31), owner=JobOwner(job_id="plain"))
    report = await cancel_owned([client], "A")
    assert report.deleted == [] and report.interrupted == []
    assert (await client.wait(other, timeout=10)).outputs


async def test_stop_dispatch_fails_waiting_and_later_jobs(client: ComfyClient) -> None:
    async with WorkerPool([client], queue_depth=0) as pool:
        jobs = [asyncio.create_task(pool.run(graph(40 + i), owner=owner("A", f"j{i}"))) for i in range(3)]

        async def a_running() -> bool:
            return await running_owner(client) == "A"

        await wait_until(a_running, 5, "the first job running")
        pool.stop_dispatch("test")
        assert pool.stopped and await pool.submissions_settled(1.0)
        first, *waiting = await asyncio.gather(*jobs, return_exceptions=True)
        assert not isinstance(first, BaseException) and first.outputs  # not cancelled: it runs to its end
        assert all(isinstance(e, DispatchStopped) for e in waiting), waiting
        with pytest.raises(DispatchStopped):
            await pool.run(graph(49), owner=owner("A", "late"))


async def test_cancel_scope_on_task_cancel_stops_and_removes_this_runs_prompts(client: ComfyClient) -> None:
    """What a Python caller gets: cancelling the task (or Ctrl-C) runs the same cleanup, then re-raises."""
    other = await client.submit(graph(50), owner=owner("B", "B1"))
    scopes = []

    async def body() -> None:
        async with WorkerPool([client], queue_depth=1) as pool, cancel_scope(pool, flow_run_id="A") as scope:
            scopes.append(scope)
            await asyncio.gather(*(pool.run(graph(51 + i), owner=owner("A", f"a{i}")) for i in range(4)))

    task = asyncio.create_task(body())

    async def a_running() -> bool:
        return await running_owner(client) == "A"

    await wait_until(a_running, 10, "a job of A running")
    cancelled_at = time.time()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    scope = scopes[0]
    assert isinstance(scope.exception, asyncio.CancelledError)
    assert scope.report is not None and scope.report.clean
    assert len(scope.report.interrupted) == 1
    assert (await client.wait(other, timeout=10)).outputs
    await asyncio.sleep(1.2)  # anything of A still queued would have started by now
    done = await history(client)
    a_entries = [e for e in done.values() if e["prompt"][3]["reelforge"]["flow_run_id"] == "A"]
    starts = [m[1]["timestamp"] / 1000 for e in a_entries for m in e["status"]["messages"] if m[0] == "execution_start"]
    assert starts and max(starts) < cancelled_at
    assert {status_of(e) for e in a_entries} == {"interrupted"}
    assert status_of(done[other]) == "success"


async def test_cleanup_runs_for_plain_errors_too(client: ComfyClient) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        async with WorkerPool([client], queue_depth=1) as pool, cancel_scope(pool, flow_run_id="A") as scope:
            await client.submit(graph(60), owner=owner("A", "x"))
            raise RuntimeError("boom")
    assert pool.stopped
    assert scope.report is not None and scope.report.clean
    assert len(scope.report.deleted + scope.report.interrupted) == 1


async def test_a_running_prompt_that_finishes_first_is_reported_finished_and_never_interrupted() -> None:
    """cancel uses ComfyClient.remove: a prompt that ended before its interrupt is not hit, nor anyone else's."""
    import json

    import httpx

    def item(number: int, pid: str, run: str) -> list[Any]:
        return [number, pid, {}, {"reelforge": {"job_id": pid, "flow_run_id": run}}, ["2"]]

    # What /queue shows, read after read: A1 (ours) runs; by the time remove() looks, it has finished.
    queues = [
        {"queue_running": [item(1, "A1", "A")], "queue_pending": [item(2, "B1", "B")]},
        {"queue_running": [item(2, "B1", "B")], "queue_pending": []},
    ]
    posts: list[tuple[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "POST":
            posts.append((path, json.loads(request.content or b"null")))
            return httpx.Response(200)
        if path == "/queue":
            return httpx.Response(200, json=queues.pop(0) if len(queues) > 1 else queues[0])
        if path == "/history/A1":
            status = {"status_str": "success", "completed": True, "messages": []}
            out = {"2": {"images": [{"filename": "a1_00001_.png", "subfolder": "", "type": "output"}]}}
            return httpx.Response(200, json={"A1": {"prompt": [], "outputs": out, "status": status}})
        return httpx.Response(200, json={})

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    async with ComfyClient("http://w.test:8188", http=http, name="w", use_websocket=False) as mocked:
        report = await cancel_owned([mocked], "A", interval_s=0.01)
    assert report.workers[0].finished == ["A1"]
    assert report.interrupted == [] and report.deleted == [] and report.clean
    assert posts == []  # no delete, no interrupt: A1 had ended and B1 is somebody else's
