"""The preview worker answers like ComfyUI 0.3.64 (cases of docs/comfyui-api.md, sections a and c)."""

from __future__ import annotations

import asyncio
import io
import json
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from captured import MISSING_HEIGHT_400
from helpers import get_json, post_prompt
from PIL import Image

from reelforge.preview.registry import NodeClass, NodeRegistry, NodeResult, default_registry
from reelforge.preview.server import PreviewWorker

Json = dict[str, Any]
MakeWorker = Callable[..., Awaitable[PreviewWorker]]  # the ``make_worker`` fixture of conftest.py

INVERT_GRAPH: Json = {
    "1": {
        "class_type": "EmptyImage",
        "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": 3368601},
    },
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "probeA"}},
}
WORKFLOW: Json = {
    "last_node_id": 3,
    "nodes": [],
    "links": [],
    "version": 0.4,
    "note": "stub UI workflow for probe",
}


def chain(length: int, prefix: str, color: int = 0, first: int = 1) -> Json:
    """EmptyImage -> (length-2) x ImageInvert -> SaveImage, ids first..first+length-1."""
    graph: Json = {
        str(first): {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": color},
        }
    }
    for i in range(first + 1, first + length - 1):
        graph[str(i)] = {"class_type": "ImageInvert", "inputs": {"image": [str(i - 1), 0]}}
    last = first + length - 1
    graph[str(last)] = {
        "class_type": "SaveImage",
        "inputs": {"images": [str(last - 1), 0], "filename_prefix": prefix},
    }
    return graph




async def frames_until_done(
    ws: aiohttp.ClientWebSocketResponse, prompt_id: str, within: float = 10
) -> list[Json]:
    """JSON frames up to and including ``executing {node: null, prompt_id}``."""
    frames: list[Json] = []
    deadline = time.monotonic() + within
    while True:
        msg = await ws.receive(timeout=max(0.01, deadline - time.monotonic()))
        if msg.type != aiohttp.WSMsgType.TEXT:
            assert msg.type == aiohttp.WSMsgType.BINARY, msg
            continue
        frame = json.loads(msg.data)
        frames.append(frame)
        data = frame["data"]
        if frame["type"] == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
            return frames


async def drain(ws: aiohttp.ClientWebSocketResponse, quiet: float = 0.3) -> list[Json]:
    """Every JSON frame received until ``quiet`` seconds pass without one."""
    frames: list[Json] = []
    while True:
        try:
            msg = await ws.receive(timeout=quiet)
        except TimeoutError:
            return frames
        if msg.type == aiohttp.WSMsgType.TEXT:
            frames.append(json.loads(msg.data))
        elif msg.type != aiohttp.WSMsgType.BINARY:
            return frames


async def wait_idle(http: aiohttp.ClientSession, url: str, within: float = 15) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        info = await get_json(http, url + "/prompt")
        if info["exec_info"]["queue_remaining"] == 0:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("worker did not become idle")


async def wait_running(http: aiohttp.ClientSession, url: str, prompt_id: str, within: float = 10) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        q = await get_json(http, url + "/queue")
        if any(item[1] == prompt_id for item in q["queue_running"]):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{prompt_id} never ran")


