"""Screenshots of the Prefect UI for a real character run, taken in headless Chromium.

Starts ``prefect server`` (UI on) on a free loopback port with its own PREFECT_HOME, runs the character demo
against it (``reelforge run character`` on embedded preview workers, a local store in the work folder), and
photographs, with Debian's ``chromium`` driven over the DevTools protocol on 127.0.0.1:

- ``progress-running.png``: the progress artifact while the run is still going,
- ``flow-run.png``: the flow run page with its task graph (the run finished),
- ``flow-run-artifacts.png``: the same page on its Artifacts tab,
- ``gallery.png``: the gallery artifact (local store: embedded thumbnails, docs/ui.md), taken only once every
  thumbnail has loaded and decoded in the page,
- ``jobs.png``: the job table artifact.

Each screenshot waits for the page's own content (a JavaScript condition), not a fixed time. Run from the
repository root::

    .venv/bin/python bench/ui_screenshots.py --out docs/ui              # about 2-4 minutes on 2 cores

The test ``tests/integration/test_ui_screenshots.py`` (marker ``ui``) runs ``capture`` and checks the PNGs.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import BIN, REPO, free_port, stop, wait_http

# prefect-facts.md: the flags under which the UI (and its flow-run graph) renders headless.
CHROMIUM_FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
    "--disable-dev-shm-usage", "--force-device-scale-factor=1",
]
SHOTS = ("progress-running", "flow-run", "flow-run-artifacts", "gallery", "jobs")
# True once at least n data: images are in the page and every one has loaded and decoded (naturalWidth > 0).
IMAGES_LOADED = ("((n) => {{ const imgs = [...document.images].filter(i => i.src.startsWith('data:image/'));"
                 " return imgs.length >= n && imgs.every(i => i.complete && i.naturalWidth > 0); }})({n})")
# The centre of the innermost visible element whose text is exactly this (for a real mouse click).
FIND_TEXT = ("((t) => {{ const e = [...document.querySelectorAll('body *')].filter(e => e.textContent.trim() === t"
             " && e.getClientRects().length).pop(); if (!e) return null; const r = e.getBoundingClientRect();"
             " return [r.x + r.width / 2, r.y + r.height / 2]; }})({text})")


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    return None


@dataclass
class UiServer:
    proc: subprocess.Popen[bytes]
    ui: str  # http://127.0.0.1:PORT
    api: str  # .../api

    def post(self, path: str, body: dict[str, Any]) -> Any:
        response = httpx.post(f"{self.api}{path}", json=body, timeout=30)
        response.raise_for_status()
        return response.json()


@contextlib.contextmanager
def prefect_ui_server(workdir: Path) -> Iterator[UiServer]:
    """``prefect server start`` with the UI on (bench/harness.py's turns it off), SQLite in its own home."""
    home = workdir / "prefect-home"
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_UI_ENABLED": "true", "PREFECT_UI_API_URL": api}
    env.pop("PREFECT_API_URL", None)
    log = workdir / "prefect-server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port",
                                 str(port)], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        took = wait_http(f"{api}/health", proc, 240, log)
        wait_http(f"http://127.0.0.1:{port}/", proc, 60, log)
        print(f"prefect server with UI healthy after {took:.1f} s at http://127.0.0.1:{port}", file=sys.stderr)
        yield UiServer(proc, f"http://127.0.0.1:{port}", api)
    finally:
        stop(proc)


