"""Which failures a Prefect retry may fix: transient ComfyUI and storage errors, nothing else.

Validation errors, bad inputs, execution errors of a graph, conflicts in the store: a retry would fail the
same way, so they fail at once with their own message (ARCHITECTURE.md principle 5).
"""

from __future__ import annotations

from typing import Any

from reelforge.comfy import TransientComfyError
from reelforge.cpu import CpuWorkerLost
from reelforge.storage import StoreUnavailable

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (TransientComfyError, StoreUnavailable, CpuWorkerLost)


def is_transient(exc: BaseException | None) -> bool:
    """True for an error of the transient branches of the engine's exception trees.

    An exception group is transient only when every error in it is (one permanent error fails the job).
    """
    if exc is None:
        return False
    if isinstance(exc, BaseExceptionGroup):
        return all(is_transient(e) for e in exc.exceptions)
    return isinstance(exc, TRANSIENT_ERRORS)


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """``retry_condition_fn`` for Prefect tasks: retry transient failures only.

    Prefect hands over a ``Failed`` state whose ``data`` is the raised exception (task_engine.can_retry).
    """
    data = getattr(state, "data", None)
    return is_transient(data if isinstance(data, BaseException) else None)
