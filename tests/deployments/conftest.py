"""A real Prefect server, a preview worker and a served flow, each in its own process, for the whole session.

Nothing here uses the ephemeral API or prefect_test_harness: every process is pointed at this session's
server explicitly (``PREFECT_API_URL`` in the subprocess environment, ``temporary_settings`` in-process).
Teardown stops the served flow and the worker before the server: a served process hangs when its server
goes away first.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOYMENT = "reelforge-cancel-test/cancel-test"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_http(url: str, proc: subprocess.Popen[bytes], within: float, log: Path) -> float:
    begin = time.monotonic()
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return time.monotonic() - begin
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        if time.monotonic() - begin > within:
            raise RuntimeError(f"{url} not up within {within} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.25)


def _stop(proc: subprocess.Popen[bytes], *, group: bool = False, grace: float = 15.0) -> None:
    if proc.poll() is not None:
        return
    try:
        if group:
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.terminate()
        proc.wait(timeout=grace)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        if group:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        else:
            proc.kill()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="reelforge-deploy-") as tmp:
        yield Path(tmp)


@pytest.fixture(scope="session")
def prefect_server(workdir: Path) -> Iterator[str]:
    """``prefect server start`` on a free loopback port with its own PREFECT_HOME; yields the API URL."""
    port = free_port()
    home = workdir / "prefect-home"
    home.mkdir()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
    }
    env.pop("PREFECT_API_URL", None)
    log = workdir / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "prefect"), "server", "start", "--host", "127.0.0.1",
             "--port", str(port)],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}/api"
    try:
        took = _wait_http(f"{url}/health", proc, 180, log)
        print(f"\nprefect server healthy after {took:.1f} s at {url}")
        yield url
    finally:
        _stop(proc, group=True, grace=20)


@dataclass
class Worker:
    url: str
    root: Path


@pytest.fixture(scope="session")
def comfy_worker(workdir: Path, prefect_server: str) -> Iterator[Worker]:
    """``reelforge preview-worker`` with a 1 s fixed latency per prompt (depends on the server only so that
    it is stopped before it)."""
    port = free_port()
    root = workdir / "worker"
    log = workdir / "worker.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "reelforge.cli", "preview-worker", "--port", str(port),
             "--latency", "fixed:1.0", "--root", str(root)],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(f"{url}/system_stats", proc, 60, log)
        yield Worker(url=url, root=root)
    finally:
        _stop(proc)


@dataclass
class Served:
    deployment: str
    log: Path


@pytest.fixture(scope="session")
def served_flow(workdir: Path, prefect_server: str, comfy_worker: Worker) -> Iterator[Served]:
    """``tests/deployments/served_flow.py`` serving the test flow against our server and worker."""
    log = workdir / "served.log"
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_server,
        "PREFECT_HOME": str(workdir / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "PREFECT_LOGGING_LEVEL": "INFO",
        "REELFORGE_COMFY_URLS": comfy_worker.url,
        "REELFORGE_STORE": str(workdir / "store"),
        "REELFORGE_DEDUP_RETRIES": "0",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "tests/deployments/served_flow.py"],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        begin = time.monotonic()
        while True:
            try:
                answer = httpx.post(f"{prefect_server}/deployments/filter", json={}, timeout=5)
                if {"cancel-test", "served-character"} <= {d["name"] for d in answer.json()}:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                raise RuntimeError(f"served flow exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            if time.monotonic() - begin > 90:
                raise RuntimeError(f"deployment not registered within 90 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.25)
        yield Served(deployment=DEPLOYMENT, log=log)
    finally:
        _stop(proc, group=True, grace=20)
