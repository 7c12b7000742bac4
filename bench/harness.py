"""What the batch and soak benchmarks share: a real ``prefect server``, a fleet of preview workers, each in its
own process, a batch run as a user runs it (``reelforge run batch --json``), and process figures read from
``/proc`` (Linux: CPU seconds, RSS, open file descriptors of a process and its children).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], within: float, log: Path) -> float:
    begin = time.monotonic()
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return time.monotonic() - begin
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        if time.monotonic() - begin > within:
            raise RuntimeError(f"{url} not up within {within} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.25)


def stop(proc: subprocess.Popen[bytes], *, grace: float = 20.0) -> None:
    """SIGTERM the process group, then SIGKILL after ``grace``."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


# ------------------------------------------------------------------------------------------------ /proc


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def tree_of(pid: int) -> list[int]:
    """``pid`` and every descendant alive now."""
    tree, out, todo = _children(), [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += tree.get(p, [])
    return out


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes (what they used so far, children reaped included)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # utime, stime, cutime, cstime are fields 14-17 of stat; index 11-14 after the ")".
        total += sum(int(v) for v in fields[11:15]) / TICK
    return total


def rss_bytes(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except OSError:
        return 0


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


# ------------------------------------------------------------------------------------------------ servers


@dataclass
class PrefectServer:
    proc: subprocess.Popen[bytes]
    url: str
    database: str

    def cpu(self) -> float:
        return cpu_seconds(tree_of(self.proc.pid))

    def count_task_runs(self) -> int:
        return int(httpx.post(f"{self.url}/task_runs/count", json={}, timeout=30).json())

    def count_flow_runs(self) -> int:
        return int(httpx.post(f"{self.url}/flow_runs/count", json={}, timeout=30).json())


@contextlib.contextmanager
def prefect_server(workdir: Path, *, postgres: str | None = None) -> Iterator[PrefectServer]:
    """``prefect server start`` (SQLite in its own PREFECT_HOME, or ``postgres``: an asyncpg URL)."""
    home = workdir / "prefect-home"
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_UI_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    if postgres:
        env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = postgres
    log = workdir / "prefect-server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port",
                                 str(port)], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    try:
        took = wait_http(f"{url}/health", proc, 240, log)
        print(f"prefect server ({'PostgreSQL' if postgres else 'SQLite'}) healthy after {took:.1f} s at {url}")
        yield PrefectServer(proc, url, "postgresql" if postgres else "sqlite")
    finally:
        stop(proc)


@dataclass
class Fleet:
    procs: list[subprocess.Popen[bytes]]
    urls: list[str]
    logs: list[Path] = field(default_factory=list)

    def histories(self) -> list[dict[str, Any]]:
        return [httpx.get(f"{u}/history", timeout=60).json() for u in self.urls]


def start_worker(workdir: Path, name: str, latency: str, faults: str | None, port: int | None = None,
                 ) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = port or free_port()
    log = workdir / f"{name}.log"
    # Trained LoRAs reach the workers through a folder they all mount (REELFORGE_LORA_SHARED_DIR): here each
    # worker's models/loras/shared is a link to it.
    loras = workdir / name / "models" / "loras"
    loras.mkdir(parents=True, exist_ok=True)
    if not (loras / "shared").exists():
        (loras / "shared").symlink_to(shared_loras(workdir), target_is_directory=True)
    cmd = [sys.executable, "-m", "reelforge.cli", "preview-worker", "--port", str(port), "--latency", latency,
           "--root", str(workdir / name)]
    if faults:
        cmd += ["--faults", faults]
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/system_stats", proc, 90, log)
    return proc, url, log


@contextlib.contextmanager
def fleet(workdir: Path, workers: int, latency: str, faults: str | None = None) -> Iterator[Fleet]:
    started: list[tuple[subprocess.Popen[bytes], str, Path]] = []
    try:
        for i in range(workers):
            started.append(start_worker(workdir, f"worker{i}", latency, faults))
        yield Fleet([p for p, _, _ in started], [u for _, u, _ in started], [lg for _, _, lg in started])
    finally:
        for proc, _, _ in started:
            stop(proc, grace=5)


# ------------------------------------------------------------------------------------------------ batches


@dataclass
class Prompt:
    worker: int
    prompt_id: str
    flow_run_id: str
    job_id: str
    start: float
    end: float
    status: str


def prompts(histories: list[dict[str, Any]], since: float = 0.0) -> list[Prompt]:
    """Every executed prompt of the fleet (start/end: the worker's own message timestamps, epoch seconds)."""
    out = []
    for w, history in enumerate(histories):
        for prompt_id, entry in history.items():
            extra = entry["prompt"][3].get("reelforge", {})
            stamps = {m[0]: m[1].get("timestamp", 0) / 1000 for m in entry["status"]["messages"]}
            start = stamps.get("execution_start")
            end = max(stamps.values()) if stamps else None
            if start is None or end is None or start < since:
                continue
            status = "interrupted" if "execution_interrupted" in stamps else entry["status"]["status_str"]
            out.append(Prompt(w, prompt_id, extra.get("flow_run_id", ""), extra.get("job_id", ""), start, end, status))
    return out


@dataclass
class BatchRun:
    returncode: int
    wall_s: float
    peak_rss: int  # the orchestrator process itself (ru_maxrss of the reelforge process)
    peak_tree_rss: int  # it and its children (the CPU stage pool, ffmpeg), sampled
    payload: dict[str, Any]
    stderr_tail: str
    cpu_s: float = 0.0  # the orchestrator's CPU seconds, children included
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (t, tree RSS, open fds of the main one)


def shared_loras(workdir: Path) -> Path:
    folder = workdir / "shared-loras"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def batch_env(api_url: str, fleet_urls: list[str], workdir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REELFORGE_")}
    env |= {"PREFECT_API_URL": api_url, "REELFORGE_COMFY_URLS": ",".join(fleet_urls),
            "REELFORGE_STORE": str(workdir / "store"), "REELFORGE_LORA_SHARED_DIR": str(shared_loras(workdir)),
            "REELFORGE_LORA_SHARED_PREFIX": "shared/", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "COLUMNS": "160"}
    return env | extra


def run_batch(args: list[str], env: dict[str, str], log: Path, *, sample_s: float = 1.0) -> BatchRun:
    """``reelforge run batch ARGS --json`` in a subprocess; peak RSS from ``wait4`` plus samples of its tree."""
    import threading

    begin = time.monotonic()
    samples: list[tuple[float, int, int]] = []
    cpu = [0.0]
    with log.open("ab") as err:
        proc = subprocess.Popen([str(BIN / "reelforge"), "run", "batch", *args, "--json"], env=env, cwd=REPO,
                                stdout=subprocess.PIPE, stderr=err)
        done = threading.Event()

        def sample() -> None:
            while not done.wait(sample_s):
                pids = tree_of(proc.pid)
                samples.append((time.monotonic() - begin, sum(rss_bytes(p) for p in pids), open_fds(proc.pid)))
                cpu[0] = max(cpu[0], cpu_seconds(pids))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        assert proc.stdout is not None
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        done.set()
        sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - begin
    cpu[0] = max(cpu[0], usage.ru_utime + usage.ru_stime)
    try:
        payload = json.loads(out.decode() or "{}")
    except ValueError:
        payload = {"raw": out.decode(errors="replace")[-2000:]}
    tail = log.read_text(errors="replace")[-3000:]
    peak_tree = max((rss for _, rss, _ in samples), default=0)
    return BatchRun(proc.returncode, wall, usage.ru_maxrss * 1024, peak_tree, payload, tail, cpu[0], samples)
