"""Pure parsing of worker answers: outputs, validation errors, execution failures (real payloads)."""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest
from captured import MISSING_HEIGHT_400

from reelforge.comfy.errors import (
    ExecutionError,
    OutputError,
    PromptInterrupted,
    PromptValidationError,
    WorkerResourceError,
)
from reelforge.comfy.outputs import (
    ancestors,
    failure_from_event,
    history_failure,
    numeric_order,
    parse_node_errors,
    parse_outputs,
    validation_error,
)
from reelforge.comfy.types import OutputFile, Removal


def test_parse_outputs_kinds_from_real_history() -> None:
    outputs: dict[str, Any] = {
        "1": {"images": [{"filename": "probeA_00001_.png", "subfolder": "", "type": "output"}]},
        "3": {
            "images": [{"filename": "probeG_00001_.webp", "subfolder": "", "type": "output"}],
            "animated": [True],
        },
        "6": {"images": [{"filename": "probeG_00001_.mp4", "subfolder": "video", "type": "output"}]},
        "8": {"images": [{"filename": "still.gif", "subfolder": "", "type": "output"}], "animated": [False]},
        "9": {"images": [{"filename": "anim.gif", "subfolder": "", "type": "output"}], "animated": [True]},
        "4": {"audio": [{"filename": "probeF_00003_.opus", "subfolder": "audio", "type": "output"}]},
        "5": {"audio": [{"filename": "ComfyUI_temp_grlyn_00001_.flac", "subfolder": "", "type": "temp"}]},
        "7": {"latents": [{"filename": "l_00001_.latent", "subfolder": "", "type": "output"}]},
        "10": {"text": ["hello", 42]},
        "11": {"custom": [{"filename": "x.bin"}], "junk": [1, 2], "scalar": 3},
    }
    files, texts = parse_outputs(outputs)
    kinds = {f.filename: f.kind for f in files}
    assert kinds == {
        "probeA_00001_.png": "image",
        "probeG_00001_.webp": "video",
        "probeG_00001_.mp4": "video",
        "still.gif": "image",
        "anim.gif": "video",
        "probeF_00003_.opus": "audio",
        "ComfyUI_temp_grlyn_00001_.flac": "audio",
        "l_00001_.latent": "latent",
        "x.bin": "file",
    }
    by_name = {f.filename: f for f in files}
    assert by_name["probeG_00001_.mp4"].subfolder == "video"
    assert by_name["ComfyUI_temp_grlyn_00001_.flac"].type == "temp"
    assert by_name["x.bin"].type == "output" and by_name["x.bin"].node_id == "11"
    assert texts == {"10": ["hello", "42"]}


def test_parse_outputs_rejects_malformed_known_keys() -> None:
    with pytest.raises(OutputError):
        parse_outputs({"1": {"images": [{"subfolder": ""}]}})
    with pytest.raises(OutputError):
        parse_outputs({"1": {"audio": "x.flac"}})
    with pytest.raises(OutputError):
        parse_outputs({"1": "not a dict"})
    assert parse_outputs({}) == ([], {})


def test_validation_error_lists_every_node_error() -> None:
    # The captured c.4 answer, plus a second error on node 1 and an error on another output node.
    body = copy.deepcopy(MISSING_HEIGHT_400)
    body["node_errors"]["1"]["errors"].append(
        {
            "type": "value_smaller_than_min",
            "message": "Value 0 smaller than min of 1",
            "details": "width",
            "extra_info": {"input_name": "width", "input_config": ["INT", {"min": 1}]},
        }
    )
    body["node_errors"]["5"] = {
        "errors": [
            {
                "type": "return_type_mismatch",
                "message": "Return type mismatch between linked nodes",
                "details": "images, received_type(MASK) mismatch input_type(IMAGE)",
                "extra_info": {"input_name": "images"},
            }
        ],
        "dependent_outputs": ["5"],
        "class_type": "SaveImage",
    }
    exc = validation_error(body, worker="w1", prompt_id="p1")
    assert isinstance(exc, PromptValidationError)
    assert exc.error_type == "prompt_outputs_failed_validation"
    assert [(e.node_id, e.class_type, e.type, e.input_name) for e in exc.node_errors] == [
        ("1", "EmptyImage", "required_input_missing", "height"),
        ("1", "EmptyImage", "value_smaller_than_min", "width"),
        ("5", "SaveImage", "return_type_mismatch", "images"),
    ]
    text = str(exc)
    assert "node 1 (EmptyImage) input 'height'" in text and "node 5 (SaveImage)" in text
    assert "w1" in text and "p1" in text


