"""ComfyClient against the real preview worker on 127.0.0.1 (protocol of ComfyUI 0.3.64)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from reelforge.comfy.client import ComfyClient
from reelforge.comfy.errors import (
    ExecutionError,
    JobDeadlineExceeded,
    OutputError,
    PromptInterrupted,
    PromptLost,
    PromptValidationError,
    WorkerServerError,
    WorkerUnavailable,
)
from reelforge.comfy.types import Graph, JobOwner, Progress
from reelforge.preview.server import PreviewWorker

MakeWorker = Callable[..., Awaitable[PreviewWorker]]
TOKEN = "tok-5f1e9a-do-not-leak"

INVERT: Graph = {
    "1": {
        "class_type": "EmptyImage",
        "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": 3368601},
    },
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "probeA"}},
}


def chain(length: int, prefix: str, color: int = 0) -> Graph:
    """EmptyImage -> (length-2) x ImageInvert -> SaveImage (ids 1..length)."""
    graph: Graph = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": color},
        }
    }
    for i in range(2, length):
        graph[str(i)] = {"class_type": "ImageInvert", "inputs": {"image": [str(i - 1), 0]}}
    graph[str(length)] = {
        "class_type": "SaveImage",
        "inputs": {"images": [str(length - 1), 0], "filename_prefix": prefix},
    }
    return graph


class Recorder(httpx.AsyncBaseTransport):
    """Forwards to a real transport, records requests, and can lose the response of chosen requests."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.requests: list[httpx.Request] = []
        # (method, path) -> "after" (forward, then lose the answer) | "before" (lose it without sending)
        self.lose: dict[tuple[str, str], str] = {}
        self.fake_length: int | None = None  # added to /view Content-Length

    def count(self, method: str, path: str) -> int:
        return sum(1 for r in self.requests if r.method == method and r.url.path == path)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        mode = self.lose.pop((request.method, request.url.path), None)
        if mode == "before":
            raise httpx.ReadTimeout("simulated lost response", request=request)
        response = await self.inner.handle_async_request(request)
        if mode == "after":
            await response.aread()
            await response.aclose()
            raise httpx.ReadTimeout("simulated lost response", request=request)
        if self.fake_length is not None and request.url.path == "/view":
            size = int(response.headers["content-length"])
            response.headers["content-length"] = str(size + self.fake_length)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    rec = Recorder()
    yield rec
    await rec.aclose()


async def history_all(worker: PreviewWorker) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        data: dict[str, Any] = (await http.get(worker.url + "/history")).json()
        return data


def runs_of(worker: PreviewWorker, prompt_id: str) -> int:
    return sum(1 for pid, _, _ in worker.stats.intervals if pid == prompt_id)


