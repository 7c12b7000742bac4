"""Pure parsing of ComfyUI answers: history outputs and status, validation and execution errors.

Nothing here does I/O; ``client.py`` feeds it the JSON a worker returned.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import PurePosixPath
from typing import Any

from reelforge.comfy.errors import (
    ComfyError,
    ExecutionError,
    NodeError,
    OutputError,
    PromptInterrupted,
    PromptValidationError,
    WorkerResourceError,
    is_out_of_memory,
)
from reelforge.comfy.types import Graph, MediaKind, OutputFile, Removal

VIDEO_EXTENSIONS = frozenset({".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v"})
"""Extensions that are video even when a node lists them under ``images`` without ``animated``."""

# History ``outputs`` keys that list files, and the kind of media they hold. ``images`` is refined per
# entry (animated or video extension -> video). ``gifs`` / ``videos`` are custom-node conventions
# (VideoHelperSuite).
_FILE_KEYS: dict[str, MediaKind] = {
    "images": "image",
    "audio": "audio",
    "latents": "latent",
    "gifs": "video",
    "videos": "video",
    "video": "video",
}


def _is_animated(ui: Mapping[str, Any]) -> bool:
    animated = ui.get("animated")
    if isinstance(animated, list):
        return any(bool(a) for a in animated)
    return animated is True


def parse_outputs(outputs: Mapping[str, Any]) -> tuple[list[OutputFile], dict[str, list[str]]]:
    """Files and texts of a history entry's ``outputs`` (``{node_id: ui_dict}``).

    ``images`` entries are video when the node says ``animated: [true]`` or the file has a video extension;
    ``audio`` -> audio, ``latents`` -> latent, ``text`` (PreviewAny) -> the texts mapping. Unknown keys whose
    items look like files (a dict with ``filename``) become kind ``file``; other unknown keys are ignored.
    A known file key with a malformed entry raises ``OutputError``.
    """
    if not isinstance(outputs, Mapping):
        raise OutputError(f"history outputs is not an object: {type(outputs).__name__}")
    files: list[OutputFile] = []
    texts: dict[str, list[str]] = {}
    for raw_node_id, ui in outputs.items():
        node_id = str(raw_node_id)
        if not isinstance(ui, Mapping):
            raise OutputError(f"output of node {node_id} is not an object")
        animated = _is_animated(ui)
        for key, value in ui.items():
            if key == "animated":
                continue
            if key == "text":
                if isinstance(value, list):
                    texts[node_id] = [str(v) for v in value]
                elif value is not None:
                    texts[node_id] = [str(value)]
                continue
            known = _FILE_KEYS.get(key)
            if not isinstance(value, list):
                if known is not None:
                    raise OutputError(f"output '{key}' of node {node_id} is not a list")
                continue
            for item in value:
                if not (
                    isinstance(item, Mapping) and isinstance(item.get("filename"), str) and item["filename"]
                ):
                    if known is not None:
                        raise OutputError(f"malformed '{key}' entry of node {node_id}: {item!r:.200}")
                    continue
                filename = str(item["filename"])
                kind: MediaKind = known or "file"
                if key == "images":
                    ext = PurePosixPath(filename).suffix.lower()
                    kind = "video" if (animated or ext in VIDEO_EXTENSIONS) else "image"
                files.append(
                    OutputFile(
                        node_id=node_id,
                        kind=kind,
                        filename=filename,
                        subfolder=str(item.get("subfolder") or ""),
                        type=str(item.get("type") or "output"),
                    )
                )
    return files, texts


# ---------------------------------------------------------------------------------------------- validation


def parse_node_errors(node_errors: Any, graph: Graph | None = None) -> list[NodeError]:
    """Every error of every node in a ``node_errors`` object, in node order."""
    if not isinstance(node_errors, Mapping):
        return []
    result: list[NodeError] = []
    for raw_id, entry in node_errors.items():
        node_id = str(raw_id)
        if not isinstance(entry, Mapping):
            continue
        class_type = str(entry.get("class_type") or "")
        if not class_type and graph is not None:
            class_type = str((graph.get(node_id) or {}).get("class_type") or "")
        errors = entry.get("errors")
        if not isinstance(errors, list) or not errors:
            errors = [{"type": "unknown", "message": "node failed validation"}]
        for err in errors:
            if not isinstance(err, Mapping):
                continue
            extra = err.get("extra_info")
            extra = dict(extra) if isinstance(extra, Mapping) else {}
            input_name = extra.get("input_name")
            result.append(
                NodeError(
                    node_id=node_id,
                    class_type=class_type,
                    type=str(err.get("type") or "unknown"),
                    message=str(err.get("message") or ""),
                    details=str(err.get("details") or ""),
                    input_name=str(input_name) if input_name is not None else None,
                    extra_info=extra,
                    title=node_title(graph, node_id),
                )
            )
    return result


def node_title(graph: Graph | None, node_id: str) -> str | None:
    """The node's title from ``_meta`` (what a person sees in ComfyUI), if the graph carries one."""
    meta = ((graph or {}).get(node_id) or {}).get("_meta")
    title = meta.get("title") if isinstance(meta, Mapping) else None
    return str(title) if title else None