def test_validation_error_without_node_errors_names_the_node_from_details() -> None:
    body = {
        "error": {
            "type": "invalid_prompt",
            "message": "Cannot execute because node NoSuchNode does not exist.",
            "details": "Node ID '#2'",
            "extra_info": {},
        },
        "node_errors": {},
    }
    graph = {"2": {"class_type": "NoSuchNode", "inputs": {}}}
    exc = validation_error(body, worker="w", prompt_id="p", graph=graph)
    assert exc.error_type == "invalid_prompt"
    assert [(e.node_id, e.class_type) for e in exc.node_errors] == [("2", "NoSuchNode")]
    assert "NoSuchNode" in str(exc)


def test_validation_error_on_accepted_prompt() -> None:
    body = {
        "prompt_id": "da4ce7a8",
        "number": 27,
        "node_errors": {
            "3": {
                "errors": [
                    {"type": "value_smaller_than_min", "message": "m", "details": "width", "extra_info": {}}
                ],
                "dependent_outputs": ["4"],
                "class_type": "EmptyImage",
            }
        },
    }
    exc = validation_error(body, worker="w", prompt_id="da4ce7a8", accepted=True)
    assert exc.error_type == "node_errors"
    assert exc.node_errors[0].node_id == "3" and exc.node_errors[0].input_name is None
    assert "not taken back" in exc.message and exc.removal is None and exc.orphaned_outputs == []
    # What taking it back found goes into the message and onto the error, with the files it wrote anyway.
    written = OutputFile(node_id="2", kind="image", filename="good_00001_.png")
    removal = Removal(
        prompt_id="da4ce7a8", worker="w", found="finished", action="nothing", ended="success", outputs=[written]
    )
    exc = validation_error(body, worker="w", prompt_id="da4ce7a8", accepted=True, removal=removal)
    assert exc.removal == removal and exc.orphaned_outputs == [written]
    assert "already finished (success)" in str(exc) and "good_00001_.png (node 2)" in str(exc)


def test_removal_describes_each_outcome() -> None:
    def text(**kw: Any) -> str:
        return Removal(prompt_id="p", worker="w", **kw).describe()

    assert text(found="pending", action="deleted") == "it was still pending and was deleted"
    assert "interrupted" in text(found="running", action="interrupted", ended="interrupted")
    assert "too late" in text(found="running", action="interrupted", ended="success")
    assert "not settled" in text(found="running", action="interrupted")
    assert "unknown" in text(found="unknown", action="nothing")
    assert "could not be asked" in text(found="unknown", action="nothing", error="WorkerUnavailable: refused")


def test_parse_node_errors_tolerates_junk() -> None:
    assert parse_node_errors(None) == []
    assert parse_node_errors({"1": "x"}) == []
    errs = parse_node_errors({"7": {"errors": []}}, {"7": {"class_type": "SaveImage"}})
    assert errs[0].class_type == "SaveImage" and errs[0].type == "unknown"


def _entry(status_str: str, *messages: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "outputs": {},
        "status": {
            "status_str": status_str,
            "completed": status_str == "success",
            "messages": [[name, data] for name, data in messages],
        },
    }


def test_history_failure_maps_execution_error() -> None:
    data = {
        "prompt_id": "p",
        "node_id": "2",
        "node_type": "ImageToMask",
        "exception_message": "index 3 is out of bounds for dimension 3 with size 3\n",
        "exception_type": "IndexError",
        "traceback": ["  File x"],
        "timestamp": 1,
    }
    entry = _entry("error", ("execution_start", {"timestamp": 0}), ("execution_error", data))
    exc = history_failure(entry, worker="w", prompt_id="p")
    assert isinstance(exc, ExecutionError)
    assert (exc.node_id, exc.node_type, exc.exception_type) == ("2", "ImageToMask", "IndexError")
    assert "IndexError" in str(exc) and "ImageToMask" in str(exc)
    assert exc.traceback == ["  File x"]


