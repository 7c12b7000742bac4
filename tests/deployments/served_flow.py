"""A cancellable flow served from its own process, for tests/deployments/test_cancel_deployment.py.

``python tests/deployments/served_flow.py`` serves deployments ``reelforge-cancel-test/cancel-test`` and
``reelforge-character/served-character`` (for tests/deployments/test_batch_fan_out.py; not ``character``,
which test_deploy_all.py deploys from prefect.yaml to the process pool). Each run
queues ``jobs`` images of the ``character_base_stylized`` template (512x512) through a pool over
``REELFORGE_COMFY_URLS``, inside ``cancel_scope``, with the cancellation hooks. It writes ``scope.json`` into
``out_dir`` when the flow body exits: when the exception reached the scope and what the cleanup did.
``--direct OUT_DIR SEED`` calls the flow from Python instead (no deployment), for the Ctrl-C test.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NONE
from prefect.context import TaskRunContext

from reelforge.comfy import JobOwner, WorkerPool
from reelforge.fleet import open_fleet
from reelforge.jobs import TemplateRun, run_template
from reelforge.settings import WorkerSettings
from reelforge.templates import load_template
from tasks.cancellation import CancelScope, cancel_scope, on_cancellation, on_crashed

TEMPLATE = "character_base_stylized"


@task(cache_policy=NONE, task_run_name="gpu-{job_id}")
async def gpu_job(pool: WorkerPool, params: dict[str, object], job_id: str, dest_dir: Path) -> TemplateRun:
    ctx = TaskRunContext.get()
    assert ctx is not None
    owner = JobOwner(job_id=job_id, flow_run_id=str(ctx.task_run.flow_run_id), task_run_id=str(ctx.task_run.id))
    return await run_template(pool, load_template(TEMPLATE), params, job_id=job_id, dest_dir=dest_dir, owner=owner)


def _write_scope(out: Path, scope: CancelScope | None, started: float) -> None:
    data = {
        "pid": os.getpid(),
        "started_at": started,
        "exception": None if scope is None or scope.exception is None else type(scope.exception).__name__,
        "caught_at": None if scope is None else scope.caught_at,
        "finished_at": None if scope is None else scope.finished_at,
        "report": None if scope is None or scope.report is None else scope.report.model_dump(),
    }
    (out / "scope.json").write_text(json.dumps(data, indent=2))


@flow(name="reelforge-cancel-test", on_cancellation=[on_cancellation], on_crashed=[on_crashed])
async def cancellable(jobs: int = 6, seed: int = 0, out_dir: str = ".") -> list[str]:
    out = Path(out_dir)
    await asyncio.to_thread(out.mkdir, parents=True, exist_ok=True)
    started = time.time()
    scope: CancelScope | None = None
    try:
        async with open_fleet(WorkerSettings()) as pool, cancel_scope(pool) as scope:
            records = await asyncio.gather(
                *(
                    gpu_job(
                        pool,
                        {"prompt": f"test portrait {i}", "seed": seed + i, "width": 512, "height": 512},
                        f"job{i}",
                        out / "images",
                    )
                    for i in range(jobs)
                )
            )
    finally:
        _write_scope(out, scope, started)
    return [str(f.path) for r in records for f in r.files]


def main(argv: list[str]) -> int:
    """No arguments: serve the deployment. ``--direct OUT_DIR SEED``: call the flow directly, as a script would."""
    if argv[:1] == ["--direct"]:
        asyncio.run(cancellable(jobs=6, seed=int(argv[2]), out_dir=argv[1]))
        return 0
    from prefect import serve

    from flows.character import character_flow

    # The character deployment too: a batch with REELFORGE_BATCH_FAN_OUT=deployment runs its rows here.
    serve(cancellable.to_deployment(name="cancel-test"), character_flow.to_deployment(name="served-character"),
          print_starting_message=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