_NODE_ID_IN_DETAILS = re.compile(r"Node ID '#([^']+)'")


def validation_error(
    body: Any,
    *,
    worker: str | None,
    prompt_id: str | None,
    graph: Graph | None = None,
    accepted: bool = False,
    removal: Removal | None = None,
) -> PromptValidationError:
    """Map a ``POST /prompt`` answer (400 body, or a 200 with ``node_errors``) to ``PromptValidationError``.

    Errors with no ``node_errors`` (``invalid_prompt`` for an unknown class or a node without class_type)
    name the node only in ``details`` (``Node ID '#2'``); that node is then listed as a ``NodeError`` too,
    so callers always find the node id in ``node_errors``. For an accepted prompt (``accepted``), ``removal``
    is what taking it back found and did; it goes into the message and onto the error, with the files it wrote.
    """
    body = body if isinstance(body, Mapping) else {}
    error = body.get("error")
    if isinstance(error, Mapping):
        error_type = str(error.get("type") or "")
        message = str(error.get("message") or "prompt failed validation")
        details = str(error.get("details") or "")
    else:
        error_type = "node_errors" if accepted else "invalid_prompt"
        message = str(error) if error else "prompt failed validation"
        details = ""
    if accepted:
        error_type = error_type or "node_errors"
        message = "worker accepted the prompt but dropped invalid outputs; " + (
            removal.describe() if removal is not None else "it was not taken back (it may have run already)"
        )
    node_errors = parse_node_errors(body.get("node_errors"), graph)
    if not node_errors:
        match = _NODE_ID_IN_DETAILS.search(details)
        if match:
            node_id = match.group(1)
            class_type = str(((graph or {}).get(node_id) or {}).get("class_type") or "")
            node_errors = [
                NodeError(
                    node_id=node_id,
                    class_type=class_type,
                    type=error_type,
                    message=message,
                    details=details,
                    title=node_title(graph, node_id),
                )
            ]
    return PromptValidationError(
        message,
        error_type=error_type,
        details=details,
        node_errors=node_errors,
        removal=removal,
        worker=worker,
        prompt_id=prompt_id,
    )


# ---------------------------------------------------------------------------------------------- history


