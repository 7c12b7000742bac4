"""One Prefect test harness for the whole session: it takes 20-45 s to start on these machines."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from prefect.testing.utilities import prefect_test_harness

import tasks.events
from reelforge.preview.server import PreviewWorker, PreviewWorkerThread


@pytest.fixture(scope="session", autouse=True)
def prefect_harness() -> Iterator[None]:
    with prefect_test_harness(server_startup_timeout=240):
        yield


@pytest.fixture(scope="module")
def worker() -> Iterator[PreviewWorkerThread]:
    """An instant preview worker on a thread, per test module (a module may define its own ``worker``)."""
    thread = PreviewWorkerThread(PreviewWorker(latency="instant", name="solo"))
    thread.start()
    yield thread
    thread.stop()


@pytest.fixture
def emitted(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every event the flows emit in this test (``event``, ``resource`` and the rest), still sent to Prefect."""
    events: list[dict[str, Any]] = []
    real_emit = tasks.events.emit_event

    def record(event: str, resource: dict[str, str], **kwargs: Any) -> Any:
        events.append({"event": event, "resource": resource, **kwargs})
        return real_emit(event, resource, **kwargs)

    monkeypatch.setattr(tasks.events, "emit_event", record)
    return events
