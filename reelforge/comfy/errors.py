"""Exceptions of the ComfyUI client and worker pool.

The tree separates failures a retry can fix from failures it cannot::

    ComfyError                      base; carries worker URL and prompt id when known
    ├── TransientComfyError         retry (elsewhere or later) may succeed
    │   ├── WorkerUnavailable       connection refused / reset, DNS, TLS, socket dropped
    │   ├── WorkerTimeout           an HTTP request to the worker timed out
    │   ├── WorkerServerError       the worker answered 5xx
    │   │   └── ProtocolError       it answered 2xx with a body the protocol does not allow (non-JSON, wrong shape)
    │   ├── PromptLost              our prompt is gone from queue and history and the worker restarted (or
    │   │                           nothing proves it did not)
    │   ├── JobDeadlineExceeded     the job ran past its deadline (it was interrupted / removed from the queue)
    │   ├── WorkerResourceError     execution failed for lack of resources (out of memory) rather than inputs
    │   └── NoWorkerAvailable       every eligible worker is unhealthy right now
    └── PermanentComfyError         the same request will fail the same way
        ├── PromptValidationError   400, or 200 with node_errors: every node error listed, plus what became
        │                           of an accepted prompt (``removal``) and the files it wrote anyway
        ├── ExecutionError          execution_error caused by the inputs (node id, class, exception)
        ├── PromptInterrupted       execution_interrupted: somebody stopped the prompt
        │   └── PromptDeleted       the prompt vanished from a worker that did not restart: somebody removed
        │                           it (cancelled); running it again elsewhere would undo the cancel
        ├── OutputError             an output is missing, malformed, or fails its size check
        ├── RequestRejected         a 4xx other than validation (bad upload, forbidden path)
        └── NoEligibleWorker        no configured worker has the node classes / model files the job needs

Retries live in Prefect (see tasks/): they retry ``TransientComfyError`` only.

Out of memory is recognised by exception type (``OOM_EXCEPTION_TYPES``) *and* by message
(``OOM_MESSAGE_MARKERS``): CPU torch raises a plain ``RuntimeError`` "... can't allocate memory ...".
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from reelforge.comfy.types import OutputFile, Removal


class ComfyError(Exception):
    """Base of every ComfyUI client/pool error; ``str()`` names the worker and prompt."""

    def __init__(self, message: str, *, worker: str | None = None, prompt_id: str | None = None) -> None:
        self.message = message
        self.worker = worker
        self.prompt_id = prompt_id
        super().__init__(self._render())

    def _render(self) -> str:
        where = []
        if self.worker:
            where.append(f"worker {self.worker}")
        if self.prompt_id:
            where.append(f"prompt {self.prompt_id}")
        return f"{self.message} ({', '.join(where)})" if where else self.message


class TransientComfyError(ComfyError):
    """A failure that a retry, on this worker later or on another worker, may fix."""


class PermanentComfyError(ComfyError):
    """A failure caused by the request itself; retrying it unchanged fails again."""


class WorkerUnavailable(TransientComfyError):
    """The worker could not be reached or dropped the connection."""


class WorkerTimeout(TransientComfyError):
    """An HTTP request to the worker timed out."""


class WorkerServerError(TransientComfyError):
    """The worker answered with a 5xx status."""

    def __init__(self, message: str, *, status: int, body: str = "", **kw: Any) -> None:
        self.status = status
        self.body = body
        super().__init__(message, **kw)


class ProtocolError(WorkerServerError):
    """The worker answered ``route`` with a 2xx whose body is not what the protocol says (e.g. a proxy page).

    Transient like a 5xx: the answer says nothing about our request, so asking again (or elsewhere) may work.
    """

    def __init__(self, message: str, *, route: str, status: int = 200, body: str = "", **kw: Any) -> None:
        self.route = route
        super().__init__(message, status=status, body=body, **kw)


class PromptLost(TransientComfyError):
    """Our prompt is in neither the worker's queue nor its history, and the worker restarted (or may have)."""


class JobDeadlineExceeded(TransientComfyError):
    """The job did not finish before its deadline; it was interrupted or removed from the queue (``removal``)."""

    def __init__(self, message: str, *, removal: Removal | None = None, **kw: Any) -> None:
        self.removal = removal
        super().__init__(message, **kw)


class WorkerResourceError(TransientComfyError):
    """Execution failed for lack of resources (e.g. GPU out of memory), not because of the inputs."""

    def __init__(
        self,
        message: str,
        *,
        node_id: str | None = None,
        node_type: str | None = None,
        exception_type: str = "",
        exception_message: str = "",
        traceback: list[str] | None = None,
        **kw: Any,
    ) -> None:
        self.node_id = node_id
        self.node_type = node_type
        self.exception_type = exception_type
        self.exception_message = exception_message
        self.traceback = traceback or []
        super().__init__(message, **kw)


class NoWorkerAvailable(TransientComfyError):
    """Workers exist that could run the job, but none is healthy right now."""


class NodeError(BaseModel):
    """One validation error of one node, as ComfyUI reports it in ``node_errors``."""

    node_id: str
    class_type: str = ""
    type: str
    message: str
    details: str = ""
    input_name: str | None = None
    extra_info: dict[str, Any] = Field(default_factory=dict)
    title: str | None = None  # the node's _meta.title in the submitted graph

    def describe(self) -> str:
        where = f"node {self.node_id}"
        if self.title:
            where += f" {self.title!r}"
        if self.class_type:
            where += f" ({self.class_type})"
        if self.input_name:
            where += f" input '{self.input_name}'"
        text = f"{where}: {self.type}: {self.message}"
        if self.details and self.details != self.input_name:
            text += f" [{self.details}]"
        return text