async def until(condition: Callable[[], bool], within: float = 5) -> None:
    """Poll ``condition`` (worker state, not an awaitable event) until true or ``within`` seconds pass."""
    for _ in range(int(within / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never became true")


def types(frames: list[Json]) -> list[str]:
    return [f["type"] for f in frames]


# ---------------------------------------------------------------------------------------------------
# c.1 system_stats, features, object_info, models
# ---------------------------------------------------------------------------------------------------


async def test_system_stats_and_features(preview_worker: PreviewWorker, http: aiohttp.ClientSession) -> None:
    stats = await get_json(http, preview_worker.url + "/system_stats")
    assert set(stats) == {"system", "devices"}
    assert set(stats["system"]) == {
        "os",
        "ram_total",
        "ram_free",
        "comfyui_version",
        "required_frontend_version",
        "installed_templates_version",
        "required_templates_version",
        "python_version",
        "pytorch_version",
        "embedded_python",
        "argv",
    }
    assert stats["system"]["comfyui_version"] == "0.3.64"
    assert stats["system"]["ram_total"] >= stats["system"]["ram_free"] > 0
    device = stats["devices"][0]
    assert set(device) == {
        "name",
        "type",
        "index",
        "vram_total",
        "vram_free",
        "torch_vram_total",
        "torch_vram_free",
    }
    features = await get_json(http, preview_worker.url + "/features")
    assert features == {"supports_preview_metadata": True, "max_upload_size": 104857600}


async def test_object_info_and_models(preview_worker: PreviewWorker, http: aiohttp.ClientSession) -> None:
    url = preview_worker.url
    info = await get_json(http, url + "/object_info")
    assert {"EmptyImage", "SaveImage", "ImageInvert"} <= set(info)
    assert info["SaveImage"]["output_node"] is True
    one = await get_json(http, url + "/object_info/ImageScale")
    assert list(one) == ["ImageScale"] and one["ImageScale"]["input"]["required"]["upscale_method"][0][0] == (
        "nearest-exact"
    )
    assert await get_json(http, url + "/object_info/NoSuchNode") == {}
    folders = await get_json(http, url + "/models")
    assert folders[:6] == ["checkpoints", "configs", "loras", "vae", "text_encoders", "diffusion_models"]
    lora_dir = preview_worker.dirs.models / "loras" / "sub"
    lora_dir.mkdir(parents=True)
    (lora_dir / "nested.safetensors").write_bytes(b"x")
    (preview_worker.dirs.output / "loras").mkdir()
    (preview_worker.dirs.output / "loras" / "trained.safetensors").write_bytes(b"x")
    (preview_worker.dirs.models / "loras" / "readme.txt").write_text("not a model")
    assert await get_json(http, url + "/models/loras") == ["sub/nested.safetensors", "trained.safetensors"]
    async with http.get(url + "/models/nope") as r:
        assert r.status == 404


# ---------------------------------------------------------------------------------------------------
# c.2 trivial workflow: WS sequence, history, /view, PNG chunks
# ---------------------------------------------------------------------------------------------------


async def test_invert_workflow_sequence_history_and_file(
    preview_worker: PreviewWorker, http: aiohttp.ClientSession
) -> None:
    url = preview_worker.url
    client_id = "aea1f0e866254745a332733d89933ea9"
    ws = await http.ws_connect(url + f"/ws?clientId={client_id}")
    other = await http.ws_connect(url + "/ws?clientId=someone-else")
    anonymous = await http.ws_connect(url + "/ws")
    hello = await ws.receive_json()
    assert hello == {
        "type": "status",
        "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": client_id},
    }
    anon_hello = await anonymous.receive_json()
    assert re.fullmatch(r"[0-9a-f]{32}", anon_hello["data"]["sid"])
    await other.receive_json()

    status, body = await post_prompt(
        http,
        url,
        {
            "prompt": INVERT_GRAPH,
            "client_id": client_id,
            "extra_data": {"extra_pnginfo": {"workflow": WORKFLOW}},
        },
    )
    assert status == 200
    assert body["number"] == 0 and body["node_errors"] == {}
    prompt_id = body["prompt_id"]
    frames = await frames_until_done(ws, prompt_id)
    assert types(frames) == [
        "status",
        "status",
        "execution_start",
        "execution_cached",
        "progress_state",
        "executing",
        "progress_state",
        "progress_state",
        "executing",
        "progress_state",
        "progress_state",
        "executing",
        "executed",
        "progress_state",
        "execution_success",
        "status",
        "executing",
    ]
    assert [f["data"]["status"]["exec_info"]["queue_remaining"] for f in frames if f["type"] == "status"] == [
        1,
        1,
        0,
    ]
    assert frames[3]["data"]["nodes"] == []
    assert [f["data"]["node"] for f in frames if f["type"] == "executing"] == ["1", "2", "3", None]
    assert frames[5]["data"] == {"node": "1", "display_node": "1", "prompt_id": prompt_id}
    first_state = frames[4]["data"]["nodes"]["1"]
    assert first_state == {
        "value": 0.0,
        "max": 1.0,
        "state": "running",
        "node_id": "1",
        "prompt_id": prompt_id,
        "display_node_id": "1",
        "parent_node_id": None,
        "real_node_id": "1",
    }
    last_state = frames[13]["data"]["nodes"]
    assert {k: v["state"] for k, v in last_state.items()} == {
        "1": "finished",
        "2": "finished",
        "3": "finished",
    }
    image_ref = {"filename": "probeA_00001_.png", "subfolder": "", "type": "output"}
    assert frames[12]["data"] == {
        "node": "3",
        "display_node": "3",
        "output": {"images": [image_ref]},
        "prompt_id": prompt_id,
    }

    # Other sockets saw only the status broadcasts.
    assert set(types(await drain(other))) == {"status"}
    assert set(types(await drain(anonymous))) == {"status"}

    history = await get_json(http, url + f"/history/{prompt_id}")
    entry = history[prompt_id]
    assert list(entry) == ["prompt", "outputs", "status", "meta"]
    assert entry["prompt"] == [
        0,
        prompt_id,
        INVERT_GRAPH,
        {"extra_pnginfo": {"workflow": WORKFLOW}, "client_id": client_id},
        ["3"],
    ]
    assert entry["outputs"] == {"3": {"images": [image_ref]}}
    assert entry["status"]["status_str"] == "success" and entry["status"]["completed"] is True
    assert [m[0] for m in entry["status"]["messages"]] == [
        "execution_start",
        "execution_cached",
        "execution_success",
    ]
    assert entry["status"]["messages"][0][1] == frames[2]["data"]
    assert entry["meta"] == {
        "3": {"node_id": "3", "display_node": "3", "parent_node": None, "real_node_id": "3"}
    }

    async with http.get(url + "/view", params=image_ref) as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == "image/png"
        assert r.headers["Content-Disposition"] == 'filename="probeA_00001_.png"'
        data = await r.read()
    with Image.open(io.BytesIO(data)) as img:
        assert img.size == (64, 48)
        assert img.convert("RGB").getpixel((10, 10)) == (204, 153, 101)
        assert json.loads(img.text["prompt"]) == INVERT_GRAPH  # type: ignore[attr-defined]
        assert json.loads(img.text["workflow"]) == WORKFLOW  # type: ignore[attr-defined]
    assert await get_json(http, url + "/history/unknown-id") == {}
    await ws.close()
    await other.close()
    await anonymous.close()


# ---------------------------------------------------------------------------------------------------
# c.3 node-result reuse
# ---------------------------------------------------------------------------------------------------


async def test_resubmission_is_fully_cached(
    preview_worker: PreviewWorker, http: aiohttp.ClientSession
) -> None:
    url = preview_worker.url
    ws = await http.ws_connect(url + "/ws?clientId=cache-client")
    await ws.receive_json()

    async def run(graph: Json) -> tuple[str, list[Json]]:
        status, body = await post_prompt(http, url, {"prompt": graph, "client_id": "cache-client"})
        assert status == 200, body
        return body["prompt_id"], await frames_until_done(ws, body["prompt_id"])

    await run(INVERT_GRAPH)
    prompt_id, frames = await run(INVERT_GRAPH)
    assert types(frames) == [
        "status",
        "status",
        "execution_start",
        "execution_cached",
        "executed",
        "progress_state",
        "execution_success",
        "status",
        "executing",
    ]
    assert frames[3]["data"]["nodes"] == ["1", "2", "3"]
    assert frames[4]["data"]["output"]["images"][0]["filename"] == "probeA_00001_.png"
    assert list(frames[5]["data"]["nodes"]) == ["3"]
    history = (await get_json(http, url + f"/history/{prompt_id}"))[prompt_id]
    assert history["outputs"]["3"]["images"][0]["filename"] == "probeA_00001_.png"

    renumbered = {
        "10": {"class_type": "EmptyImage", "inputs": INVERT_GRAPH["1"]["inputs"]},
        "20": {"class_type": "ImageInvert", "inputs": {"image": ["10", 0]}},
        "30": {"class_type": "SaveImage", "inputs": {"images": ["20", 0], "filename_prefix": "probeA"}},
    }
    _, frames = await run(renumbered)
    assert next(f for f in frames if f["type"] == "execution_cached")["data"]["nodes"] == ["10", "20", "30"]
    assert next(f for f in frames if f["type"] == "executed")["data"]["output"]["images"][0]["filename"] == (
        "probeA_00001_.png"
    )

    new_prefix = json.loads(json.dumps(INVERT_GRAPH))
    new_prefix["3"]["inputs"]["filename_prefix"] = "probeB"
    _, frames = await run(new_prefix)
    assert next(f for f in frames if f["type"] == "execution_cached")["data"]["nodes"] == ["1", "2"]
    assert [f["data"]["node"] for f in frames if f["type"] == "executing"] == ["3", None]
    assert (preview_worker.dirs.output / "probeB_00001_.png").is_file()
    assert sorted(p.name for p in preview_worker.dirs.output.iterdir()) == [
        "probeA_00001_.png",
        "probeB_00001_.png",
    ]
    await ws.close()


async def test_output_counter_and_subfolder(
    preview_worker: PreviewWorker, http: aiohttp.ClientSession
) -> None:
    url = preview_worker.url
    (preview_worker.dirs.output / "sub").mkdir()
    (preview_worker.dirs.output / "sub" / "probeC_00007_.webm").write_bytes(b"other extension")
    graph = chain(3, "sub/probeC")
    _, body = await post_prompt(http, url, {"prompt": graph})
    await wait_idle(http, url)
    entry = (await get_json(http, url + f"/history/{body['prompt_id']}"))[body["prompt_id"]]
    assert entry["outputs"]["3"]["images"] == [
        {"filename": "probeC_00008_.png", "subfolder": "sub", "type": "output"}
    ]


# ---------------------------------------------------------------------------------------------------
# c.4 validation errors, number counter, runtime errors
# ---------------------------------------------------------------------------------------------------


async def test_validation_errors(preview_worker: PreviewWorker, http: aiohttp.ClientSession) -> None:
    url = preview_worker.url
    bad_class = {"1": INVERT_GRAPH["1"], "2": {"class_type": "NoSuchNode", "inputs": {}}}
    assert await post_prompt(http, url, {"prompt": bad_class}) == (
        400,
        {
            "error": {
                "type": "invalid_prompt",
                "message": "Cannot execute because node NoSuchNode does not exist.",
                "details": "Node ID '#2'",
                "extra_info": {},
            },
            "node_errors": {},
        },
    )
    missing = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    }
    assert await post_prompt(http, url, {"prompt": missing}) == (400, MISSING_HEIGHT_400)
    status, body = await post_prompt(http, url, {"prompt": {"1": INVERT_GRAPH["1"]}})
    assert status == 400 and body["error"]["type"] == "prompt_no_outputs" and body["node_errors"] == {}
    assert await post_prompt(http, url, {"client_id": "x"}) == (
        400,
        {
            "error": {
                "type": "no_prompt",
                "message": "No prompt provided",
                "details": "No prompt provided",
                "extra_info": {},
            },
            "node_errors": {},
        },
    )
    async with http.post(url + "/prompt", data=b"not json") as r:
        assert r.status == 500
        assert await r.text() == "500 Internal Server Error\n\nServer got itself in trouble"

    # One good and one bad output: 200, queued with the good one only, errors reported.
    mixed = chain(2, "good", first=1) | {
        "3": {"class_type": "EmptyImage", "inputs": {"width": 0, "height": 8, "batch_size": 1, "color": 0}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "bad"}},
    }
    status, body = await post_prompt(http, url, {"prompt": mixed})
    assert status == 200
    # Every POST above incremented the counter, the rejected ones and the non-JSON one excepted.
    assert body["number"] == 4
    assert body["node_errors"]["3"]["errors"][0]["type"] == "value_smaller_than_min"
    assert body["node_errors"]["3"]["dependent_outputs"] == ["4"]
    await wait_idle(http, url)
    entry = (await get_json(http, url + f"/history/{body['prompt_id']}"))[body["prompt_id"]]
    assert entry["prompt"][4] == ["2"] and list(entry["outputs"]) == ["2"]

    coerced = chain(3, "coerce")
    coerced["1"]["inputs"]["width"] = "8"
    coerced["1"]["inputs"]["height"] = 8.7
    status, body = await post_prompt(http, url, {"prompt": coerced, "prompt_id": 12345})
    assert status == 200 and body["prompt_id"] == "12345"
    await wait_idle(http, url)
    entry = (await get_json(http, url + "/history/12345"))["12345"]
    assert (
        entry["prompt"][2]["1"]["inputs"]["width"] == 8 and entry["prompt"][2]["1"]["inputs"]["height"] == 8
    )