async def until(predicate: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while not await predicate():
        assert loop.time() < end, "condition not reached in time"
        await asyncio.sleep(0.05)


async def running(client: ComfyClient, prompt_id: str) -> None:
    async def check() -> bool:
        return (await client.get_queue()).position(prompt_id) == "running"

    await until(check)


# ---------------------------------------------------------------------------------------------- success


async def test_run_downloads_png_with_metadata(preview_worker: PreviewWorker, tmp_path: Path) -> None:
    async with ComfyClient(preview_worker.url, token=TOKEN) as client:
        owner = JobOwner(job_id="job-42", flow_run_id="fr-1")
        result = await client.run(INVERT, owner=owner, extra_pnginfo={"workflow": {"note": "ui"}}, timeout=20)
        assert result.worker == client.name and result.prompt_id
        assert result.executed_nodes == ["1", "2", "3"] and result.cached_nodes == []
        assert result.started_ms is not None and result.finished_ms is not None
        assert result.finished_ms >= result.started_ms
        (out,) = result.outputs
        assert out.kind == "image" and out.node_id == "3"
        assert out.filename.startswith(f"probeA_{result.prompt_id[:12]}_")  # stamped prefix
        path = await client.download(out, tmp_path / "dl")
        assert path.read_bytes() == (preview_worker.dirs.output / out.filename).read_bytes()
        assert not [p for p in path.parent.iterdir() if p.name.endswith(".part")]
        with Image.open(path) as img:
            assert img.size == (64, 48)
            assert img.convert("RGB").getpixel((0, 0)) == (204, 153, 101)
            text = img.text  # type: ignore[attr-defined]
        stamp = json.loads(text["reelforge"])
        assert stamp["job_id"] == "job-42" and stamp["prompt_id"] == result.prompt_id
        assert json.loads(text["workflow"]) == {"note": "ui"}
        # The worker's own queue record says whose prompt it was.
        entry = await client.get_history(result.prompt_id)
        assert entry is not None and entry["prompt"][3]["reelforge"] == {
            "job_id": "job-42",
            "flow_run_id": "fr-1",
        }
        # Downloading again keeps the one file; a different file under that name is never overwritten.
        assert await client.download(out, tmp_path / "dl") == path
        other = tmp_path / "dl2" / out.filename
        other.parent.mkdir()
        other.write_bytes(b"not the png")
        placed = await client.download(out, other.parent)
        assert placed != other and other.read_bytes() == b"not the png"
        assert placed.read_bytes() == path.read_bytes()
        # The digest comes with the download: computed while the bytes arrived.
        fetched = await client.download_file(out, tmp_path / "dl3")
        assert fetched.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        assert fetched.size == path.stat().st_size


async def test_info_endpoints(preview_worker: PreviewWorker) -> None:
    async with ComfyClient(preview_worker.url) as client:
        info = await client.object_info()
        assert "SaveImage" in info and await client.object_info() is info  # cached
        assert "checkpoints" in await client.models()
        assert await client.models("loras") == []
        assert "system" in await client.system_stats()
        assert (await client.features())["supports_preview_metadata"] is True


# ---------------------------------------------------------------------------------------------- validation


def _with(node: str, **changes: Any) -> Graph:
    graph = json.loads(json.dumps(INVERT))
    graph[node]["inputs"].update(changes)
    return dict(graph)


VALIDATION_CASES: list[tuple[str, Graph, str, str, str | None]] = [
    (
        "unknown_class",
        {**INVERT, "2": {"class_type": "NoSuchNode", "inputs": {"image": ["1", 0]}}},
        "invalid_prompt",
        "2",
        None,
    ),
    (
        "missing_input",
        {**INVERT, "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "batch_size": 1, "color": 0}}},
        "required_input_missing",
        "1",
        "height",
    ),
    ("bad_type", _with("1", width="abc"), "invalid_input_type", "1", "width"),
    ("too_small", _with("1", width=0), "value_smaller_than_min", "1", "width"),
    ("too_big", _with("1", height=100000), "value_bigger_than_max", "1", "height"),
    (
        "not_in_list",
        {
            **INVERT,
            "2": {
                "class_type": "ImageScale",
                "inputs": {
                    "image": ["1", 0],
                    "upscale_method": "nope",
                    "width": 8,
                    "height": 8,
                    "crop": "disabled",
                },
            },
        },
        "value_not_in_list",
        "2",
        "upscale_method",
    ),
    (
        "return_type_mismatch",
        {
            "1": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 8, "height": 8}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "m"}},
        },
        "return_type_mismatch",
        "3",
        "images",
    ),
    ("bad_link", _with("3", images=["2", 0, 5]), "bad_linked_input", "3", "images"),
    ("link_to_absent_node", _with("3", images=["99", 0]), "exception_during_validation", "3", None),
]


@pytest.mark.parametrize(("case", "graph", "error_type", "node_id", "input_name"), VALIDATION_CASES)
async def test_validation_errors(
    preview_worker: PreviewWorker,
    case: str,
    graph: Graph,
    error_type: str,
    node_id: str,
    input_name: str | None,
) -> None:
    async with ComfyClient(preview_worker.url, token=TOKEN) as client:
        with pytest.raises(PromptValidationError) as info:
            await client.submit(graph, prompt_id=f"val-{case}")
    exc = info.value
    assert exc.prompt_id == f"val-{case}" and exc.worker == client.name
    matching = [e for e in exc.node_errors if e.type == error_type and e.node_id == node_id]
    assert matching, (case, exc.node_errors, str(exc))
    if input_name is not None:
        assert matching[0].input_name == input_name
        assert f"input '{input_name}'" in str(exc)
    assert f"node {node_id}" in str(exc)
    assert TOKEN not in str(exc)
    assert runs_of(preview_worker, f"val-{case}") == 0


