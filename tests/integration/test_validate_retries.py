"""validate_on_pool asks a worker again after a transient failure: one 500 from /object_info or /models on the
only worker fails no run; a worker that keeps answering 500 still fails it, naming the worker."""

from __future__ import annotations

from pathlib import Path

import pytest

from reelforge.comfy.client import ComfyClient
from reelforge.comfy.errors import WorkerServerError
from reelforge.comfy.pool import WorkerPool
from reelforge.jobs import validate_on_pool
from reelforge.preview.server import PreviewWorker
from reelforge.templates.template import load_template


async def test_one_500_during_validation_is_asked_again(tmp_path: Path) -> None:
    template = load_template("character_base_stylized")
    async with PreviewWorker(tmp_path / "w") as worker, ComfyClient(worker.url) as client:
        async with WorkerPool([client]) as pool:
            worker.faults.http500_next(2)
            passed = await validate_on_pool(pool, [template])
            assert passed == {template.name: [client.name]}
            worker.faults.set_http500_rate(1.0)
            with pytest.raises(WorkerServerError, match="500"):
                await validate_on_pool(pool, [template])