class Browser:
    """Headless Chromium driven over the DevTools protocol (loopback): load a page, wait until a JavaScript
    condition holds (the UI fetches and renders after load), optionally run a script (click a tab), then
    capture a PNG. Waiting on the page itself, not on a fixed budget, keeps slow machines from photographing
    a half-rendered page."""

    def __init__(self, chromium: str | None = None) -> None:
        binary = chromium or chromium_binary()
        if binary is None:
            raise RuntimeError("no chromium on PATH (Debian: apt-get install chromium)")
        self._profile = tempfile.TemporaryDirectory(prefix="reelforge-chromium-")
        self.proc = subprocess.Popen(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={self._profile.name}", "--remote-debugging-address=127.0.0.1",
             "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        port_file = Path(self._profile.name) / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.2)
        self.port = int(port_file.read_text().split()[0])
        self._next = 0

    def close(self) -> None:
        stop(self.proc, grace=5)
        self._profile.cleanup()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def shot(self, url: str, path: Path, *, ready: str = "true", click: str | None = None, then_ready: str = "true",
             width: int = 1440, height: int = 1000, within: float = 90.0, settle: float = 1.0) -> Path:
        """Open ``url`` in a new tab of ``width`` x ``height``; wait for ``ready`` (a JS expression), click the
        element whose text is ``click`` and wait for ``then_ready``; PNG of the viewport into ``path``."""
        target = httpx.put(f"http://127.0.0.1:{self.port}/json/new?about:blank", timeout=30).json()
        try:
            with connect(target["webSocketDebuggerUrl"], max_size=None, open_timeout=30) as ws:
                def call(method: str, **params: Any) -> dict[str, Any]:
                    self._next += 1
                    ws.send(json.dumps({"id": self._next, "method": method, "params": params}))
                    while True:
                        message = json.loads(ws.recv(timeout=60))
                        if message.get("id") == self._next:
                            if "error" in message:
                                raise RuntimeError(f"{method}: {message['error']}")
                            return dict(message.get("result", {}))

                def wait(expression: str) -> None:
                    deadline = time.monotonic() + within
                    while True:
                        value = call("Runtime.evaluate", expression=f"Boolean({expression})", returnByValue=True)
                        if value.get("result", {}).get("value") is True:
                            return
                        if time.monotonic() > deadline:
                            raise RuntimeError(f"{url}: not ready within {within} s ({expression})")
                        time.sleep(0.5)

                call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                     mobile=False)
                call("Page.navigate", url=url)
                wait(f"document.readyState === 'complete' && ({ready})")
                if click is not None:
                    found = call("Runtime.evaluate", expression=FIND_TEXT.format(text=json.dumps(click)),
                                 returnByValue=True).get("result", {}).get("value")
                    if not found:
                        raise RuntimeError(f"{url}: nothing to click named {click!r}")
                    for kind in ("mousePressed", "mouseReleased"):
                        call("Input.dispatchMouseEvent", type=kind, x=found[0], y=found[1], button="left",
                             clickCount=1)
                    wait(then_ready)
                time.sleep(settle)  # transitions and canvas frames
                data = call("Page.captureScreenshot", format="png")["data"]
        finally:
            httpx.get(f"http://127.0.0.1:{self.port}/json/close/{target['id']}", timeout=30)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path


@dataclass
class Capture:
    shots: dict[str, Path] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)
    flow_run_id: str = ""
    progress_at_shot: float | None = None  # the progress artifact's value (API) just after its screenshot
    state_at_shot: str = ""  # the flow run's state then
    gallery_images: int = 0  # data: thumbnails in the gallery; its screenshot waited until each had decoded
    result: dict[str, Any] = field(default_factory=dict)


def _artifacts(server: UiServer, flow_run_id: str) -> list[dict[str, Any]]:
    return list(server.post("/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}},
                                                  "limit": 50, "sort": "CREATED_DESC"}))


def _top_flow_run(server: UiServer) -> dict[str, Any] | None:
    runs = server.post("/flow_runs/filter", {"flow_runs": {"parent_task_run_id": {"is_null_": True}},
                                             "limit": 5, "sort": "EXPECTED_START_TIME_DESC"})
    return runs[0] if runs else None


