"""`reelforge preview-worker` (the command in README.md) starts a server that answers like ComfyUI."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_preview_worker_command_serves_the_comfy_api(tmp_path: Path) -> None:
    port = _free_port()
    cmd = [sys.executable, "-m", "reelforge.cli", "preview-worker", "--port", str(port), "--root", str(tmp_path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                stats = httpx.get(f"{url}/system_stats", timeout=2).json()
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else b""
                assert time.monotonic() < deadline, "preview worker did not start within 60 s"
                time.sleep(0.2)
        assert stats["system"]["comfyui_version"] == "0.3.64"
        graph = {
            "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "cli"}},
        }
        answer = httpx.post(f"{url}/api/prompt", json={"prompt": graph}, timeout=5)
        assert answer.status_code == 200 and answer.json()["node_errors"] == {}
        prompt_id = answer.json()["prompt_id"]
        for _ in range(100):
            entry = httpx.get(f"{url}/history/{prompt_id}", timeout=5).json()
            if entry:
                break
            time.sleep(0.1)
        assert entry[prompt_id]["status"]["status_str"] == "success"
        assert (tmp_path / "output" / "cli_00001_.png").is_file()
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_preview_worker_command_refuses_a_port_in_use_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cmd = [sys.executable, "-m", "reelforge.cli", "preview-worker", "--port", str(port), "--root", str(tmp_path)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr == f"error: --port: port {port} is already in use on 127.0.0.1\n"
    assert done.stdout == ""
