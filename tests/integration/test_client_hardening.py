"""ComfyClient hardening: what real ComfyUI does that the happy path does not show.

Against the preview worker on 127.0.0.1 where it can produce the situation; otherwise against a small aiohttp
server or an httpx MockTransport answering with the payloads of shared/reference/comfyui-api.md.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from reelforge.comfy import client as client_module
from reelforge.comfy.client import ComfyClient
from reelforge.comfy.errors import (
    PermanentComfyError,
    PromptDeleted,
    PromptInterrupted,
    PromptLost,
    PromptValidationError,
    ProtocolError,
    RequestRejected,
    TransientComfyError,
    WorkerResourceError,
    WorkerServerError,
)
from reelforge.comfy.types import Graph, Progress
from reelforge.preview.server import PreviewWorker

pytestmark = pytest.mark.timeout(60)

MakeWorker = Callable[..., Awaitable[PreviewWorker]]


def chain(length: int, prefix: str, color: int = 0) -> Graph:
    """EmptyImage -> (length-2) x ImageInvert -> SaveImage (ids 1..length)."""
    graph: Graph = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": color}}
    }
    for i in range(2, length):
        graph[str(i)] = {"class_type": "ImageInvert", "inputs": {"image": [str(i - 1), 0]}}
    graph[str(length)] = {
        "class_type": "SaveImage",
        "inputs": {"images": [str(length - 1), 0], "filename_prefix": prefix},
    }
    return graph


def partial(color: int) -> Graph:
    """One output that validates (nodes 1-3) and one that does not (width 0): ComfyUI answers 200 + node_errors."""
    return {
        **chain(3, "good", color=color),
        "4": {"class_type": "EmptyImage", "inputs": {"width": 0, "height": 8, "batch_size": 1, "color": 0}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "bad"}},
    }


# c.4: the 200 answer for one good and one bad output.
NODE_ERRORS_200: dict[str, Any] = {
    "number": 27,
    "node_errors": {
        "4": {
            "errors": [
                {
                    "type": "value_smaller_than_min",
                    "message": "Value 0 smaller than min of 1",
                    "details": "width",
                    "extra_info": {"input_name": "width"},
                }
            ],
            "dependent_outputs": ["5"],
            "class_type": "EmptyImage",
        }
    },
}


def history_entry(
    prompt_id: str, graph: Graph, *, outputs: dict[str, Any], end: tuple[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """A history entry shaped like c.2 (success) or, with ``end``, an error / interrupt (a.5, c.4)."""
    start = ["execution_start", {"prompt_id": prompt_id, "timestamp": 1795219328374}]
    cached = ["execution_cached", {"nodes": [], "prompt_id": prompt_id, "timestamp": 1795219328385}]
    if end is None:
        last: list[Any] = ["execution_success", {"prompt_id": prompt_id, "timestamp": 1795219328399}]
        status = {"status_str": "success", "completed": True, "messages": [start, cached, last]}
    else:
        last = [end[0], {"prompt_id": prompt_id, **end[1], "timestamp": 1795219328399}]
        status = {"status_str": "error", "completed": False, "messages": [start, cached, last]}
    return {
        "prompt": [0, prompt_id, graph, {"client_id": "x"}, [n for n in graph if "Save" in graph[n]["class_type"]]],
        "outputs": outputs,
        "status": status,
        "meta": {},
    }


def mock_client(handler: Callable[[httpx.Request], httpx.Response], **kw: Any) -> ComfyClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return ComfyClient("http://w.test:8188", http=http, use_websocket=False, name="w", **kw)


async def until(predicate: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while not await predicate():
        assert loop.time() < end, "condition not reached in time"
        await asyncio.sleep(0.02)


async def position(client: ComfyClient, prompt_id: str) -> str | None:
    return (await client.get_queue()).position(prompt_id)


async def delete_as_somebody_else(url: str, prompt_id: str) -> None:
    """Another user of the worker (ComfyUI has no ownership check) deletes our pending prompt."""
    async with httpx.AsyncClient() as other:
        (await other.post(url + "/queue", json={"delete": [prompt_id]})).raise_for_status()


# ------------------------------------------------------------------------------------ item 1: node_errors


async def test_node_errors_on_an_idle_worker_lists_the_files_it_wrote(preview_worker: PreviewWorker) -> None:
    """Real ComfyUI runs the valid outputs at once: whatever the timing, every file written is reported."""
    async with ComfyClient(preview_worker.url) as client:
        for color in range(3):
            pid = f"partial-idle-{color}"
            before = set(preview_worker.dirs.output.glob("good_*"))
            with pytest.raises(PromptValidationError) as info:
                await client.submit(partial(color), prompt_id=pid)
            exc = info.value
            assert [(e.node_id, e.type) for e in exc.node_errors] == [("4", "value_smaller_than_min")]
            removal = exc.removal
            assert removal is not None and removal.prompt_id == pid and removal.worker == client.name
            assert removal.found in ("running", "finished") and removal.ended is not None
            written = sorted(p.name for p in set(preview_worker.dirs.output.glob("good_*")) - before)
            assert sorted(o.filename for o in exc.orphaned_outputs) == written  # nothing silently orphaned
            if removal.ended == "success":
                assert written and all(o.node_id == "3" for o in exc.orphaned_outputs)
                assert written[0] in str(exc)
            assert (await client.get_queue()).position(pid) is None


async def test_node_errors_prompt_that_already_finished_is_reported_finished() -> None:
    graph = partial(1)
    pid = "da4ce7a8-0000"
    out = {"3": {"images": [{"filename": "good_da4ce7a80000_00001_.png", "subfolder": "", "type": "output"}]}}
    requests: list[tuple[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append((request.method, request.url.path))
        if request.url.path == "/prompt":
            return httpx.Response(200, json={"prompt_id": pid, **NODE_ERRORS_200})
        if request.url.path == "/queue":
            return httpx.Response(200, json={"queue_running": [], "queue_pending": []})
        if request.url.path == f"/history/{pid}":
            return httpx.Response(200, json={pid: history_entry(pid, graph, outputs=out)})
        return httpx.Response(404)

    async with mock_client(handler) as client:
        with pytest.raises(PromptValidationError) as info:
            await client.submit(graph, prompt_id=pid, stamp_prefixes=False)
    exc = info.value
    assert exc.removal is not None
    assert (exc.removal.found, exc.removal.action, exc.removal.ended) == ("finished", "nothing", "success")
    assert [(o.node_id, o.filename) for o in exc.orphaned_outputs] == [("3", "good_da4ce7a80000_00001_.png")]
    assert "already finished" in str(exc) and "good_da4ce7a80000_00001_.png" in str(exc)
    assert ("POST", "/queue") not in requests and ("POST", "/interrupt") not in requests  # nothing to stop


async def test_node_errors_prompt_in_neither_queue_nor_history_is_reported_unknown() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/prompt":
            return httpx.Response(200, json={"prompt_id": "gone-1", **NODE_ERRORS_200})
        if request.url.path == "/queue":
            return httpx.Response(200, json={"queue_running": [], "queue_pending": []})
        return httpx.Response(200, json={})  # /history/<id> of an unknown prompt

    async with mock_client(handler) as client:
        with pytest.raises(PromptValidationError) as info:
            await client.submit(partial(2), prompt_id="gone-1")
    assert info.value.removal is not None and info.value.removal.found == "unknown"
    assert info.value.orphaned_outputs == [] and "unknown" in str(info.value)


# ------------------------------------------------------------------------------------ item 2: early progress


class EventsFirstWorker:
    """Speaks just enough ComfyUI to run one prompt, and sends its whole WS stream *before* the POST answer.

    Seen on real ComfyUI for a short prompt (real-comfyui-cpu.md 4). ``before_answer`` lets a test hold the
    answer until the client has read the events, so the order is certain.
    """

    def __init__(self, end: tuple[str, dict[str, Any]] | None = None, store_history: bool = True) -> None:
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.history: dict[str, Any] = {}
        self.end = end
        self.store_history = store_history
        self.before_answer: Callable[[str], Awaitable[None]] | None = None
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/ws", self.ws)
        app.router.add_post("/prompt", self.prompt)
        app.router.add_get("/history/{pid}", self.one_history)
        app.router.add_get("/queue", self.queue)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    async def stop(self) -> None:
        for ws in list(self.sockets.values()):
            await ws.close()
        if self.runner is not None:
            await self.runner.cleanup()

    async def ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sid = request.query.get("clientId") or uuid.uuid4().hex
        self.sockets[sid] = ws
        await ws.send_json({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": sid}})
        async for _ in ws:
            pass
        self.sockets.pop(sid, None)
        return ws

    async def queue(self, request: web.Request) -> web.Response:
        return web.json_response({"queue_running": [], "queue_pending": []})

    async def one_history(self, request: web.Request) -> web.Response:
        pid = request.match_info["pid"]
        return web.json_response({pid: self.history[pid]} if pid in self.history else {})

    async def prompt(self, request: web.Request) -> web.Response:
        body = await request.json()
        pid, graph, ws = body["prompt_id"], body["prompt"], self.sockets[body["client_id"]]

        async def send(kind: str, **data: Any) -> None:
            await ws.send_json({"type": kind, "data": {**data, "prompt_id": pid}})

        await send("execution_start", timestamp=1795219328374)
        await send("execution_cached", nodes=[], timestamp=1795219328385)
        save = {"images": [{"filename": "early_00001_.png", "subfolder": "", "type": "output"}]}
        if self.end is None:
            for node in graph:
                await send("executing", node=node, display_node=node)
                if node == "2":
                    for step in range(3):
                        await send("progress", value=step + 1, max=3, node="2")
            await send("executed", node="3", display_node="3", output=save)
            await send("execution_success", timestamp=1795219328399)
        else:
            await send("executing", node="1", display_node="1")
            await send(self.end[0], **self.end[1], timestamp=1795219328399)
        if self.store_history:
            self.history[pid] = history_entry(pid, graph, outputs={"3": save} if self.end is None else {}, end=self.end)
        await ws.send_json({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}}})
        await ws.send_json({"type": "executing", "data": {"node": None, "prompt_id": pid}})
        if self.before_answer is not None:
            await self.before_answer(pid)
        return web.json_response({"prompt_id": pid, "number": 0, "node_errors": {}})


@pytest.fixture
async def events_first() -> AsyncIterator[Callable[..., Awaitable[EventsFirstWorker]]]:
    started: list[EventsFirstWorker] = []

    async def factory(**kw: Any) -> EventsFirstWorker:
        worker = EventsFirstWorker(**kw)
        await worker.start()
        started.append(worker)
        return worker

    yield factory
    for worker in started:
        await worker.stop()


def hold_until_read(client: ComfyClient) -> Callable[[str], Awaitable[None]]:
    """Answer the POST only once the client has dispatched the final ``executing {node: null}``."""

    async def wait_for_client(pid: str) -> None:
        async def read() -> bool:
            watch = client._watches.get(pid)  # the client's own record of the events it has dispatched
            return watch is not None and watch.done

        await until(read, within=5)

    return wait_for_client


async def test_progress_sent_before_the_post_answer_reaches_the_callback_in_order(
    events_first: Callable[..., Awaitable[EventsFirstWorker]],
) -> None:
    worker = await events_first()
    seen: list[Progress] = []
    async with ComfyClient(worker.url, poll_interval=0.2) as client:
        worker.before_answer = hold_until_read(client)
        result = await client.run(chain(3, "early"), prompt_id="early-1", on_progress=seen.append, timeout=10)
    assert result.outputs[0].filename == "early_00001_.png"
    assert [(p.node, p.value) for p in seen] == [
        ("1", 0.0),
        ("2", 0.0),
        ("2", 1.0),
        ("2", 2.0),
        ("2", 3.0),
        ("3", 0.0),
        (None, 1.0),
    ]
    fractions = [p.fraction for p in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and all(f < 1.0 for f in fractions[:-1])
    assert {p.prompt_id for p in seen} == {"early-1"}


async def test_progress_backlog_is_dropped_for_a_waiter_without_callback(
    events_first: Callable[..., Awaitable[EventsFirstWorker]],
) -> None:
    worker = await events_first()
    async with ComfyClient(worker.url, poll_interval=0.2) as client:
        worker.before_answer = hold_until_read(client)
        pid = await client.submit(chain(3, "early"), prompt_id="early-2")
        assert len(client._watches[pid].backlog) == 6  # kept until wait() says what to do with it
        await client.wait(pid, timeout=10)
        assert pid not in client._watches


# ------------------------------------------------------------------------------------ item 3: deleted vs lost


def assert_deleted(exc: BaseException, client: ComfyClient, pid: str) -> PromptDeleted:
    assert isinstance(exc, PromptDeleted) and isinstance(exc, PromptInterrupted)
    assert isinstance(exc, PermanentComfyError) and not isinstance(exc, TransientComfyError)
    assert exc.worker == client.name and exc.prompt_id == pid and exc.evidence
    assert client.name in str(exc) and pid in str(exc)
    return exc


async def test_pending_prompt_deleted_by_somebody_else_is_prompt_deleted(make_worker: MakeWorker) -> None:
    """The WebSocket of the submit is still open: the worker did not restart, so the job was cancelled."""
    worker = await make_worker(latency="fixed:2")
    async with ComfyClient(worker.url, poll_interval=0.2) as client:
        blocker = await client.submit(chain(3, "blocker"))
        target = await client.submit(chain(3, "target", color=1))
        waiting = asyncio.create_task(client.wait(target, timeout=15))
        assert await position(client, target) == "pending"
        await delete_as_somebody_else(worker.url, target)
        with pytest.raises(PromptDeleted) as info:
            await waiting
        assert "WebSocket" in assert_deleted(info.value, client, target).evidence
        assert (await client.wait(blocker, timeout=10)).outputs  # the worker itself is fine


async def test_deleted_prompt_without_websocket_is_told_by_a_witness_in_history(make_worker: MakeWorker) -> None:
    worker = await make_worker(latency="fixed:1")
    async with ComfyClient(worker.url, poll_interval=0.2, use_websocket=False) as client:
        witness = await client.run(chain(3, "witness", color=7), timeout=10)
        await client.submit(chain(3, "blocker"))
        target = await client.submit(chain(3, "target", color=1))
        waiting = asyncio.create_task(client.wait(target, timeout=15))
        await delete_as_somebody_else(worker.url, target)
        with pytest.raises(PromptDeleted) as info:
            await waiting
        assert witness.prompt_id in assert_deleted(info.value, client, target).evidence


async def test_deleted_prompt_with_no_evidence_stays_prompt_lost(make_worker: MakeWorker) -> None:
    """No socket and no earlier prompt: nothing proves the worker did not restart, so it is not called a cancel."""
    worker = await make_worker(latency="fixed:1")
    async with ComfyClient(worker.url, poll_interval=0.2, use_websocket=False) as client:
        await client.submit(chain(3, "blocker"))
        target = await client.submit(chain(3, "target", color=1))
        waiting = asyncio.create_task(client.wait(target, timeout=15))
        await delete_as_somebody_else(worker.url, target)
        with pytest.raises(PromptLost) as info:
            await waiting
        assert not isinstance(info.value, PromptDeleted)


async def test_websocket_alive_means_the_same_connection_answers_now(preview_worker: PreviewWorker) -> None:
    async with ComfyClient(preview_worker.url) as client:
        stream = client.websocket
        assert await stream.wait_connected(5)
        first = stream.generation
        assert await stream.alive(first, 2)
        preview_worker.faults.drop_ws()

        async def reconnected() -> bool:
            return stream.connected and stream.generation > first

        await until(reconnected)
        assert not await stream.alive(first, 2)  # a new connection proves nothing about the old one
        assert await stream.alive(stream.generation, 2)


async def test_restart_after_a_witness_is_still_prompt_lost(make_worker: MakeWorker) -> None:
    """A restart empties history (the witness goes) and closes the socket: a real restart stays PromptLost."""
    worker = await make_worker(latency="fixed:2")
    async with ComfyClient(worker.url, poll_interval=0.2, unreachable_grace=8) as client:
        await client.run(chain(3, "witness", color=7), timeout=10)
        pid = await client.submit(chain(4, "lost"))
        waiting = asyncio.create_task(client.wait(pid, timeout=20))

        async def is_running() -> bool:
            return await position(client, pid) == "running"

        await until(is_running)
        await worker.crash()
        await asyncio.sleep(0.5)
        await worker.restart()
        with pytest.raises(PromptLost) as info:
            await waiting
        assert not isinstance(info.value, PromptDeleted) and info.value.prompt_id == pid


# ------------------------------------------------------------------------------------ item 4: out of memory

CPU_OOM = (
    "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried to "
    "allocate 107374182400 bytes. Error code 12 (Cannot allocate memory)\n"
)


@pytest.mark.parametrize(
    ("exception_type", "message", "resource"),
    [
        ("RuntimeError", CPU_OOM, True),
        ("torch.OutOfMemoryError", "CUDA out of memory. Tried to allocate 20.00 GiB\n", True),
        ("RuntimeError", "CUDA out of memory. Tried to allocate 2.00 MiB (GPU 0; 23.65 GiB total)\n", True),
        ("RuntimeError", "index 3 is out of bounds for dimension 3 with size 3\n", False),
    ],
)
async def test_out_of_memory_in_history_is_a_resource_error(exception_type: str, message: str, resource: bool) -> None:
    graph = chain(3, "oom")
    error = {
        "node_id": "2",
        "node_type": "KSampler",
        "executed": ["1"],
        "exception_message": message,
        "exception_type": exception_type,
        "traceback": ["  File \"execution.py\", line 496, in execute\n"],
        "current_inputs": {},
        "current_outputs": ["1", "2", "3"],
    }

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/prompt":
            pid = json.loads(request.content)["prompt_id"]
            return httpx.Response(200, json={"prompt_id": pid, "number": 0, "node_errors": {}})
        pid = request.url.path.rsplit("/", 1)[-1]
        entry = history_entry(pid, graph, outputs={}, end=("execution_error", error))
        return httpx.Response(200, json={pid: entry})

    async with mock_client(handler) as client:
        with pytest.raises(PermanentComfyError if not resource else WorkerResourceError) as info:
            await client.run(graph, prompt_id="oom-1", timeout=5)
    exc = info.value
    assert isinstance(exc, WorkerResourceError) is resource
    assert getattr(exc, "node_id", None) == "2" and getattr(exc, "exception_type", None) == exception_type
    assert exc.prompt_id == "oom-1" and exc.worker == "w"


# ------------------------------------------------------------------------------------ item 5: executed order


async def test_interrupted_executed_list_in_any_order_gives_the_same_error(
    events_first: Callable[..., Awaitable[EventsFirstWorker]],
) -> None:
    """From history and from the WebSocket alone (history lost): ``executed`` is a set, whatever its order."""
    ids = ["1", "2", "3", "10", "11"]
    rng = random.Random(17)
    for store_history in (True, False):
        for _ in range(3):
            shuffled = ids[:]
            rng.shuffle(shuffled)
            worker = await events_first(
                end=("execution_interrupted", {"node_id": "12", "node_type": "ImageScale", "executed": shuffled}),
                store_history=store_history,
            )
            async with ComfyClient(worker.url, poll_interval=0.2, history_lag=0.3) as client:
                worker.before_answer = hold_until_read(client)
                with pytest.raises(PromptInterrupted) as info:
                    await client.run(chain(3, "intr"), timeout=10)
            assert not isinstance(info.value, PromptDeleted)
            assert info.value.executed == ["1", "2", "3", "10", "11"], (store_history, shuffled)
            assert info.value.node_id == "12"


# ------------------------------------------------------------------------------------ item 6: no empty values


@pytest.mark.parametrize(
    ("path", "answer", "call"),
    [
        ("/models", {"checkpoints": []}, lambda c: c.models()),
        ("/models/loras", {"files": []}, lambda c: c.models("loras")),
        ("/system_stats", [], lambda c: c.system_stats()),
        ("/features", "yes", lambda c: c.features()),
        ("/object_info", [], lambda c: c.object_info()),
        ("/queue", [], lambda c: c.get_queue()),
        ("/history/p1", ["p1"], lambda c: c.get_history("p1")),
    ],
)
async def test_wrong_shaped_answers_raise_protocol_error(path: str, answer: Any, call: Any) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=answer)

    async with mock_client(handler) as client:
        with pytest.raises(ProtocolError) as info:
            await call(client)
    exc = info.value
    assert isinstance(exc, WorkerServerError) and isinstance(exc, TransientComfyError)
    assert exc.route == f"GET {path}" and exc.worker == "w" and exc.status == 200
    assert f"GET {path}" in str(exc) and "worker w" in str(exc)


async def test_unknown_model_folder_stays_a_404_rejection(preview_worker: PreviewWorker) -> None:
    async with ComfyClient(preview_worker.url) as client:
        with pytest.raises(RequestRejected) as info:
            await client.models("no_such_folder_key")
    assert info.value.status == 404


# ------------------------------------------------------------------------------------ item 7: remove()


async def test_remove_reports_what_it_found_and_did(make_worker: MakeWorker) -> None:
    worker = await make_worker(latency="fixed:2")
    async with ComfyClient(worker.url, poll_interval=0.2) as client:
        done = await client.run(chain(3, "done", color=9), timeout=10)
        running_id = await client.submit(chain(4, "run", color=1))
        pending_id = await client.submit(chain(3, "pend", color=2))
        keep = await client.submit(chain(3, "keep", color=3))  # somebody else's: never touched

        async def is_running() -> bool:
            return await position(client, running_id) == "running"

        await until(is_running)

        pending = await client.remove(pending_id)
        assert (pending.found, pending.action, pending.ended, pending.outputs) == ("pending", "deleted", None, [])
        assert await position(client, keep) == "pending"

        left = await client.remove(running_id, interrupt_running=False)  # e.g. the pool, to wait for it
        assert (left.found, left.action) == ("running", "nothing")
        assert await position(client, running_id) == "running"

        running = await client.remove(running_id, settle=5)
        assert (running.found, running.action, running.ended) == ("running", "interrupted", "interrupted")
        assert running.outputs == []

        finished = await client.remove(done.prompt_id)
        assert (finished.found, finished.action, finished.ended) == ("finished", "nothing", "success")
        assert finished.outputs == done.outputs

        unknown = await client.remove("never-submitted")
        assert (unknown.found, unknown.action, unknown.error) == ("unknown", "nothing", None)

        assert (await client.wait(keep, timeout=10)).outputs
        async with httpx.AsyncClient() as http:
            history = (await http.get(worker.url + "/history")).json()
        assert pending_id not in history and history[keep]["status"]["status_str"] == "success"


async def test_remove_never_raises_when_the_worker_is_down() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with ComfyClient(f"http://127.0.0.1:{port}", use_websocket=False, request_timeout=2) as client:
        removal = await client.remove("p1")
    assert (removal.found, removal.action) == ("unknown", "nothing")
    assert removal.error is not None and "WorkerUnavailable" in removal.error
    assert "could not be asked" in removal.describe()


# ------------------------------------------------------------------------------------ item 8: one hash


async def test_upload_hashes_files_with_the_shared_helper(
    preview_worker: PreviewWorker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reelforge.hashing import sha256_file

    calls: list[Path] = []

    def spy(path: Path | str) -> tuple[str, int]:
        calls.append(Path(path))
        return sha256_file(path)

    monkeypatch.setattr(client_module, "sha256_file", spy)
    src = tmp_path / "x.bin"
    src.write_bytes(b"abc" * 1000)
    async with ComfyClient(preview_worker.url) as client:
        uploaded = await client.upload(src, filename="x.bin")
    assert calls == [src]
    assert uploaded.name == sha256_file(src)[0][:16] + ".bin"
    assert not hasattr(client_module, "_hash_file")