class PromptValidationError(PermanentComfyError):
    """The worker refused the graph (400), or accepted it while dropping invalid outputs (200 + node_errors)."""

    def __init__(
        self,
        message: str,
        *,
        error_type: str = "",
        details: str = "",
        node_errors: list[NodeError] | None = None,
        removal: Removal | None = None,
        **kw: Any,
    ) -> None:
        self.error_type = error_type
        self.details = details
        self.node_errors = node_errors or []
        # Only for a 200 with node_errors: what taking the accepted prompt back found and did.
        self.removal = removal
        self.orphaned_outputs: list[OutputFile] = list(removal.outputs) if removal is not None else []
        super().__init__(message, **kw)

    def _render(self) -> str:
        head = super()._render()
        if self.error_type:
            head = f"{self.error_type}: {head}"
        if self.details and not self.node_errors:
            head += f": {self.details}"
        lines = [head, *("  - " + e.describe() for e in self.node_errors)]
        return "\n".join(lines)


class ExecutionError(PermanentComfyError):
    """The prompt failed while executing (``execution_error``)."""

    def __init__(
        self,
        message: str,
        *,
        node_id: str | None = None,
        node_type: str | None = None,
        exception_type: str = "",
        exception_message: str = "",
        traceback: list[str] | None = None,
        executed: list[str] | None = None,
        **kw: Any,
    ) -> None:
        self.node_id = node_id
        self.node_type = node_type
        self.exception_type = exception_type
        self.exception_message = exception_message
        self.traceback = traceback or []
        self.executed = executed or []  # nodes that finished before the failure, numeric order
        super().__init__(message, **kw)

    def _render(self) -> str:
        return (
            f"{super()._render()}: node {self.node_id} ({self.node_type}) raised "
            f"{self.exception_type}: {self.exception_message.strip()}"
        )


class PromptInterrupted(PermanentComfyError):
    """The prompt was interrupted (``execution_interrupted``).

    ``executed``: the nodes that finished before the interrupt, in numeric order (ComfyUI sends them in no
    particular order).
    """

    def __init__(
        self,
        message: str,
        *,
        node_id: str | None = None,
        node_type: str | None = None,
        executed: list[str] | None = None,
        **kw: Any,
    ) -> None:
        self.node_id = node_id
        self.node_type = node_type
        self.executed = executed or []
        super().__init__(message, **kw)


class PromptDeleted(PromptInterrupted):
    """The prompt vanished from a worker that did not restart: somebody deleted it (or its history entry).

    ``evidence`` says how the client knows the worker did not restart (its WebSocket stayed open since the
    submit, or a prompt it saw in the worker's history earlier is still there). Permanent: a removed prompt is
    a cancelled job, and running it again elsewhere would undo the cancel.
    """

    def __init__(self, message: str, *, evidence: str = "", **kw: Any) -> None:
        self.evidence = evidence
        super().__init__(message, **kw)


class OutputError(PermanentComfyError):
    """An output is missing, malformed, or failed its size check."""


class RequestRejected(PermanentComfyError):
    """The worker rejected a request with a 4xx status other than a prompt validation error."""

    def __init__(self, message: str, *, status: int, body: str = "", **kw: Any) -> None:
        self.status = status
        self.body = body
        super().__init__(message, **kw)


class NoEligibleWorker(PermanentComfyError):
    """No configured worker has the node classes and model files a job needs."""

    def __init__(self, message: str, *, reasons: dict[str, str] | None = None, **kw: Any) -> None:
        self.reasons = reasons or {}
        super().__init__(message, **kw)

    def _render(self) -> str:
        lines = [super()._render(), *(f"  - {w}: {why}" for w, why in sorted(self.reasons.items()))]
        return "\n".join(lines)


OOM_EXCEPTION_TYPES = frozenset(
    {"torch.OutOfMemoryError", "OutOfMemoryError", "torch.cuda.OutOfMemoryError", "MemoryError"}
)
"""Exception types (full or last dotted part) that mean out of memory."""

OOM_MESSAGE_MARKERS = (
    "out of memory",  # CUDA / HIP / MPS: "CUDA out of memory. Tried to allocate ..."
    "can't allocate memory",  # CPU torch: RuntimeError "DefaultCPUAllocator: can't allocate memory: ..."
    "cannot allocate memory",  # errno 12 text, also in that CPU message
    "status_alloc_failed",  # RuntimeError "CUBLAS_STATUS_ALLOC_FAILED" / "CUDNN_STATUS_ALLOC_FAILED"
)
"""Lower-case fragments of an exception message that mean out of memory, whatever the exception type."""


def is_out_of_memory(exception_type: str, exception_message: str) -> bool:
    """Whether an ``execution_error`` is a lack of memory: by exception type, or by message for any type."""
    if exception_type in OOM_EXCEPTION_TYPES or exception_type.rsplit(".", 1)[-1] in OOM_EXCEPTION_TYPES:
        return True
    text = exception_message.lower()
    return any(marker in text for marker in OOM_MESSAGE_MARKERS)
