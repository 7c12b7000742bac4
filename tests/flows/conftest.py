"""One Prefect test harness for the whole session: it takes 20-45 s to start on these machines."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prefect.testing.utilities import prefect_test_harness

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