async def test_accepted_with_node_errors_is_removed_and_never_runs(make_worker: MakeWorker) -> None:
    worker = await make_worker(latency="fixed:1.5")
    partial: Graph = {
        **chain(3, "good", color=5),  # nothing cached from the blocker: the interrupt lands at node 2
        "4": {"class_type": "EmptyImage", "inputs": {"width": 0, "height": 8, "batch_size": 1, "color": 0}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "bad"}},
    }
    async with ComfyClient(worker.url) as client:
        # Busy worker: the partial prompt is still pending when it is taken back.
        blocker = await client.submit(chain(3, "blocker"))
        with pytest.raises(PromptValidationError) as info:
            await client.submit(partial, prompt_id="partial-pending")
        assert [(e.node_id, e.type) for e in info.value.node_errors] == [("4", "value_smaller_than_min")]
        assert "deleted" in str(info.value)
        removal = info.value.removal
        assert removal is not None and (removal.found, removal.action) == ("pending", "deleted")
        assert info.value.orphaned_outputs == []
        assert (await client.get_queue()).position("partial-pending") is None
        await client.wait(blocker, timeout=10)
        # Idle worker: it already started, so it is interrupted before its outputs are written.
        with pytest.raises(PromptValidationError) as idle_info:
            await client.submit(partial, prompt_id="partial-idle")
        removal = idle_info.value.removal
        assert removal is not None and (removal.found, removal.action) == ("running", "interrupted")
        assert removal.ended == "interrupted" and idle_info.value.orphaned_outputs == []

        async def idle_settled() -> bool:
            entry = await client.get_history("partial-idle")
            return entry is None or entry.get("status", {}).get("status_str") == "error"

        await until(idle_settled)
        await asyncio.sleep(0.3)
        history = await history_all(worker)
        assert "partial-pending" not in history
        idle = history.get("partial-idle")
        assert idle is None or (idle["status"]["status_str"] == "error" and idle["outputs"] == {})
        assert runs_of(worker, "partial-pending") == 0
        assert not list(worker.dirs.output.glob("good_partial*"))


# ---------------------------------------------------------------------------------------------- runtime


async def test_runtime_error_is_execution_error(preview_worker: PreviewWorker) -> None:
    graph: Graph = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "ImageToMask", "inputs": {"image": ["1", 0], "channel": "alpha"}},
        "3": {"class_type": "MaskToImage", "inputs": {"mask": ["2", 0]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "err"}},
    }
    async with ComfyClient(preview_worker.url) as client:
        with pytest.raises(ExecutionError) as info:
            await client.run(graph, prompt_id="runtime-err", timeout=10)
    exc = info.value
    assert (exc.node_id, exc.node_type, exc.exception_type) == ("2", "ImageToMask", "IndexError")
    assert exc.prompt_id == "runtime-err" and "out of bounds" in exc.exception_message
    assert "ImageToMask" in str(exc) and "IndexError" in str(exc)


async def test_interrupt_running_refuses_pending_and_delete_removes(make_worker: MakeWorker) -> None:
    worker = await make_worker(latency="fixed:4")
    async with ComfyClient(worker.url) as client:
        p1 = await client.submit(chain(6, "long"))
        p2 = await client.submit(chain(3, "second", color=1))
        await running(client, p1)
        queue = await client.get_queue()
        assert [i.prompt_id for i in queue.pending] == [p2]
        assert await client.interrupt(p2) is False  # pending: refused
        assert (await client.get_queue()).position(p1) == "running"
        await client.delete_pending([p2])
        assert (await client.get_queue()).position(p2) is None
        assert await client.interrupt(p1) is True
        with pytest.raises(PromptInterrupted) as info:
            await client.wait(p1, timeout=10)
        assert info.value.node_id is not None
        history = await history_all(worker)
        assert history[p1]["status"]["status_str"] == "error" and p2 not in history


