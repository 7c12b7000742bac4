"""``reelforge workers`` against real preview workers (and a dead one); ``reelforge characters list|show``."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reelforge.characters import character_slug
from reelforge.cli import app
from reelforge.comfy import ComfyClient, JobOwner
from reelforge.liveness import Holder
from reelforge.preview.server import PreviewWorker, PreviewWorkerThread
from reelforge.storage import JobFacts, LocalStore, Manifest, StageRecord, StoredOutput, write_manifest
from reelforge.templates import load_template

runner = CliRunner()
TOKEN = "comfy-token-7d1f-never-shown"

INVERT = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 1, "color": 0}},
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "busy"}},
}


def dead_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def busy_worker(tmp_path: Path) -> Iterator[tuple[PreviewWorkerThread, list[str]]]:
    """A preview worker that ran a base-image template, then runs one of our prompts with one more pending."""
    thread = PreviewWorkerThread(PreviewWorker(tmp_path / "w", latency="fixed:1.5", name="busy"))
    thread.start()

    async def prepare() -> list[str]:
        async with ComfyClient(thread.url, use_websocket=False) as client:
            graph = load_template("character_base_stylized").bind({"prompt": "a lighthouse", "seed": 1})
            await client.run(graph, timeout=60)
            owner = JobOwner(job_id="mina-v1-var01", flow_run_id="11111111-2222-3333-4444-555555555555")
            return [await client.submit(INVERT, owner=owner) for _ in range(2)] + [await client.submit(INVERT)]

    prompts = thread.call(prepare(), timeout=90)
    yield thread, prompts
    thread.stop()


def test_workers_reports_health_classes_models_last_loaded_queue_and_our_prompts(
    busy_worker: tuple[PreviewWorkerThread, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    thread, (running, pending, foreign) = busy_worker
    dead = dead_url()
    monkeypatch.setenv("REELFORGE_COMFY_URLS", f"image+train={thread.url},video={dead}")
    monkeypatch.setenv("REELFORGE_COMFY_TOKEN", TOKEN)
    result = runner.invoke(app, ["workers", "--json", "--timeout", "2"])
    assert result.exit_code == 0, result.output
    up, down = json.loads(result.stdout)
    assert up["url"] == thread.url and up["healthy"] and up["labels"] == ["image", "train"]
    assert up["node_classes"] > 100 and up["models"]["checkpoints"] >= 1
    assert up["last_loaded"] == ["checkpoints/sd_xl_base_1.0.safetensors"]
    assert up["queue_depth"] == 3 and up["running"] == 1 and up["pending"] == 2
    assert {(p["prompt_id"], p["state"], p["flow_run_id"]) for p in up["ours"]} == {
        (running, "running", "11111111-2222-3333-4444-555555555555"),
        (pending, "pending", "11111111-2222-3333-4444-555555555555"),
    }  # the third prompt is nobody's of ours
    assert foreign not in {p["prompt_id"] for p in up["ours"]}
    assert down["url"] == dead and not down["healthy"] and down["labels"] == ["video"]
    assert down["error"].startswith("unreachable: connection refused")
    assert TOKEN not in result.output

    text = runner.invoke(app, ["workers", "--timeout", "2"])
    assert text.exit_code == 0
    assert f"{thread.url}  [image+train]  healthy" in text.stdout
    assert "last loaded   checkpoints/sd_xl_base_1.0.safetensors" in text.stdout
    assert f"running  {running}  job mina-v1-var01  flow run 11111111-2222" in text.stdout
    assert f"{dead}  [video]  DOWN: unreachable: connection refused" in text.stdout


def test_workers_with_none_configured_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REELFORGE_COMFY_URLS", raising=False)
    result = runner.invoke(app, ["workers"])
    assert result.exit_code == 0 and "no workers configured" in result.stdout
    assert json.loads(runner.invoke(app, ["workers", "--json"]).stdout) == []


# -- characters -------------------------------------------------------------------------------------------


def _character(store: LocalStore, name: str, version: int, *, passed: bool | None) -> None:
    slug = character_slug(name)
    prefix = f"characters/{slug}/v{version}/"
    store.reserve_version(f"characters/{slug}/", Holder.current(label=name))
    base = store.put_bytes(f"{name} base v{version}".encode(), f"{prefix}base/b{version}.png", kind="image")
    voice = store.put_bytes(f"{name} voice".encode(), f"{prefix}voice/v{version}.flac", kind="audio")
    stages = [
        StageRecord(stage="character_base_stylized", version="t", kind="gpu", job_id="base", cache_key="k1",
                    outputs=[StoredOutput(**base.model_dump(), node_id="9")],
                    job=JobFacts(prompt_id="p", worker="w", gpu_seconds=2.0, cost=0.1)),
        StageRecord(stage="voice_design", version="t", kind="gpu", job_id="voice", cache_key="k2",
                    outputs=[StoredOutput(**voice.model_dump(), node_id="3")]),
    ]
    details = {"lora": None, "verdict": None}
    if passed is not None:
        details = {"lora": {"version": 1, "file_key": f"loras/{slug}/v1/lora.safetensors", "family": "sdxl",
                            "rank": 8},
                   "verdict": {"passed": passed, "score": 0.91 if passed else 0.4, "threshold": 0.8}}
    manifest = Manifest(subject=slug, kind="character", name=name, version=version, stages=stages, details=details)
    write_manifest(store, manifest, f"{prefix}manifest.json")


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalStore:
    root = tmp_path / "store"
    monkeypatch.setenv("REELFORGE_STORE", str(root))
    local = LocalStore(root)
    _character(local, "김민아", 1, passed=False)
    _character(local, "김민아", 2, passed=True)
    _character(local, "Jun Park", 1, passed=None)
    local.reserve_version(f"characters/{character_slug('Jun Park')}/", Holder.current(label="Jun Park"))
    return local


def test_characters_list(store: LocalStore) -> None:
    result = runner.invoke(app, ["characters", "list", "--json"])
    assert result.exit_code == 0, result.output
    entries = {e["slug"]: e for e in json.loads(result.stdout)}
    mina = entries[character_slug("김민아")]
    assert mina["name"] == "김민아" and [v["version"] for v in mina["versions"]] == [1, 2]
    assert [v["verdict"] for v in mina["versions"]] == ["failed", "passed"]
    assert mina["versions"][1]["manifest_uri"].startswith("file://")
    jun = entries[character_slug("Jun Park")]
    assert [(v["version"], v["state"]) for v in jun["versions"]] == [(1, "complete"), (2, "reserved")]
    assert jun["versions"][0]["voice"]["key"].endswith("voice/v1.flac")
    text = runner.invoke(app, ["characters", "list"]).stdout
    assert "SLUG" in text and "김민아" in text and "passed 0.91" in text and "v1,v2(reserved)" in text


def test_characters_show_by_name_or_slug(store: LocalStore) -> None:
    slug = character_slug("김민아")
    by_name = runner.invoke(app, ["characters", "show", "김민아", "--json"])
    by_slug = runner.invoke(app, ["characters", "show", slug, "--json"])
    assert by_name.exit_code == by_slug.exit_code == 0
    assert json.loads(by_name.stdout) == json.loads(by_slug.stdout)
    shown = json.loads(by_name.stdout)
    latest = shown["versions"][-1]
    assert latest["lora"]["file_key"] == f"loras/{slug}/v1/lora.safetensors" and latest["gpu_seconds"] == 2.0
    assert [a["stage"] for a in latest["artifacts"]] == ["character_base_stylized", "voice_design"]
    text = runner.invoke(app, ["characters", "show", "jun park"]).stdout  # names are matched case-insensitively
    assert "Jun Park" in text and "no LoRA" in text and "v2  reserved" in text


def test_characters_show_unknown_suggests_the_near_miss(store: LocalStore) -> None:
    result = runner.invoke(app, ["characters", "show", "Jun Parks"])
    assert result.exit_code == 2
    assert "no character 'Jun Parks' in the store; did you mean 'Jun Park'?" in result.stderr
    nothing = runner.invoke(app, ["characters", "show", "Zzyzx"])
    assert nothing.exit_code == 2 and "did you mean" not in nothing.stderr


def test_characters_list_on_an_empty_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REELFORGE_STORE", str(tmp_path / "empty"))
    result = runner.invoke(app, ["characters", "list"])
    assert result.exit_code == 0 and "no characters stored" in result.stdout




def _production(store: LocalStore, slug: str, title: str, version: int, takes: int) -> None:
    prefix = f"productions/{slug}/"
    store.reserve_version(prefix, Holder.current(label=title))
    video = store.put_bytes(f"{title} v{version}".encode(), f"{prefix}assembly/{version}.mp4", kind="video")
    stages = [StageRecord(stage="assemble", version="t", kind="process", job_id="assembly", cache_key=f"a{version}",
                          outputs=[StoredOutput(**video.model_dump(), node_id="video")],
                          job=JobFacts(prompt_id="p", worker="w", gpu_seconds=3.5, cost=0.2))]
    details = {"script": {"key": f"{prefix}script/s{version}.json"}, "video": video.key,
               "cast": {"Mina Park": {"slug": "mina-park", "version": 2}},
               "takes": [{"scene": i + 1, "shot": 1, "take": version, "new": True,
                          "place": f"{prefix}scene-{i + 1:02d}/shot-01/take-{version:02d}/"} for i in range(takes)]}
    manifest = Manifest(subject=slug, kind="production", name=title, version=version, stages=stages,
                        details=details)
    write_manifest(store, manifest, f"{prefix}v{version}/manifest.json")


def test_productions_list_and_show(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "store"
    monkeypatch.setenv("REELFORGE_STORE", str(root))
    store = LocalStore(root)
    _production(store, "bakery-at-dawn", "Bakery at Dawn", 1, takes=3)
    _production(store, "bakery-at-dawn", "Bakery at Dawn", 2, takes=3)
    listed = runner.invoke(app, ["productions", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    [entry] = json.loads(listed.stdout)
    assert entry["slug"] == "bakery-at-dawn" and entry["title"] == "Bakery at Dawn"
    assert [v["version"] for v in entry["versions"]] == [1, 2]
    assert entry["versions"][1]["video_uri"].endswith("/productions/bakery-at-dawn/assembly/2.mp4")
    text = runner.invoke(app, ["productions", "list"]).stdout
    assert "Bakery at Dawn" in text and "v1,v2" in text
    shown = runner.invoke(app, ["productions", "show", "bakery at dawn"])  # by title, any case
    assert shown.exit_code == 0, shown.output
    assert "Mina Park (mina-park v2)" in shown.stdout and "scene 3 shot 1 take 2" in shown.stdout
    assert json.loads(runner.invoke(app, ["productions", "show", "bakery-at-dawn", "--json"]).stdout)[
        "versions"][0]["takes"][0]["place"] == "productions/bakery-at-dawn/scene-01/shot-01/take-01/"
    missing = runner.invoke(app, ["productions", "show", "bakery-at-dusk"])
    assert missing.exit_code == 2 and "did you mean 'bakery-at-dawn'" in missing.stderr