async def test_runtime_error(preview_worker: PreviewWorker, http: aiohttp.ClientSession) -> None:
    url = preview_worker.url
    ws = await http.ws_connect(url + "/ws?clientId=err")
    await ws.receive_json()
    graph = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 7}},
        "2": {"class_type": "ImageToMask", "inputs": {"image": ["1", 0], "channel": "alpha"}},
        "3": {"class_type": "MaskToImage", "inputs": {"mask": ["2", 0]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "err"}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "ok"}},
    }
    status, body = await post_prompt(http, url, {"prompt": graph, "client_id": "err"})
    assert status == 200
    frames = await frames_until_done(ws, body["prompt_id"])
    assert types(frames)[-3:] == ["execution_error", "status", "executing"]
    error = frames[-3]["data"]
    assert error["node_id"] == "2" and error["node_type"] == "ImageToMask"
    assert error["exception_type"] == "IndexError"
    assert error["exception_message"].endswith("\n")
    assert isinstance(error["traceback"], list) and error["traceback"]
    assert error["current_inputs"]["channel"] == ["alpha"]
    assert isinstance(error["current_inputs"]["image"][0], str)
    assert sorted(error["current_outputs"]) == ["1", "2", "3", "4", "5"]
    assert "1" in error["executed"] and "2" not in error["executed"]
    entry = (await get_json(http, url + f"/history/{body['prompt_id']}"))[body["prompt_id"]]
    assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
    assert [m[0] for m in entry["status"]["messages"]] == [
        "execution_start",
        "execution_cached",
        "execution_error",
    ]
    assert set(entry["outputs"]) == {"5"}  # ran before the failure (output nodes are picked first)
    await ws.close()


