"""``reelforge run character`` as a user runs it: a subprocess, its stdout/stderr, its exit code, Ctrl-C.

The subprocess talks to this session's Prefect test server (``PREFECT_API_URL``), so it does not start a
temporary server of its own; the workers are preview workers outside it, so a test can look at their queues.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.settings import get_current_settings

from reelforge.preview.server import PreviewWorker, PreviewWorkerThread

REELFORGE = str(Path(sys.executable).with_name("reelforge"))


@pytest.fixture(scope="module")
def slow_worker() -> Iterator[PreviewWorkerThread]:
    thread = PreviewWorkerThread(PreviewWorker(latency="fixed:2", name="cli"))
    thread.start()
    yield thread
    thread.stop()


def cli_env(tmp_path: Path, worker: PreviewWorkerThread) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REELFORGE_")}
    env |= {
        "PREFECT_API_URL": str(get_current_settings().api.url),
        "REELFORGE_STORE": str(tmp_path / "store"),
        "REELFORGE_COMFY_URLS": worker.url,
        "COLUMNS": "120",
        "REELFORGE_DEDUP_RETRIES": "0",  # stage counts must not depend on how alike the pictures are
    }
    return env


def run_cli(args: list[str], env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([REELFORGE, *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_json_result_then_everything_cached(tmp_path: Path, slow_worker: PreviewWorkerThread) -> None:
    env = cli_env(tmp_path, slow_worker)
    args = ["run", "character", "--name", "Cli Person", "--variations", "1", "--width", "256", "--height", "256",
            "--no-lora", "--no-intro"]
    first = run_cli([*args, "--json"], env)
    assert first.returncode == 0, first.stderr[-3000:]
    data: dict[str, Any] = json.loads(first.stdout)  # stdout holds exactly one JSON object
    assert data["state"] == "Completed" and data["flow_run_id"]
    assert (data["executed"], data["cached"]) == (6, 0)  # base, variation, voice; 2 hashes, the voice's check
    assert data["stages"] == {"gpu": {"executed": 3, "cached": 0}, "process": {"executed": 3, "cached": 0}}
    manifest = Path(data["manifest_uri"].removeprefix("file://"))
    assert json.loads(manifest.read_text())["name"] == "Cli Person"
    assert "stages done" in first.stderr and "Cli Person v1" in first.stderr  # progress and table on stderr
    second = run_cli(args, env)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "6 stages: 0 executed, 6 cached (everything came from the cache)" in second.stdout
    assert "manifest:" in second.stdout and "v2/manifest.json" in second.stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--variations", "-3"], "--variations: Input should be greater than or equal to 1 (got '-3')"),
        (["--gender", "robot"], "--gender: Input should be 'female', 'male' or 'nonbinary'"),
        (["--spec", "/nonexistent/spec.yaml"], "--spec /nonexistent/spec.yaml: cannot read it"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, slow_worker: PreviewWorkerThread, args: list[str], fragment: str
) -> None:
    sent = slow_worker.stats.prompts_executed
    proc = run_cli(["run", "character", *args], cli_env(tmp_path, slow_worker), timeout=60)
    assert proc.returncode == 2
    assert fragment in " ".join(proc.stderr.split()) and "Traceback" not in proc.stderr
    assert slow_worker.stats.prompts_executed == sent


def test_spec_file_gives_the_parameters(tmp_path: Path, slow_worker: PreviewWorkerThread) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: Spec Person\nvariations: 1\nwidth: 512\nheight: 512\ncharacter_type: mascot\nlora: false\n"
        "intro: false\n"
    )
    proc = run_cli(["run", "character", "--spec", str(spec), "--json"], cli_env(tmp_path, slow_worker))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)["result"]
    assert (result["name"], result["family"], len(result["variations"])) == ("Spec Person", "stylized", 1)
    assert result["lora"] is None and result["intro"] is None and result["voice"] is not None


@pytest.mark.parametrize(
    ("sig", "code", "words"), [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "SIGTERM")]
)
def test_a_stopped_run_removes_its_prompts_from_the_worker(
    tmp_path: Path, slow_worker: PreviewWorkerThread, sig: signal.Signals, code: int, words: str
) -> None:
    args = ["run", "character", "--name", f"Stop {sig.name}", "--variations", "4", "--width", "256", "--height", "256",
            "--no-lora", "--no-intro"]
    proc = subprocess.Popen(
        [REELFORGE, *args], env=cli_env(tmp_path, slow_worker), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        flow_run_id = _wait_for_queued_variations(slow_worker.url, deadline=time.monotonic() + 120)
        began = time.monotonic()
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, stderr[-3000:]
    assert time.monotonic() - began < 30
    assert words in stderr and "removed from every worker" in " ".join(stderr.split())
    queue = httpx.get(f"{slow_worker.url}/queue").json()
    items = queue["queue_running"] + queue["queue_pending"]
    left = [i for i in items if i[3].get("reelforge", {}).get("flow_run_id") == flow_run_id]
    assert left == [], "the stopped run's prompts must be gone from the worker"


def _wait_for_queued_variations(url: str, *, deadline: float) -> str:
    """The flow run id once a variation of it is running and another waits behind it."""
    while time.monotonic() < deadline:
        queue = httpx.get(f"{url}/queue").json()
        owners = [i[3].get("reelforge", {}) for i in queue["queue_running"] + queue["queue_pending"]]
        if queue["queue_pending"] and any("-var" in o.get("job_id", "") for o in owners):
            return str(owners[0]["flow_run_id"])
        time.sleep(0.1)
    raise AssertionError("the run never queued its variations")


@pytest.fixture(scope="module")
def quick_worker() -> Iterator[PreviewWorkerThread]:
    thread = PreviewWorkerThread(PreviewWorker(latency="fixed:0.05", name="quick"))
    thread.start()
    yield thread
    thread.stop()


BATCH_LIGHT = ["--no-lora", "--no-intro", "--variations", "1", "--width", "256", "--height", "256"]


def test_run_batch_generated_group_json_names_the_summary(tmp_path: Path, quick_worker: PreviewWorkerThread) -> None:
    env = cli_env(tmp_path, quick_worker)
    done = run_cli(["run", "batch", "--type", "kpop_idol", "--count", "2", "--group", "DUO", "--seed", "4",
                    *BATCH_LIGHT, "--json"], env)
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads(done.stdout)
    assert data["state"] == "Completed" and data["summary_uri"].startswith("file://")
    summary = json.loads(Path(data["summary_uri"].removeprefix("file://")).read_text())
    assert [r["status"] for r in summary["rows"]] == ["completed", "completed"]
    assert {r["role"] for r in summary["rows"]} == {"Maknae", "Leader"}
    assert "group record: groups/duo/" in done.stderr  # the table and totals go to stderr with --json


def test_run_batch_bad_file_exits_2_and_a_failed_row_exits_1(
    tmp_path: Path, quick_worker: PreviewWorkerThread
) -> None:
    env = cli_env(tmp_path, quick_worker)
    sent = quick_worker.stats.prompts_executed
    bad = tmp_path / "names.csv"
    bad.write_text("Kim Minji,20,female\n", encoding="utf-8")
    done = run_cli(["run", "batch", "--csv", str(bad)], env)
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"{bad}: no header row" in done.stderr
    assert quick_worker.stats.prompts_executed == sent  # refused before any GPU time

    mixed = tmp_path / "mixed.csv"
    mixed.write_text("character_type,character_name,age,gender,custom_prompt\n"
                     "rapper,MC Test,30,male,\nkpop_idol,Old Idol,70,female,\n", encoding="utf-8")
    done = run_cli(["run", "batch", "--csv", str(mixed), *BATCH_LIGHT], env)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "MC Test" in done.stdout and "rejected" in done.stdout and "1/2 made, 1 rejected" in done.stdout
    uri = next(line.split("summary: ", 1)[1] for line in done.stdout.splitlines() if line.startswith("summary: "))
    summary = json.loads(Path(uri.strip().removeprefix("file://")).read_text())
    assert summary["rows"][1]["error"] == "row 2 (line 3), column age: '70': out of range for kpop_idol (17-28)"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--brief", "A short film", "--duration", "0"], "--duration: 0 s is not within (0, 600] s"),
        (["--duration", "30"], "--brief: give a brief"),
        (["--brief", "x", "--music", "__FILE__"], "not usable as music"),
    ],
)
def test_video_bad_input_is_refused_before_the_flow_starts(
    tmp_path: Path, slow_worker: PreviewWorkerThread, args: list[str], fragment: str
) -> None:
    not_audio = tmp_path / "notes.txt"
    not_audio.write_text("not audio")
    proc = run_cli(["run", "video", *[str(not_audio) if a == "__FILE__" else a for a in args]],
                   cli_env(tmp_path, slow_worker), timeout=60)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert fragment in " ".join(proc.stderr.split())
    # Refused by the pre-flight check: no flow run began, so no Prefect traceback before the error line.
    assert "Traceback" not in proc.stderr and "Beginning flow run" not in proc.stderr
    assert not (tmp_path / "store").exists()  # nothing stored


def test_video_with_an_unknown_character_is_refused_before_the_flow_starts(
    tmp_path: Path, slow_worker: PreviewWorkerThread
) -> None:
    proc = run_cli(["run", "video", "--brief", "A walk", "--duration", "6", "--characters", "Nobody Here"],
                   cli_env(tmp_path, slow_worker), timeout=60)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "'Nobody Here' has no character record" in " ".join(proc.stderr.split())
    assert "Traceback" not in proc.stderr and "Beginning flow run" not in proc.stderr