def capture(out: Path, workdir: Path, *, variations: int = 4, size: int = 256, latency: str = "gpu:0.3",
            name: str = "Mina Park") -> Capture:
    """Start the server, run the character demo against it, and take every screenshot into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    found = Capture()
    with prefect_ui_server(workdir) as server, Browser() as browser:
        env = {**os.environ, "PREFECT_API_URL": server.api, "PREFECT_HOME": str(workdir / "client-home"),
               "REELFORGE_STORE": str(workdir / "media-store"), "REELFORGE_PREVIEW_LATENCY": latency,
               "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        cmd = [str(BIN / "reelforge"), "run", "character", "--name", name, "--variations", str(variations),
               "--width", str(size), "--height", str(size), "--json"]
        log = workdir / "character-run.log"
        with log.open("wb") as err:
            run = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=err,
                                   start_new_session=True)
        try:
            # While running: the progress artifact, once it is clearly under way (and well before 100).
            deadline = time.monotonic() + 600
            progress: dict[str, Any] | None = None
            while progress is None:
                if run.poll() is not None:
                    raise RuntimeError(f"the run ended before its progress could be seen:\n{log.read_text()[-3000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError("no running progress artifact within 600 s")
                flow_run = _top_flow_run(server)
                if flow_run and flow_run["state_type"] == "RUNNING":
                    for artifact in _artifacts(server, flow_run["id"]):
                        if artifact["type"] == "progress" and 10 <= float(artifact["data"] or 0) <= 80:
                            progress, found.flow_run_id = artifact, flow_run["id"]
                time.sleep(0.5)
            found.urls["progress-running"] = f"{server.ui}/artifacts/artifact/{progress['id']}"
            found.shots["progress-running"] = browser.shot(
                found.urls["progress-running"], out / "progress-running.png", height=700,
                ready="document.body.innerText.includes('Progress:')")
            flow_run = httpx.get(f"{server.api}/flow_runs/{found.flow_run_id}", timeout=30).json()
            found.state_at_shot = str(flow_run["state_type"])
            current = httpx.get(f"{server.api}/artifacts/{progress['id']}", timeout=30).json()
            found.progress_at_shot = float(current["data"])
            stdout, _ = run.communicate(timeout=1200)
        finally:
            stop(run)
        if run.returncode != 0:
            raise RuntimeError(f"reelforge run character exited {run.returncode}:\n{log.read_text()[-3000:]}")
        found.result = json.loads(stdout)
        by_key = {a["key"]: a for a in _artifacts(server, found.flow_run_id) if a.get("key")}
        gallery = next(a for k, a in by_key.items() if k.endswith("-gallery"))
        jobs = next(a for k, a in by_key.items() if k.endswith("-jobs"))
        found.gallery_images = str(gallery["data"]).count("](<data:image/")
        run_page = f"{server.ui}/runs/flow-run/{found.flow_run_id}"
        found.urls |= {"flow-run": run_page, "flow-run-artifacts": f"{run_page} (Artifacts tab)",
                       "gallery": f"{server.ui}/artifacts/artifact/{gallery['id']}",
                       "jobs": f"{server.ui}/artifacts/artifact/{jobs['id']}"}
        graph_ready = "document.querySelector('canvas') && document.body.innerText.includes('Completed')"
        found.shots["flow-run"] = browser.shot(run_page, out / "flow-run.png", height=1100, settle=4.0,
                                               ready=graph_ready)
        found.shots["flow-run-artifacts"] = browser.shot(
            run_page, out / "flow-run-artifacts.png", height=1300, ready=graph_ready, click="Artifacts",
            then_ready=f"document.body.innerText.includes({json.dumps(gallery['key'])})", settle=3.0)
        found.shots["gallery"] = browser.shot(found.urls["gallery"], out / "gallery.png", height=2000,
                                              ready=IMAGES_LOADED.format(n=found.gallery_images))
        found.shots["jobs"] = browser.shot(found.urls["jobs"], out / "jobs.png", width=1920, height=1300,
                                           ready="document.querySelectorAll('table tr').length > 10")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "ui")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder, removed after")
    parser.add_argument("--variations", type=int, default=4)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--latency", default="gpu:0.3", help="preview workers' latency (slow enough to see "
                        "the run in progress)")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="reelforge-ui-")))
        found = capture(args.out, workdir, variations=args.variations, size=args.size, latency=args.latency)
    print(json.dumps({"flow_run_id": found.flow_run_id, "progress_at_shot": found.progress_at_shot,
                      "state_at_shot": found.state_at_shot, "gallery_images_loaded": found.gallery_images,
                      "urls": found.urls, "shots": {k: str(v) for k, v in found.shots.items()},
                      "final_state": found.result.get("state")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