# ---------------------------------------------------------------------------------------------------
# c.5 queue, delete, targeted interrupt, priority, clear, no client_id, reconnect
# ---------------------------------------------------------------------------------------------------


async def test_queue_delete_and_targeted_interrupt(
    make_worker: MakeWorker, http: aiohttp.ClientSession
) -> None:
    worker = await make_worker(latency="fixed:1.8")
    url = worker.url
    ws = await http.ws_connect(url + "/ws?clientId=q")
    bystander = await http.ws_connect(url + "/ws?clientId=bystander")
    await ws.receive_json()
    ids = []
    for i, graph in enumerate([chain(6, "p1"), chain(3, "p2", color=2), chain(3, "p3", color=3)]):
        status, body = await post_prompt(http, url, {"prompt": graph, "client_id": "q"})
        assert status == 200 and body["number"] == i
        ids.append(body["prompt_id"])
    p1, p2, p3 = ids
    await wait_running(http, url, p1)
    queue = await get_json(http, url + "/queue")
    assert [item[1] for item in queue["queue_running"]] == [p1]
    assert queue["queue_running"][0][0] == 0 and queue["queue_running"][0][3] == {"client_id": "q"}
    assert queue["queue_running"][0][4] == ["6"]
    assert sorted(item[1] for item in queue["queue_pending"]) == sorted([p2, p3])
    assert all(len(item) == 5 for item in queue["queue_pending"])

    async with http.post(url + "/interrupt", json={"prompt_id": p2}) as r:
        assert r.status == 200
    await asyncio.sleep(0.3)
    assert [item[1] for item in (await get_json(http, url + "/queue"))["queue_running"]] == [p1]

    async with http.post(url + "/queue", json={"delete": [p3, "unknown"]}) as r:
        assert r.status == 200
    assert [item[1] for item in (await get_json(http, url + "/queue"))["queue_pending"]] == [p2]

    async with http.post(url + "/interrupt", json={"prompt_id": p1}) as r:
        assert r.status == 200
    frames = await frames_until_done(ws, p1)
    assert types(frames)[-4:] == ["executing", "execution_interrupted", "status", "executing"]
    interrupted = frames[-3]["data"]
    assert interrupted["prompt_id"] == p1 and interrupted["node_id"] == frames[-4]["data"]["node"]
    assert interrupted["node_id"] not in interrupted["executed"] and "1" in interrupted["executed"]
    await frames_until_done(ws, p2)

    history = await get_json(http, url + "/history")
    assert list(history) == [p1, p2]
    h1 = history[p1]
    assert h1["status"]["status_str"] == "error" and h1["status"]["completed"] is False
    assert [m[0] for m in h1["status"]["messages"]] == [
        "execution_start",
        "execution_cached",
        "execution_interrupted",
    ]
    assert h1["outputs"] == {}
    assert history[p2]["status"]["status_str"] == "success"
    assert set(types(await drain(bystander, 0.1))) == {"status"}
    await ws.close()
    await bystander.close()