def test_oom_is_a_resource_error_and_interrupt_is_interrupted() -> None:
    oom = failure_from_event(
        "execution_error",
        {"node_id": "4", "node_type": "KSampler", "exception_type": "torch.OutOfMemoryError"},
        worker="w",
        prompt_id="p",
    )
    assert isinstance(oom, WorkerResourceError)
    oom2 = failure_from_event(
        "execution_error", {"exception_type": "torch.cuda.OutOfMemoryError"}, worker="w", prompt_id="p"
    )
    assert isinstance(oom2, WorkerResourceError)
    entry = _entry("error", ("execution_interrupted", {"node_id": "5", "node_type": "ImageScale"}))
    intr = history_failure(entry, worker="w", prompt_id="p")
    assert isinstance(intr, PromptInterrupted) and intr.node_id == "5"
    assert history_failure(_entry("success"), worker="w", prompt_id="p") is None
    assert isinstance(history_failure(_entry("error"), worker="w", prompt_id="p"), ExecutionError)


CPU_OOM = (
    "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried to allocate "
    "107374182400 bytes. Error code 12 (Cannot allocate memory)\n"
)


@pytest.mark.parametrize(
    ("exception_type", "message"),
    [
        ("RuntimeError", CPU_OOM),  # CPU torch: a plain RuntimeError
        ("torch.OutOfMemoryError", "CUDA out of memory. Tried to allocate 20.00 GiB\n"),
        ("RuntimeError", "CUDA out of memory. Tried to allocate 2.00 MiB\n"),
        ("RuntimeError", "Allocation on device 0 would exceed allowed memory. (out of memory)\n"),
        ("RuntimeError", "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`\n"),
        ("torch.cuda.OutOfMemoryError", ""),
        ("MemoryError", ""),
    ],
)
def test_out_of_memory_by_type_or_message_is_a_resource_error(exception_type: str, message: str) -> None:
    data = {
        "node_id": "4",
        "node_type": "KSampler",
        "exception_type": exception_type,
        "exception_message": message,
        "traceback": ["  File x"],
        "executed": ["1"],
    }
    exc = failure_from_event("execution_error", data, worker="w", prompt_id="p")
    assert isinstance(exc, WorkerResourceError)
    assert (exc.node_id, exc.node_type, exc.exception_type) == ("4", "KSampler", exception_type)
    assert exc.exception_message == message and exc.traceback == ["  File x"]
    assert (exc.worker, exc.prompt_id) == ("w", "p")


def test_other_runtime_errors_stay_permanent() -> None:
    data = {"node_id": "2", "exception_type": "RuntimeError", "exception_message": "mat1 and mat2 shapes cannot"}
    exc = failure_from_event("execution_error", data, worker="w", prompt_id="p")
    assert type(exc) is ExecutionError


def test_executed_lists_in_any_order_give_the_same_error() -> None:
    ids = ["1", "2", "3", "10", "11"]
    for seed in range(5):
        shuffled = ids[:]
        random.Random(seed).shuffle(shuffled)
        intr = failure_from_event(
            "execution_interrupted", {"node_id": "12", "executed": shuffled}, worker="w", prompt_id="p"
        )
        err = failure_from_event(
            "execution_error", {"node_id": "12", "exception_type": "IndexError", "executed": shuffled},
            worker="w",
            prompt_id="p",
        )
        assert isinstance(intr, PromptInterrupted) and isinstance(err, ExecutionError)
        assert intr.executed == err.executed == ["1", "2", "3", "10", "11"]


def test_ancestors_and_order() -> None:
    graph = {
        "1": {"class_type": "EmptyImage", "inputs": {}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "x"}},
        "10": {"class_type": "EmptyImage", "inputs": {"bad": [1, 0]}},
    }
    assert ancestors(graph, ["3"]) == {"1", "2", "3"}
    assert ancestors(graph, ["10"]) == {"10"}
    assert numeric_order(["10", "2", "a", "1"]) == ["1", "2", "10", "a"]


# ---------------------------------------------------------------------------------------------- HTTP mapping
# The client's mapping of HTTP answers to the exception tree, with an in-process transport (no server).

TOKEN = "s3cr3t-token-value"


def _client(handler: Any) -> Any:
    import httpx

    from reelforge.comfy.client import ComfyClient

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return ComfyClient(
        "http://w.test:8188", http=http, token=TOKEN, use_websocket=False, unreachable_grace=0.5
    )


