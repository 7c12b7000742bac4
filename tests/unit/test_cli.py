from __future__ import annotations

import dataclasses
import json
import socket
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from reelforge.cli import app


def test_config_show_masks_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REELFORGE_COMFY_URLS", "image=http://127.0.0.1:8188")
    monkeypatch.setenv("REELFORGE_COMFY_TOKEN", "tok-abc123")
    result = CliRunner().invoke(app, ["config", "show"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["workers"]["comfy_urls"] == [{"url": "http://127.0.0.1:8188", "labels": ["image"]}]
    assert shown["workers"]["comfy_token"] == "**********"
    assert "tok-abc123" not in result.output


def test_config_show_reports_bad_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REELFORGE_COMFY_URLS", "gpu=http://127.0.0.1:8188")
    result = CliRunner().invoke(app, ["config", "show"])
    assert result.exit_code == 2
    assert "unknown label(s) ['gpu']" in result.output


# -- preview-worker: a bad option is one line and exit 2, before anything starts ---------------------------


def _listening_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def _must_not_start(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("the server must not start with a bad option")


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--port", "70000"], "error: --port: 70000 is not a TCP port (0..65535; 0 picks a free one)"),
        (["--port", "-1"], "error: --port: -1 is not a TCP port (0..65535; 0 picks a free one)"),
        (
            ["--latency", "bogus"],
            "error: --latency: bad latency profile 'bogus': use instant, gpu, gpu:SCALE or fixed:SECONDS",
        ),
        (["--latency", "gpu:nan"], "error: --latency: bad latency profile 'gpu:nan'"),
        (["--faults", "nope=2"], "error: --faults: unknown fault 'nope' in 'nope=2' (known: crash_at_node, "),
        (["--faults", "http500=2"], "error: --faults: fault 'http500' is a probability between 0 and 1, got 2"),
        (["--faults", "slow_view"], "error: --faults: fault 'slow_view' needs a value (slow_view=...)"),
        (["--host", "no-such-host.invalid"], "error: --host: cannot resolve 'no-such-host.invalid'"),
    ],
)
def test_preview_worker_bad_option_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, args: list[str], line: str
) -> None:
    monkeypatch.setattr("reelforge.preview.server.serve_forever", _must_not_start)
    result = CliRunner().invoke(app, ["preview-worker", *args])
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)  # no traceback
    assert result.stdout == ""
    (printed,) = result.stderr.splitlines()
    assert printed.startswith(line), printed


def test_preview_worker_port_in_use_and_root_not_a_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("reelforge.preview.server.serve_forever", _must_not_start)
    with _listening_socket() as busy:
        port = busy.getsockname()[1]
        result = CliRunner().invoke(app, ["preview-worker", "--port", str(port)])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    assert result.stderr == f"error: --port: port {port} is already in use on 127.0.0.1\n"
    a_file = tmp_path / "file"
    a_file.write_text("x")
    result = CliRunner().invoke(app, ["preview-worker", "--port", "0", "--root", str(a_file)])
    assert result.exit_code == 2
    assert result.stderr == f"error: --root: {a_file} exists and is not a directory\n"


def test_a_bind_lost_after_the_check_names_the_port(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The port is taken between check_options and the server's own bind: still one line, exit 2.
    from reelforge.preview import server

    with _listening_socket() as busy:
        port = busy.getsockname()[1]
        options = server.check_options(port=0, root=tmp_path)
        monkeypatch.setattr(server, "check_options", lambda **kw: dataclasses.replace(options, port=port))
        result = CliRunner().invoke(app, ["preview-worker", "--root", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert result.stderr == f"error: --port: port {port} is already in use on 127.0.0.1\n"


# -- templates validate --worker: a worker that cannot be asked is one line and exit 2 --------------------


def test_validate_against_an_unreachable_worker_is_one_line_and_exit_2() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    url = f"http://127.0.0.1:{port}"
    result = CliRunner().invoke(app, ["templates", "validate", "upscale", "--worker", url])
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    assert result.stderr == f"error: worker {url} unreachable: connection refused\n"
    bad = CliRunner().invoke(app, ["templates", "validate", "upscale", "--worker", "ftp://x"])
    assert bad.exit_code == 2
    assert bad.stderr == "error: --worker 'ftp://x': worker url must be http(s)://host[:port][/path]\n"


def test_worker_failure_words() -> None:
    from reelforge.cli import worker_failure
    from reelforge.comfy.errors import RequestRejected, WorkerServerError, WorkerTimeout

    assert worker_failure(WorkerTimeout("GET /object_info timed out", worker="w")) == (
        "timed out: GET /object_info timed out"
    )
    assert worker_failure(WorkerServerError("GET /object_info answered 500", status=500)) == (
        "could not be checked: GET /object_info answered 500"
    )
    assert worker_failure(RequestRejected("GET /object_info answered 404", status=404)).endswith("answered 404")


def test_validate_against_a_live_preview_worker(tmp_path: Path) -> None:
    from reelforge.preview.server import PreviewWorker

    with PreviewWorker(tmp_path).start_in_thread() as worker:
        ok = CliRunner().invoke(app, ["templates", "validate", "upscale", "--worker", worker.url])
        assert ok.exit_code == 0, ok.output
        assert ok.stdout.startswith("ok      upscale")
        worker.faults.http500_next(100)
        failed = CliRunner().invoke(app, ["templates", "validate", "upscale", "--worker", worker.url])
    assert failed.exit_code == 2
    assert failed.stderr == f"error: worker {worker.url} could not be checked: GET /object_info answered 500\n"