async def test_priority_numbers_and_heap_order(make_worker: MakeWorker, http: aiohttp.ClientSession) -> None:
    worker = await make_worker(latency="fixed:0.4")
    url = worker.url
    _, long_one = await post_prompt(http, url, {"prompt": chain(5, "long")})
    await wait_running(http, url, long_one["prompt_id"])
    bodies = []
    for extra, color in (({}, 1), ({"front": True}, 2), ({"number": -1000}, 3), ({}, 4)):
        status, body = await post_prompt(
            http, url, {"prompt": chain(3, f"prio{color}", color=color), **extra}
        )
        assert status == 200
        bodies.append(body)
    assert [b["number"] for b in bodies] == [1, -2, -1000.0, 3]
    queue = await get_json(http, url + "/queue")
    assert [item[0] for item in queue["queue_pending"]] == [-1000.0, 1, -2, 3]  # raw heap array
    await wait_idle(http, url)
    history = await get_json(http, url + "/history")
    order = [bodies[i]["prompt_id"] for i in (2, 1, 0, 3)]
    assert list(history) == [long_one["prompt_id"], *order]
    assert list(await get_json(http, url + "/history?max_items=2")) == order[2:]
    assert list(await get_json(http, url + "/history?max_items=2&offset=1")) == order[:2]

    # Clear: pending emptied, running one unaffected, cleared ids never reach history.
    _, running = await post_prompt(http, url, {"prompt": chain(5, "long2")})
    await wait_running(http, url, running["prompt_id"])
    cleared = [
        (await post_prompt(http, url, {"prompt": chain(3, f"c{i}", color=10 + i)}))[1]["prompt_id"]
        for i in range(3)
    ]
    async with http.post(url + "/queue", json={"clear": True}) as r:
        assert r.status == 200
    queue = await get_json(http, url + "/queue")
    assert queue["queue_pending"] == [] and queue["queue_running"][0][1] == running["prompt_id"]
    await wait_idle(http, url)
    history = await get_json(http, url + "/history")
    assert running["prompt_id"] in history and not set(cleared) & set(history)

    async with http.post(url + "/history", json={"delete": [running["prompt_id"]]}) as r:
        assert r.status == 200
    assert running["prompt_id"] not in await get_json(http, url + "/history")
    async with http.post(url + "/history", json={"clear": True}) as r:
        assert r.status == 200
    assert await get_json(http, url + "/history") == {}
    async with http.post(url + "/queue", data=b"") as r:
        assert r.status == 500


async def test_global_interrupt_and_idle_interrupt(
    make_worker: MakeWorker, http: aiohttp.ClientSession
) -> None:
    worker = await make_worker(latency="fixed:0.8")
    url = worker.url
    async with http.post(url + "/interrupt") as r:  # idle: no effect on the next prompt
        assert r.status == 200
    _, body = await post_prompt(http, url, {"prompt": chain(4, "g")})
    await wait_running(http, url, body["prompt_id"])
    await asyncio.sleep(0.1)
    async with http.post(url + "/interrupt", data=b"") as r:
        assert r.status == 200
    await wait_idle(http, url)
    entry = (await get_json(http, url + f"/history/{body['prompt_id']}"))[body["prompt_id"]]
    assert entry["status"]["messages"][-1][0] == "execution_interrupted"
    # The flag was reset when the prompt started: a prompt after an idle interrupt succeeds.
    _, second = await post_prompt(http, url, {"prompt": chain(3, "after", color=5)})
    await wait_idle(http, url)
    entry = (await get_json(http, url + f"/history/{second['prompt_id']}"))[second["prompt_id"]]
    assert entry["status"]["status_str"] == "success"


async def test_prompt_without_client_id_broadcasts_progress_only(
    preview_worker: PreviewWorker, http: aiohttp.ClientSession
) -> None:
    url = preview_worker.url
    ws = await http.ws_connect(url + "/ws?clientId=watcher")
    await ws.receive_json()
    _, body = await post_prompt(http, url, {"prompt": chain(3, "anon")})
    await wait_idle(http, url)
    frames = await drain(ws, 0.2)
    assert set(types(frames)) == {"status", "progress_state"}
    assert all(f["data"]["prompt_id"] == body["prompt_id"] for f in frames if f["type"] == "progress_state")
    await ws.close()