async def test_deadline_interrupts_running_and_deletes_pending(make_worker: MakeWorker) -> None:
    worker = await make_worker(latency="fixed:4")
    async with ComfyClient(worker.url, poll_interval=0.2) as client:
        p1 = await client.submit(chain(5, "slow"))
        p2 = await client.submit(chain(3, "queued", color=1))
        await running(client, p1)
        with pytest.raises(JobDeadlineExceeded) as pending_info:
            await client.wait(p2, timeout=0.3)
        assert "deleted" in str(pending_info.value)
        removal = pending_info.value.removal
        assert removal is not None and (removal.found, removal.action) == ("pending", "deleted")
        assert (await client.get_queue()).position(p2) is None
        with pytest.raises(JobDeadlineExceeded) as running_info:
            await client.wait(p1, timeout=0.3)
        assert "interrupt" in str(running_info.value)
        removal = running_info.value.removal
        assert removal is not None and (removal.found, removal.action) == ("running", "interrupted")

        async def interrupted() -> bool:
            entry = await client.get_history(p1)
            return entry is not None and "status" in entry

        await until(interrupted, within=5)
        entry = await client.get_history(p1)
        assert entry is not None and entry["status"]["status_str"] == "error"
        assert runs_of(worker, p2) == 0


async def test_progress_is_monotonic_and_ends_at_one(make_worker: MakeWorker) -> None:
    worker = await make_worker(latency="fixed:1")
    seen: list[Progress] = []
    async with ComfyClient(worker.url) as client:
        result = await client.run(chain(5, "prog"), on_progress=seen.append, timeout=10)
    fractions = [p.fraction for p in seen]
    assert len(seen) >= 5, fractions
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and fractions[0] < 0.5
    assert all(f < 1.0 for f in fractions[:-1])
    assert {p.node for p in seen if p.node} == {"1", "2", "3", "4", "5"}
    assert all(p.prompt_id == result.prompt_id for p in seen)
    assert seen[-1].elapsed_s == pytest.approx(result.gpu_seconds) and result.gpu_seconds > 0.5


# ---------------------------------------------------------------------------------------------- faults


async def test_dropped_websocket_still_completes_once(make_worker: MakeWorker) -> None:
    worker = await make_worker(latency="fixed:2")
    async with ComfyClient(worker.url, poll_interval=0.3) as client:
        seen: list[Progress] = []
        task = asyncio.create_task(client.run(chain(4, "drop"), on_progress=seen.append, timeout=15))

        async def started() -> bool:
            return bool(seen)

        await until(started)
        first_id = client.client_id
        worker.faults.drop_ws()
        result = await task
        assert result.outputs and result.outputs[0].filename.startswith("drop_")
        assert runs_of(worker, result.prompt_id) == 1
        history = await history_all(worker)
        assert list(history) == [result.prompt_id]

        async def reconnected() -> bool:
            return client.websocket.connected and client.client_id != first_id

        await until(reconnected)  # a fresh clientId, never the old one
        again = await client.run(chain(3, "after-drop"), timeout=10)  # events flow on the new socket
        assert runs_of(worker, again.prompt_id) == 1


async def test_worker_restart_mid_job_is_prompt_lost(make_worker: MakeWorker) -> None:
    worker = await make_worker(latency="fixed:3")
    async with ComfyClient(worker.url, poll_interval=0.2, unreachable_grace=8) as client:
        pid = await client.submit(chain(4, "lost"))
        task = asyncio.create_task(client.wait(pid, timeout=20))
        await running(client, pid)
        await worker.crash()
        await asyncio.sleep(0.8)
        assert not task.done()  # unreachable: still trying
        await worker.restart()
        with pytest.raises(PromptLost) as info:
            await task
        assert info.value.prompt_id == pid


async def test_unreachable_worker_gives_up_after_grace(make_worker: MakeWorker) -> None:
    worker = await make_worker(latency="fixed:3")
    async with ComfyClient(worker.url, poll_interval=0.2, unreachable_grace=1.0, token=TOKEN) as client:
        pid = await client.submit(chain(3, "gone"))
        await running(client, pid)
        await worker.crash()
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(WorkerUnavailable) as info:
            await client.wait(pid, timeout=20)
        assert loop.time() - start < 5
        assert info.value.prompt_id == pid and TOKEN not in str(info.value)
        with pytest.raises(WorkerUnavailable) as submit_info:
            await client.submit(INVERT)
        assert TOKEN not in str(submit_info.value) and TOKEN not in repr(client)