def status_messages(entry: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The ``status.messages`` of a history entry as ``(event, data)`` pairs."""
    status = entry.get("status")
    if not isinstance(status, Mapping):
        return []
    out: list[tuple[str, dict[str, Any]]] = []
    for msg in status.get("messages") or []:
        if isinstance(msg, list | tuple) and len(msg) >= 2 and isinstance(msg[1], Mapping):
            out.append((str(msg[0]), dict(msg[1])))
    return out


def message_data(entry: Mapping[str, Any], event: str) -> dict[str, Any] | None:
    """The data of the last ``event`` message in a history entry's status, if any."""
    found: dict[str, Any] | None = None
    for name, data in status_messages(entry):
        if name == event:
            found = data
    return found


def timestamp(data: Mapping[str, Any] | None) -> int | None:
    value = (data or {}).get("timestamp")
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def failure_from_event(
    event: str, data: Mapping[str, Any], *, worker: str | None, prompt_id: str | None
) -> ComfyError:
    """The exception for an ``execution_error`` or ``execution_interrupted`` event (WS or history).

    Out of memory (by exception type or message, see ``errors.is_out_of_memory``) is a ``WorkerResourceError``:
    another worker may have the memory. ``executed`` comes in no particular order: it is kept as a set, sorted.
    """
    node_id = data.get("node_id")
    node_type = data.get("node_type")
    nid = str(node_id) if node_id is not None else None
    ntype = str(node_type) if node_type is not None else None
    raw_executed = data.get("executed")
    executed = numeric_order({str(n) for n in raw_executed}) if isinstance(raw_executed, list) else []
    if event == "execution_interrupted":
        return PromptInterrupted(
            f"prompt interrupted at node {nid} ({ntype})",
            node_id=nid,
            node_type=ntype,
            executed=executed,
            worker=worker,
            prompt_id=prompt_id,
        )
    exc_type = str(data.get("exception_type") or "")
    exc_message = str(data.get("exception_message") or "")
    raw_traceback = data.get("traceback")
    traceback = [str(t) for t in raw_traceback] if isinstance(raw_traceback, list) else []
    if is_out_of_memory(exc_type, exc_message):
        return WorkerResourceError(
            f"out of memory at node {nid} ({ntype}): {exc_type}: {exc_message.strip()}",
            node_id=nid,
            node_type=ntype,
            exception_type=exc_type,
            exception_message=exc_message,
            traceback=traceback,
            worker=worker,
            prompt_id=prompt_id,
        )
    return ExecutionError(
        "prompt failed while executing",
        node_id=nid,
        node_type=ntype,
        exception_type=exc_type,
        exception_message=exc_message,
        traceback=traceback,
        executed=executed,
        worker=worker,
        prompt_id=prompt_id,
    )


def history_failure(
    entry: Mapping[str, Any], *, worker: str | None, prompt_id: str | None
) -> ComfyError | None:
    """The exception a finished history entry stands for, or None when it succeeded."""
    status = entry.get("status")
    if not isinstance(status, Mapping):
        return None
    status_str = status.get("status_str")
    if status_str == "success" or (status_str is None and status.get("completed") is True):
        return None
    for event in ("execution_error", "execution_interrupted"):
        data = message_data(entry, event)
        if data is not None:
            return failure_from_event(event, data, worker=worker, prompt_id=prompt_id)
    return ExecutionError(
        f"prompt finished with status {status_str!r}",
        exception_type=str(status_str or ""),
        worker=worker,
        prompt_id=prompt_id,
    )


def is_link(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
    )


def ancestors(graph: Mapping[str, Any], roots: Iterable[str]) -> set[str]:
    """The given output nodes and every node they depend on through links (the nodes a prompt executes)."""
    seen: set[str] = set()
    stack = [str(r) for r in roots]
    while stack:
        node_id = stack.pop()
        if node_id in seen or node_id not in graph:
            continue
        seen.add(node_id)
        node = graph[node_id]
        inputs = node.get("inputs") if isinstance(node, Mapping) else None
        for value in (inputs or {}).values():
            if is_link(value):
                stack.append(value[0])
    return seen


def numeric_order(ids: Iterable[str]) -> list[str]:
    """Node ids sorted numerically where they are numbers (ComfyUI ids usually are)."""
    return sorted(ids, key=lambda i: (0, int(i), "") if i.isdigit() else (1, 0, i))