async def test_ws_reconnect_feature_flags_and_api_ws(
    make_worker: MakeWorker, http: aiohttp.ClientSession
) -> None:
    worker = await make_worker(latency="fixed:1.0")
    url = worker.url
    ws = await http.ws_connect(url + "/api/ws?clientId=re")
    await ws.send_json({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
    assert (await ws.receive_json())["type"] == "status"
    assert await ws.receive_json() == {
        "type": "feature_flags",
        "data": {"supports_preview_metadata": True, "max_upload_size": 104857600},
    }
    _, body = await post_prompt(http, url, {"prompt": chain(4, "re"), "client_id": "re"})
    while True:
        frame = await ws.receive_json(timeout=5)
        if frame["type"] == "executing":
            break
    await ws.close()
    again = await http.ws_connect(url + "/ws?clientId=re")
    first = await again.receive_json()
    assert first["type"] == "status" and first["data"]["sid"] == "re"
    second = await again.receive_json()
    assert second["type"] == "executing" and set(second["data"]) == {"node"}
    frames = await frames_until_done(again, body["prompt_id"])
    assert frames[-1]["data"] == {"node": None, "prompt_id": body["prompt_id"]}
    await again.close()


# ---------------------------------------------------------------------------------------------------
# c.7 uploads, c.8 /view guards
# ---------------------------------------------------------------------------------------------------


def png_bytes(color: tuple[int, int, int, int] = (10, 20, 30, 255), size: tuple[int, int] = (4, 4)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGBA", size, color).save(buf, format="PNG")
    return buf.getvalue()


async def upload(
    http: aiohttp.ClientSession,
    url: str,
    data: bytes,
    filename: str,
    path: str = "/upload/image",
    **fields: str,
) -> tuple[int, Any]:
    form = aiohttp.FormData()
    form.add_field("image", data, filename=filename, content_type="image/png")
    for key, value in fields.items():
        form.add_field(key, value)
    async with http.post(url + path, data=form) as r:
        return r.status, (await r.json() if r.status == 200 else await r.text())


async def test_uploads(preview_worker: PreviewWorker, http: aiohttp.ClientSession) -> None:
    url, dirs = preview_worker.url, preview_worker.dirs
    first, second = png_bytes(), png_bytes((200, 0, 0, 255))
    ok = {"name": "probe_upload.png", "subfolder": "", "type": "input"}
    assert await upload(http, url, first, "probe_upload.png", overwrite="true") == (200, ok)
    assert await upload(http, url, first, "probe_upload.png") == (200, ok)
    assert await upload(http, url, second, "probe_upload.png") == (
        200,
        {**ok, "name": "probe_upload (1).png"},
    )
    assert (dirs.input / "probe_upload (1).png").read_bytes() == second
    assert await upload(http, url, second, "in_sub.png", subfolder="probe_sub") == (
        200,
        {"name": "in_sub.png", "subfolder": "probe_sub", "type": "input"},
    )
    assert (dirs.input / "probe_sub" / "in_sub.png").is_file()
    assert (await upload(http, url, first, "x.png", subfolder="../../etc"))[0] == 400
    assert (await upload(http, url, first, "x.png", subfolder="/tmp"))[0] == 400
    # aiohttp's FormData percent-quotes file names, so send the raw header a browser/requests would send.
    boundary = "reelforgeboundary"
    raw = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="../../escape.png"\r\n'
            f"Content-Type: image/png\r\n\r\n"
        ).encode()
        + first
        + f"\r\n--{boundary}--\r\n".encode()
    )
    async with http.post(
        url + "/upload/image", data=raw, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    ) as r:
        assert r.status == 400
    assert not (dirs.root / "escape.png").exists()
    async with http.post(url + "/upload/image", data=aiohttp.FormData({"type": "input"})) as r:
        assert r.status == 400
    assert await upload(http, url, first, "t.png", type="temp") == (
        200,
        {"name": "t.png", "subfolder": "", "type": "temp"},
    )
    assert (await upload(http, url, first, "o.png", type="output"))[0] == 200
    assert (dirs.output / "o.png").is_file()
    assert (await upload(http, url, first, "b.png", type="bogus"))[0] == 500
    assert await upload(
        http,
        url,
        png_bytes((0, 0, 0, 7)),
        "clipspace-mask.png",
        "/upload/mask",
        subfolder="clipspace",
        original_ref=json.dumps({"filename": "probe_upload.png", "subfolder": "", "type": "input"}),
    ) == (200, {"name": "clipspace-mask.png", "subfolder": "clipspace", "type": "input"})
    with Image.open(dirs.input / "clipspace" / "clipspace-mask.png") as masked:
        assert masked.getpixel((0, 0)) == (10, 20, 30, 7)

    # The uploads load in LoadImage (plain and subfolder references).
    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "probe_sub/in_sub.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "loaded"}},
    }
    status, body = await post_prompt(http, url, {"prompt": graph})
    assert status == 200, body
    await wait_idle(http, url)
    entry = (await get_json(http, url + f"/history/{body['prompt_id']}"))[body["prompt_id"]]
    assert entry["status"]["status_str"] == "success"
    with Image.open(dirs.output / "loaded_00001_.png") as img:
        assert img.convert("RGB").getpixel((0, 0)) == (200, 0, 0)