@pytest.mark.parametrize("mode", ["after", "before"])
async def test_lost_submit_response_never_double_submits(
    preview_worker: PreviewWorker, recorder: Recorder, mode: str
) -> None:
    async with (
        httpx.AsyncClient(transport=recorder) as http,
        ComfyClient(preview_worker.url, http=http, token=TOKEN) as client,
    ):
        recorder.lose[("POST", "/prompt")] = mode
        pid = await client.submit(chain(3, f"lost-{mode}"))
        result = await client.wait(pid, timeout=10)
        assert result.outputs
        # "after": the worker got it, the answer was lost -> found by lookup, not posted again.
        assert recorder.count("POST", "/prompt") == (1 if mode == "after" else 2)
        assert runs_of(preview_worker, pid) == 1
        assert list(await history_all(preview_worker)) == [pid]
        assert (await client.get_queue()).position(pid) is None
        assert {r.headers.get("authorization") for r in recorder.requests} == {f"Bearer {TOKEN}"}


async def test_server_errors_map_to_worker_server_error(preview_worker: PreviewWorker) -> None:
    async with ComfyClient(preview_worker.url) as client:
        preview_worker.faults.http500_next(1)
        with pytest.raises(WorkerServerError) as info:
            await client.system_stats()
        assert info.value.status == 500
        assert "system" in await client.system_stats()


# ---------------------------------------------------------------------------------------------- files


def _png(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 12), color).save(buf, format="PNG")
    return buf.getvalue()


async def test_upload_dedup_and_use(
    preview_worker: PreviewWorker, recorder: Recorder, tmp_path: Path
) -> None:
    data = _png((10, 200, 30))
    src = tmp_path / "face.PNG"
    src.write_bytes(data)
    async with (
        httpx.AsyncClient(transport=recorder) as http,
        ComfyClient(preview_worker.url, http=http) as client,
    ):
        first = await client.upload(src, filename="face.PNG")
        second = await client.upload(data, filename="other-name.png")
        assert first == second and first.name.endswith(".png") and len(first.name) == 16 + 4
        assert recorder.count("POST", "/upload/image") == 1  # the repeat is a no-op
        sub = await client.upload(data, filename="face.png", subfolder="refs")
        assert sub.ref == f"refs/{first.name}"
    async with ComfyClient(preview_worker.url) as fresh:  # another client: the server's hash compare
        again = await fresh.upload(data, filename="x.png")
        assert again.name == first.name
        assert [p.name for p in preview_worker.dirs.input.iterdir() if p.is_file()] == [first.name]
        graph: Graph = {
            "1": {"class_type": "LoadImage", "inputs": {"image": first.ref}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "loaded"}},
        }
        result = await fresh.run(graph, timeout=10)
        path = await fresh.download(result.outputs[0], tmp_path / "out")
        with Image.open(path) as img:
            assert img.size == (16, 12) and img.convert("RGB").getpixel((3, 3)) == (10, 200, 30)


async def test_download_size_checks(
    preview_worker: PreviewWorker, recorder: Recorder, tmp_path: Path
) -> None:
    async with (
        httpx.AsyncClient(transport=recorder) as http,
        ComfyClient(preview_worker.url, http=http) as client,
    ):
        result = await client.run(INVERT, timeout=10)
        out = result.outputs[0]
        size = (preview_worker.dirs.output / out.filename).stat().st_size
        dest = tmp_path / "dl"
        with pytest.raises(OutputError, match="exceed"):
            await client.download(out, dest, max_bytes=size - 1)
        recorder.fake_length = 7  # the body is shorter than the header promised
        with pytest.raises(OutputError, match="Content-Length"):
            await client.download(out, dest)
        recorder.fake_length = None
        assert list(dest.iterdir()) == []  # nothing partial left behind
        path = await client.download(out, dest, max_bytes=size)
        assert path.stat().st_size == size
