"""ComfyUI: the client of one worker, the pool over many, routing, cancellation and the exception tree.

Import from here (``from reelforge.comfy import WorkerPool``); the submodules are the implementation.
"""

from reelforge.comfy.cancel import CancelReport, WorkerCancel, cancel_owned, owned_prompts
from reelforge.comfy.client import ComfyClient, ProgressCallback, parse_outputs
from reelforge.comfy.errors import (
    ComfyError,
    ExecutionError,
    JobDeadlineExceeded,
    NodeError,
    NoEligibleWorker,
    NoWorkerAvailable,
    OutputError,
    PermanentComfyError,
    PromptInterrupted,
    PromptLost,
    PromptValidationError,
    RequestRejected,
    TransientComfyError,
    WorkerResourceError,
    WorkerServerError,
    WorkerTimeout,
    WorkerUnavailable,
)
from reelforge.comfy.graph import ModelRef
from reelforge.comfy.pool import DispatchStopped, NoHealthyWorkers, WorkerPool, WorkerStatus
from reelforge.comfy.types import (
    DownloadedFile,
    Graph,
    JobOwner,
    JobResult,
    OutputFile,
    Progress,
    QueueItem,
    QueueState,
    UploadedFile,
)

__all__ = [
    "CancelReport",
    "ComfyClient",
    "ComfyError",
    "DispatchStopped",
    "DownloadedFile",
    "ExecutionError",
    "Graph",
    "JobDeadlineExceeded",
    "JobOwner",
    "JobResult",
    "ModelRef",
    "NoEligibleWorker",
    "NoHealthyWorkers",
    "NoWorkerAvailable",
    "NodeError",
    "OutputError",
    "OutputFile",
    "PermanentComfyError",
    "Progress",
    "ProgressCallback",
    "PromptInterrupted",
    "PromptLost",
    "PromptValidationError",
    "QueueItem",
    "QueueState",
    "RequestRejected",
    "TransientComfyError",
    "UploadedFile",
    "WorkerCancel",
    "WorkerPool",
    "WorkerResourceError",
    "WorkerServerError",
    "WorkerStatus",
    "WorkerTimeout",
    "WorkerUnavailable",
    "cancel_owned",
    "owned_prompts",
    "parse_outputs",
]