async def test_view_guards_and_encodings(preview_worker: PreviewWorker, http: aiohttp.ClientSession) -> None:
    url, dirs = preview_worker.url, preview_worker.dirs
    (dirs.output / "probe" / "sub").mkdir(parents=True)
    (dirs.output / "a.png").write_bytes(png_bytes((1, 2, 3, 128)))
    (dirs.output / "probe" / "sub" / "b.png").write_bytes(png_bytes())
    (dirs.input / "probe_upload.png").write_bytes(png_bytes())
    (dirs.output / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    (dirs.output / "sound.flac").write_bytes(b"fLaC")
    (dirs.output / "page.html").write_text("<html></html>")

    async def view(**params: str) -> tuple[int, str, bytes]:
        async with http.get(url + "/view", params=params) as r:
            return r.status, r.headers.get("Content-Type", ""), await r.read()

    assert (await view(filename="a.png", type="output"))[:2] == (200, "image/png")
    assert (await view(filename="b.png", subfolder="probe/sub"))[0] == 200
    assert (await view(filename="probe_upload.png", type="input"))[0] == 200
    assert (await view(filename="probe_upload.png [input]"))[0] == 200
    status, ctype, body = await view(filename="a.png", preview="webp;50")
    assert (status, ctype) == (200, "image/webp") and body[8:12] == b"WEBP"
    status, ctype, body = await view(filename="a.png", preview="jpeg;80")
    assert (status, ctype) == (200, "image/jpeg") and body[:2] == b"\xff\xd8"
    status, ctype, body = await view(filename="a.png", channel="a")
    with Image.open(io.BytesIO(body)) as alpha:
        assert ctype == "image/png" and alpha.getpixel((0, 0)) == (0, 0, 0, 128)
    status, ctype, body = await view(filename="a.png", channel="rgb")
    with Image.open(io.BytesIO(body)) as rgb:
        assert rgb.mode == "RGB" and rgb.getpixel((0, 0)) == (1, 2, 3)
    assert (await view(filename="clip.mp4"))[:2] == (200, "video/mp4")
    assert (await view(filename="sound.flac"))[:2] == (200, "audio/flac")
    assert (await view(filename="page.html"))[1] == "application/octet-stream"
    assert (await view(filename="../main.py"))[0] == 400
    assert (await view(filename="/etc/passwd"))[0] == 400
    assert (await view(filename="a.png", type="models"))[0] == 400
    assert (await view(filename="a.png", subfolder=".."))[0] == 403
    assert (await view(filename="missing.png"))[0] == 404
    assert (await view())[0] == 404
    assert (await view(filename="probe_upload.png", subfolder="../input"))[0] == 403


# ---------------------------------------------------------------------------------------------------
# a.1 /api aliases and the CSRF guard
# ---------------------------------------------------------------------------------------------------


async def test_api_aliases_and_csrf(preview_worker: PreviewWorker, http: aiohttp.ClientSession) -> None:
    url = preview_worker.url
    for path in (
        "/prompt",
        "/queue",
        "/history",
        "/system_stats",
        "/features",
        "/object_info/EmptyImage",
        "/models",
    ):
        assert await get_json(http, url + "/api" + path) == await get_json(http, url + path)
    status, body = await post_prompt(http, url + "/api", {"prompt": chain(3, "api")})
    assert status == 200
    await wait_idle(http, url)
    assert body["prompt_id"] in await get_json(http, url + "/api/history")
    async with http.get(url + "/api/view", params={"filename": "api_00001_.png"}) as r:
        assert r.status == 200
    async with http.get(url + "/api/internal/files/output") as r:
        assert r.status == 404

    async with http.post(
        url + "/prompt", json={"prompt": chain(3, "csrf")}, headers={"Origin": "http://evil.example"}
    ) as r:
        assert r.status == 403 and await r.read() == b""
    async with http.get(url + "/queue", headers={"Origin": url}) as r:
        assert r.status == 200
    assert (await get_json(http, url + "/queue"))["queue_pending"] == []


# ---------------------------------------------------------------------------------------------------
# faults, stats, restart
# ---------------------------------------------------------------------------------------------------


async def test_http500_drop_ws_and_slow_view(make_worker: MakeWorker, http: aiohttp.ClientSession) -> None:
    worker = await make_worker(faults="slow_view=0.3")
    url = worker.url
    worker.faults.http500_next(2)
    for _ in range(2):
        async with http.get(url + "/queue") as r:
            assert r.status == 500
            assert await r.text() == "500 Internal Server Error\n\nServer got itself in trouble"
    async with http.get(url + "/queue") as r:
        assert r.status == 200

    ws = await http.ws_connect(url + "/ws?clientId=drop")
    await ws.receive_json()
    worker.faults.drop_ws()
    msg = await ws.receive(timeout=5)
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)

    (worker.dirs.output / "v.png").write_bytes(png_bytes())
    started = time.monotonic()
    async with http.get(url + "/view", params={"filename": "v.png"}) as r:
        assert r.status == 200
    assert time.monotonic() - started >= 0.3


