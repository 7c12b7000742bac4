"""Typed values exchanged with ComfyUI workers: owners, outputs, results, progress, queue items, removals."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Graph = dict[str, dict[str, Any]]
"""An API-format ComfyUI graph: ``{node_id: {"class_type": str, "inputs": {...}}}``."""

MediaKind = Literal["image", "video", "audio", "text", "latent", "file"]


class JobOwner(BaseModel):
    """Who a prompt belongs to; sent in ``extra_data.reelforge`` so a worker's own /queue tells whose it is."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    flow_run_id: str | None = None
    task_run_id: str | None = None
    cache_key: str | None = None  # the stage's content key: one successful execution per key is the goal

    def extra_data(self) -> dict[str, str]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class OutputFile(BaseModel):
    """One file a node produced, as listed in a history entry's ``outputs``."""

    model_config = ConfigDict(frozen=True)

    node_id: str
    kind: MediaKind
    filename: str
    subfolder: str = ""
    type: str = "output"  # output | temp | input

    def view_params(self) -> dict[str, str]:
        return {"filename": self.filename, "subfolder": self.subfolder, "type": self.type}


class SavedModel(BaseModel):
    """A model file a save node wrote without listing it in history (SaveLoRANode returns no UI).

    ``prefix`` is the node's (stamped) prefix under the output folder, e.g. ``loras/reelforge_lora_1a2b``; the file
    is ``<prefix>[_<steps>_steps]_<counter>_.safetensors`` and, because ``output/<folder>`` is one of the worker's
    model search paths, it is listed by ``GET /models/<folder>``.
    """

    model_config = ConfigDict(frozen=True)

    node_id: str
    folder: str  # model folder key: "loras"
    prefix: str


class JobResult(BaseModel):
    """A finished prompt: what it produced and what it cost."""

    prompt_id: str
    worker: str
    outputs: list[OutputFile] = Field(default_factory=list)
    saved_models: list[SavedModel] = Field(default_factory=list)  # files to find by listing, not in outputs
    texts: dict[str, list[str]] = Field(default_factory=dict)
    cached_nodes: list[str] = Field(default_factory=list)
    executed_nodes: list[str] = Field(default_factory=list)
    started_ms: int | None = None  # worker timestamp of execution_start
    finished_ms: int | None = None  # worker timestamp of execution_success
    queued_s: float = 0.0  # client-side wait between submit and execution_start (approximate)
    wall_s: float = 0.0  # client-side submit-to-done time

    @property
    def gpu_seconds(self) -> float:
        """Execution time on the worker, from its own timestamps (0 when fully cached or unknown)."""
        if self.started_ms is None or self.finished_ms is None:
            return 0.0
        return max(0.0, (self.finished_ms - self.started_ms) / 1000.0)

    @property
    def fully_cached(self) -> bool:
        return not self.executed_nodes and bool(self.cached_nodes)


class Progress(BaseModel):
    """A progress report for one running prompt."""

    prompt_id: str
    worker: str
    node: str | None
    value: float
    max: float
    fraction: float  # overall, 0..1 over the nodes that will execute
    elapsed_s: float  # GPU time so far (since execution_start)


class QueueItem(BaseModel):
    """One entry of ``GET /queue``: ``[number, prompt_id, prompt, extra_data, outputs_to_execute]``."""

    number: float
    prompt_id: str
    extra_data: dict[str, Any] = Field(default_factory=dict)
    outputs_to_execute: list[str] = Field(default_factory=list)

    @property
    def owner(self) -> JobOwner | None:
        data = self.extra_data.get("reelforge")
        if isinstance(data, dict) and "job_id" in data:
            return JobOwner.model_validate(data)
        return None


class QueueState(BaseModel):
    """The worker's queue: the running prompt(s) and the pending ones in execution order."""

    running: list[QueueItem] = Field(default_factory=list)
    pending: list[QueueItem] = Field(default_factory=list)

    def position(self, prompt_id: str) -> Literal["running", "pending"] | None:
        if any(i.prompt_id == prompt_id for i in self.running):
            return "running"
        if any(i.prompt_id == prompt_id for i in self.pending):
            return "pending"
        return None


class Removal(BaseModel):
    """What ``ComfyClient.remove`` found on the worker and did about one prompt.

    ``found``: where the prompt was (``finished``: already in history; ``unknown``: in neither queue nor history,
    or the worker could not be asked, then ``error`` says why). ``action``: ``deleted`` (pending, removed from the
    queue), ``interrupted`` (running, sent a targeted interrupt) or ``nothing``. ``ended``: the history status
    once the worker stored one. ``outputs``: the files its history entry lists, i.e. what it wrote anyway.
    """

    model_config = ConfigDict(frozen=True)

    prompt_id: str
    worker: str
    found: Literal["pending", "running", "finished", "unknown"]
    action: Literal["deleted", "interrupted", "nothing"]
    ended: Literal["success", "error", "interrupted"] | None = None
    outputs: list[OutputFile] = Field(default_factory=list)
    error: str | None = None

    def describe(self) -> str:
        """One clause for messages, e.g. ``"it was still pending and was deleted"``."""
        if self.found == "pending":
            deleted = self.action == "deleted"
            text = "it was still pending and was deleted" if deleted else "it was pending and could not be deleted"
        elif self.found == "running":
            if self.ended == "success":
                text = "it was running; the interrupt came too late and it finished"
            elif self.ended is not None:
                text = "it was running and was interrupted"
            else:
                text = "it was running and was sent an interrupt (not settled yet: later files are not listed)"
        elif self.found == "finished":
            text = f"it had already finished ({self.ended or 'unknown status'})"
        elif self.error:
            text = "the worker could not be asked what became of it"
        else:
            text = "what became of it is unknown (in neither queue nor history)"
        if self.error:
            text += f" [{self.error}]"
        if self.outputs:
            names = ", ".join(f"{o.filename} (node {o.node_id})" for o in self.outputs[:10])
            more = f" and {len(self.outputs) - 10} more" if len(self.outputs) > 10 else ""
            text += f"; it wrote {len(self.outputs)} file(s): {names}{more}"
        return text


class DownloadedFile(BaseModel):
    """One output fetched from a worker: which node made it, what it is, where it is, its digest and size.

    The one record per output from the client's download to the store's put (the digest was computed while its
    bytes arrived, so nothing reads the file again just to hash it).
    """

    model_config = ConfigDict(frozen=True)

    node_id: str
    kind: MediaKind
    path: Path
    sha256: str
    size: int


class UploadedFile(BaseModel):
    """Answer of ``/upload/image``; ``ref`` is what LoadImage / LoadAudio take."""

    name: str
    subfolder: str = ""
    type: str = "input"

    @property
    def ref(self) -> str:
        base = f"{self.subfolder}/{self.name}" if self.subfolder else self.name
        return base if self.type == "input" else f"{base} [{self.type}]"
