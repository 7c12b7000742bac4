"""Cache locks in Redis (``REELFORGE_LOCKS``): orchestrators that share no disk compute a shared stage once, and a
killed holder's lock runs out. Against a real ``redis-server`` the test starts on a free port (skipped without one)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect import flow
from prefect.settings import PREFECT_API_URL
from pydantic import SecretStr, ValidationError

from reelforge.engine import open_engine
from reelforge.preview.server import PreviewWorkerThread
from reelforge.settings import LimitSettings, LLMSettings, Settings, StoreSettings, WorkerSettings
from tasks.locks import LockServiceUnavailable, RedisStageLockManager, StageLockManager, lock_manager_for
from tasks.results import lock_folder_for
from tasks.stage import Stage, StageRunner, stage_cache_key

ROOT = Path(__file__).resolve().parents[2]
SLEEPY = "redis-sleepy"

pytestmark = pytest.mark.timeout(240)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server of its own (nothing persisted), so no other user's keys are touched."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server)")
    port = _free_port()
    folder = tmp_path_factory.mktemp("redis")
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                pytest.skip("redis-server did not start")
            time.sleep(0.1)
    yield f"redis://127.0.0.1:{port}/0"
    server.terminate()
    server.wait(10)


CHILD = """
import asyncio, json, sys
from prefect import flow
import stage_fns
from reelforge.engine import open_engine
from reelforge.settings import LimitSettings, LLMSettings, Settings, StoreSettings, WorkerSettings
from tasks.stage import Stage, StageRunner

SLEEPY = Stage.cpu("redis-sleepy", version="1", fn=stage_fns.sleepy)

@flow(name="redis-lock-orchestrator")
async def orchestrate(worker: str, store: str, counter: str) -> bool:
    settings = Settings(workers=WorkerSettings(comfy_urls=worker), store=StoreSettings(store=store),
                        limits=LimitSettings(), llm=LLMSettings())
    async with open_engine(settings) as engine:
        runner = await StageRunner.create(engine)
        print("locks:", type(runner.locks).__name__, flush=True)
        record = await runner.run(SLEEPY, {"counter": counter, "seconds": 4}, place="t/", job_id="shared")
        return record.cached

print(json.dumps({"cached": asyncio.run(orchestrate(*sys.argv[1:4]))}), flush=True)
"""


def _child_env(home: Path, redis_url: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests" / "flows")]),
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "PREFECT_HOME": str(home),  # nothing of Prefect's shared on disk: as on another machine
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "REELFORGE_LOCKS": redis_url,
        **extra,
    }


def test_two_orchestrators_compute_a_shared_stage_once(
    redis_url: str, worker: PreviewWorkerThread, tmp_path: Path
) -> None:
    store, counter = tmp_path / "store", tmp_path / "calls.txt"
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, worker.url, str(store), str(counter)],
            env=_child_env(tmp_path / f"home-{n}", redis_url), cwd=ROOT,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for n in range(2)
    ]
    outs = [child.communicate(timeout=200) for child in children]
    for child, (out, err) in zip(children, outs, strict=True):
        assert child.returncode == 0, err[-3000:]
        assert "locks: RedisStageLockManager" in out
    cached = sorted(json.loads(out.strip().splitlines()[-1])["cached"] for out, _ in outs)
    assert cached == [False, True]  # one computed, the other waited on the Redis lock and took the result
    assert len(counter.read_text().splitlines()) == 1
    assert not lock_folder_for(StoreSettings(store=str(store))).exists()  # no file lock was involved
    leftover = RedisStageLockManager(redis_url).client.keys("reelforge:*")
    assert leftover == []  # lock and holder info released


HOLD = """
import sys, time
from tasks.locks import RedisStageLockManager
locks = RedisStageLockManager(sys.argv[1], lease_s=2)
assert locks.acquire_lock(sys.argv[2], "killed-holder")
print("locked", flush=True)
time.sleep(600)
"""


def _lock_renew_and_get_killed(redis_url: str, key: str) -> None:
    """A child takes the lock with a 2 s lease, renews it past the lease, then dies by SIGKILL holding it."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD, redis_url, key], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    locks = RedisStageLockManager(redis_url)
    time.sleep(3)  # longer than the lease: the holder's thread renewed it
    assert locks.is_locked(key)
    assert json.loads(locks.client.get(f"reelforge:lock-info:{key}"))["pid"] == holder.pid
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert locks.is_locked(key), "the killed holder's lock is still there until its lease runs out"


async def test_a_killed_holders_lock_runs_out_and_the_next_run_takes_over(
    redis_url: str, worker: PreviewWorkerThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import stage_fns  # type: ignore[import-not-found]  # tests/flows is on sys.path under pytest

    stage = Stage.cpu(SLEEPY, version="1", fn=stage_fns.sleepy)
    store, counter = tmp_path / "store", tmp_path / "calls.txt"
    params = {"counter": str(counter), "seconds": 0}
    key = f"{SLEEPY}-{stage_cache_key(stage, params, {})}"
    await asyncio.to_thread(_lock_renew_and_get_killed, redis_url, key)

    monkeypatch.setenv("REELFORGE_LOCKS", redis_url)
    settings = Settings(workers=WorkerSettings(comfy_urls=worker.url), store=StoreSettings(store=str(store)),  # type: ignore[arg-type]
                        limits=LimitSettings(), llm=LLMSettings())

    @flow(name="redis-lock-takeover")
    async def take_over() -> bool:
        async with open_engine(settings) as engine:
            runner = await StageRunner.create(engine)
            return (await runner.run(stage, params, place="t/", job_id="after-kill")).executed

    begin = time.monotonic()
    assert await take_over()
    assert time.monotonic() - begin < 60
    assert len(counter.read_text().splitlines()) == 1


def test_lock_settings_choose_the_manager_and_keep_the_url_secret(redis_url: str, tmp_path: Path) -> None:
    assert isinstance(lock_manager_for(StoreSettings(store=str(tmp_path))), StageLockManager)
    chosen = lock_manager_for(StoreSettings(store=str(tmp_path), locks=SecretStr(redis_url), locks_lease_s=5))
    assert isinstance(chosen, RedisStageLockManager) and chosen.lease_s == 5
    with pytest.raises(ValidationError, match="REELFORGE_LOCKS must be a redis://") as bad:
        StoreSettings(store=str(tmp_path), locks=SecretStr("http://user:hunter2@cache:6379"))
    assert "hunter2" not in str(bad.value)
    port = _free_port()  # nobody listens there
    away = RedisStageLockManager(f"redis://:hunter2@127.0.0.1:{port}/0")
    with pytest.raises(LockServiceUnavailable, match="REELFORGE_LOCKS did not answer") as down:
        away.check()
    assert "hunter2" not in str(down.value) and "hunter2" not in repr(away)