async def test_crash_mid_prompt_and_restart(make_worker: MakeWorker, http: aiohttp.ClientSession) -> None:
    worker = await make_worker(latency="fixed:0.6")
    url = worker.url
    _, done = await post_prompt(http, url, {"prompt": chain(3, "kept")})
    await wait_idle(http, url)
    worker.faults.arm_crash(after_nodes=1)
    _, body = await post_prompt(http, url, {"prompt": chain(4, "crash")})
    await until(lambda: worker.crashed)
    assert worker.faults.crashes == 1
    with pytest.raises(aiohttp.ClientConnectionError):
        async with http.get(url + "/queue") as r:
            await r.read()
    new_url = await worker.restart()
    assert new_url == url
    assert await get_json(http, url + "/queue") == {"queue_running": [], "queue_pending": []}
    assert await get_json(http, url + "/history") == {}
    assert (worker.dirs.output / "kept_00001_.png").is_file()
    assert body["prompt_id"] and done["prompt_id"]


async def test_fault_spec_restarts_by_itself(make_worker: MakeWorker, http: aiohttp.ClientSession) -> None:
    worker = await make_worker(latency="fixed:0.3", faults="crash_at_node=2,restart_after=0.3")
    url = worker.url
    await post_prompt(http, url, {"prompt": chain(3, "auto")})
    await until(lambda: worker.crashed)
    await until(lambda: not worker.crashed)
    assert await get_json(http, url + "/prompt") == {"exec_info": {"queue_remaining": 0}}
    assert await get_json(http, url + "/history") == {}


async def test_stats_busy_time(make_worker: MakeWorker, http: aiohttp.ClientSession) -> None:
    worker = await make_worker(latency="fixed:0.2")
    url = worker.url
    for i in range(2):
        await post_prompt(http, url, {"prompt": chain(3, f"s{i}", color=i)})
    await wait_idle(http, url)
    assert worker.stats.prompts_executed == 2
    assert worker.stats.nodes_executed == 6
    assert 0.4 <= worker.stats.busy_seconds < 1.5


def test_worker_in_thread(tmp_path: Path) -> None:
    import urllib.request

    thread = PreviewWorker(tmp_path / "threaded").start_in_thread()
    try:
        with urllib.request.urlopen(thread.url + "/features", timeout=5) as r:
            assert json.loads(r.read()) == {"supports_preview_metadata": True, "max_upload_size": 104857600}
    finally:
        thread.stop()


def stepping_registry() -> NodeRegistry:
    """The built-in classes plus a sampler-like class whose steps emit progress (latency key KSampler)."""
    registry = NodeRegistry()
    for cls in default_registry():
        registry.register(cls)
    schema = {
        "input": {"required": {"image": ["IMAGE"], "steps": ["INT", {"default": 3, "min": 1, "max": 100}]}},
        "input_order": {"required": ["image", "steps"]},
        "output": ["IMAGE"],
        "output_is_list": [False],
        "output_name": ["IMAGE"],
        "name": "StepImage",
        "display_name": "Step Image",
        "description": "",
        "python_module": "tests",
        "category": "testing",
        "output_node": False,
    }
    registry.register(
        NodeClass(
            name="StepImage",
            schema=schema,
            latency_key="KSampler",
            run=lambda ctx, inputs: NodeResult(outputs=(inputs["image"],)),
        )
    )
    return registry


def step_graph(steps: int, prefix: str) -> Json:
    graph = chain(2, prefix)
    graph["3"] = {"class_type": "StepImage", "inputs": {"image": ["1", 0], "steps": steps}}
    graph["2"]["inputs"]["images"] = ["3", 0]
    return graph


async def test_progress_steps_and_mid_node_interrupt(
    make_worker: MakeWorker, http: aiohttp.ClientSession
) -> None:
    worker = await make_worker(latency="fixed:0.9", registry=stepping_registry())
    url = worker.url
    ws = await http.ws_connect(url + "/ws?clientId=steps")
    await ws.receive_json()
    status, body = await post_prompt(http, url, {"prompt": step_graph(3, "steps"), "client_id": "steps"})
    assert status == 200, body
    frames = await frames_until_done(ws, body["prompt_id"])
    progress = [f["data"] for f in frames if f["type"] == "progress"]
    assert progress == [
        {"value": float(v), "max": 3.0, "prompt_id": body["prompt_id"], "node": "3"} for v in (1, 2, 3)
    ]
    # Each progress event follows the progress_state carrying the same value.
    for i, frame in enumerate(frames):
        if frame["type"] == "progress":
            state = frames[i - 1]
            assert state["type"] == "progress_state"
            assert state["data"]["nodes"]["3"]["value"] == frame["data"]["value"]

    # 40 steps over 0.3 s: an interrupt lands inside the node, at a progress step.
    status, body = await post_prompt(http, url, {"prompt": step_graph(40, "steps2"), "client_id": "steps"})
    frames = []
    while not frames or frames[-1]["type"] != "progress":
        frames.append(await ws.receive_json(timeout=5))
    async with http.post(url + "/interrupt", json={"prompt_id": body["prompt_id"]}) as r:
        assert r.status == 200
    frames += await frames_until_done(ws, body["prompt_id"])
    interrupted = next(f["data"] for f in frames if f["type"] == "execution_interrupted")
    assert interrupted["node_id"] == "3" and interrupted["node_type"] == "StepImage"
    assert max(f["data"]["value"] for f in frames if f["type"] == "progress") < 40
    await ws.close()