async def test_status_and_transport_errors_map_to_the_tree() -> None:
    import httpx

    from reelforge.comfy.errors import RequestRejected, WorkerServerError, WorkerTimeout, WorkerUnavailable

    seen_auth: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen_auth.append(request.headers.get("authorization"))
        path = request.url.path
        if path == "/system_stats":
            return httpx.Response(500, text=f"boom {TOKEN}")
        if path == "/features":
            return httpx.Response(403, text="")
        if path == "/models":
            raise httpx.ConnectError(f"refused {TOKEN}", request=request)
        raise httpx.ReadTimeout("slow", request=request)

    client = _client(handler)
    try:
        with pytest.raises(WorkerServerError) as e500:
            await client.system_stats()
        assert e500.value.status == 500 and TOKEN not in str(e500.value) and TOKEN not in e500.value.body
        with pytest.raises(RequestRejected) as e403:
            await client.features()
        assert e403.value.status == 403
        with pytest.raises(WorkerUnavailable) as econn:
            await client.models()
        assert TOKEN not in str(econn.value)
        with pytest.raises(WorkerTimeout):
            await client.get_queue()
        assert TOKEN not in repr(client)
    finally:
        await client.aclose()
    assert seen_auth and all(a == f"Bearer {TOKEN}" for a in seen_auth)


async def test_submit_body_and_400_mapping() -> None:
    import json

    import httpx

    bodies: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        bodies.append(body)
        return httpx.Response(
            400,
            json={
                "error": {"type": "prompt_no_outputs", "message": "Prompt has no outputs", "details": ""},
                "node_errors": {},
            },
        )

    from reelforge.comfy.types import JobOwner

    client = _client(handler)
    graph = {"1": {"class_type": "SaveImage", "inputs": {"filename_prefix": "pre", "images": ["2", 0]}}}
    try:
        with pytest.raises(PromptValidationError) as exc:
            await client.submit(
                graph, prompt_id="abcdef0123456789", owner=JobOwner(job_id="j1"), extra_pnginfo={"k": 1}
            )
    finally:
        await client.aclose()
    assert exc.value.error_type == "prompt_no_outputs" and exc.value.prompt_id == "abcdef0123456789"
    (body,) = bodies
    assert body["prompt_id"] == "abcdef0123456789"
    assert body["prompt"]["1"]["inputs"]["filename_prefix"] == "pre_abcdef012345"
    assert graph["1"]["inputs"]["filename_prefix"] == "pre"  # caller's graph untouched
    assert body["extra_data"]["reelforge"] == {"job_id": "j1"}
    pnginfo = body["extra_data"]["extra_pnginfo"]
    assert pnginfo["k"] == 1 and pnginfo["reelforge"]["job_id"] == "j1"
    assert body["client_id"]


@pytest.mark.parametrize("stored_before_loss", [True, False])
async def test_lost_submit_response_is_resolved_by_lookup(stored_before_loss: bool) -> None:
    import json

    import httpx

    posts: list[str] = []
    queued: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path == "/prompt":
            pid = json.loads(request.content)["prompt_id"]
            posts.append(pid)
            if len(posts) == 1:
                if stored_before_loss:
                    queued.append(pid)
                raise httpx.ReadTimeout("response lost", request=request)
            queued.append(pid)
            return httpx.Response(200, json={"prompt_id": pid, "number": 1, "node_errors": {}})
        if request.url.path == "/queue":
            pending = [[1, p, {}, {}, ["1"]] for p in queued]
            return httpx.Response(200, json={"queue_running": [], "queue_pending": pending})
        if request.url.path.startswith("/history/"):
            return httpx.Response(200, json={})
        return httpx.Response(404)

    client = _client(handler)
    try:
        pid = await client.submit({"1": {"class_type": "PreviewAny", "inputs": {"source": "x"}}})
    finally:
        await client.aclose()
    assert queued == [pid]  # on the worker exactly once
    assert posts == ([pid] if stored_before_loss else [pid, pid])


def test_node_errors_carry_the_node_title_from_the_graph() -> None:
    graph = {
        "4": {"class_type": "EmptyImage", "inputs": {"width": 0}, "_meta": {"title": "Canvas"}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0]}},
    }
    body = {
        "error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation"},
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
    err = validation_error(body, worker="w", prompt_id="p", graph=graph)
    assert [e.title for e in err.node_errors] == ["Canvas"]
    assert "node 4 'Canvas' (EmptyImage) input 'width': value_smaller_than_min" in str(err)
