"""Which failures a Prefect retry may fix: transient ComfyUI and storage errors, nothing else (tasks); and which
may pass when a whole run starts again (a batch's characters).

Validation errors, bad inputs, execution errors of a graph, conflicts in the store: a retry would fail the
same way, so they fail at once with their own message (ARCHITECTURE.md principle 5).
"""

from __future__ import annotations

from typing import Any

import httpx
from prefect.exceptions import PrefectHTTPStatusError

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


def is_infrastructure_failure(exc: BaseException | None) -> bool:
    """True when a whole run may succeed if started again: a transient engine error, or the Prefect API (or the
    connection to it) failing: 429 or 5xx answers, a transport error. A run started again resumes from cache."""
    if exc is None:
        return False
    if isinstance(exc, BaseExceptionGroup):
        return all(is_infrastructure_failure(e) for e in exc.exceptions)
    if is_transient(exc) or isinstance(exc, httpx.TransportError):
        return True
    if isinstance(exc, PrefectHTTPStatusError | httpx.HTTPStatusError):
        return exc.response.status_code == 429 or exc.response.status_code >= 500
    return False


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """``retry_condition_fn`` for Prefect tasks: retry transient failures only.

    Prefect hands over a ``Failed`` state whose ``data`` is the raised exception (task_engine.can_retry).
    """
    data = getattr(state, "data", None)
    return is_transient(data if isinstance(data, BaseException) else None)
