"""deployments/comfyui/fetch_models.py against a real HTTP server on 127.0.0.1 (loopback only).

Good, corrupted, truncated (short read, then resumed with Range) and unlocked (no sha256 in the lock: recorded on
first download, a later mismatch refused) files, through `main()` with a lock copy, as the image build runs it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deployments" / "comfyui" / "fetch_models.py"


def _load():
    spec = importlib.util.spec_from_file_location("fetch_models", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["fetch_models"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


fm = _load()

GOOD = b"good weights " * 5000
UNLOCKED = b"weights nobody hashed " * 3000


class Files:
    """What the server serves, and how: path -> bytes; `truncate` paths send half a body on their first GET."""

    def __init__(self) -> None:
        self.body: dict[str, bytes] = {}
        self.truncate_once: set[str] = set()
        self.truncate_always: set[str] = set()
        self.requests: list[tuple[str, str | None]] = []


class Handler(BaseHTTPRequestHandler):
    files: Files

    def log_message(self, *args) -> None:  # keep the test output quiet
        pass

    def do_GET(self) -> None:
        files = self.files
        rng = self.headers.get("Range")
        files.requests.append((self.path, rng))
        data = files.body.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        if rng and rng.startswith("bytes=") and rng.endswith("-"):
            start = int(rng[len("bytes=") : -1])
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path in files.truncate_once or self.path in files.truncate_always:
            files.truncate_once.discard(self.path)
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def server():
    files = Files()
    handler = type("BoundHandler", (Handler,), {"files": files})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield files, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _lock(tmp_path: Path, entries: list[dict]) -> Path:
    """A lock copy in the repository's layout (comments included, which recording must keep)."""
    lines = ["# a lock copy for tests\n", "models:\n"]
    for e in entries:
        lines.append(f"  - folder: {e['folder']}\n")
        lines.append(f"    name: {e['name']}\n")
        lines.append("    # provenance comment that must survive\n")
        lines.append(f"    url: {e['url']}\n")
        lines.append(f"    sha256: {e.get('sha256') or 'null'}\n")
        lines.append(f"    size: {e.get('size') or 'null'}\n")
        lines.append("    license: test\n")
        lines.append(f"    used_by: [{e.get('used_by', 't')}]\n")
    path = tmp_path / "lock.yaml"
    path.write_text("".join(lines), encoding="utf-8")
    return path


def _run(lock: Path, models: Path, *extra: str) -> int:
    return fm.main(["--lock", str(lock), "--models-dir", str(models), "--backoff", "0", *extra])


def test_good_file_is_fetched_verified_and_then_skipped(server, tmp_path, capsys):
    files, base = server
    files.body["/good.safetensors"] = GOOD
    lock = _lock(
        tmp_path,
        [
            {
                "folder": "vae",
                "name": "good.safetensors",
                "url": f"{base}/good.safetensors",
                "sha256": _sha(GOOD),
                "size": len(GOOD),
            }
        ],
    )
    models = tmp_path / "models"
    assert _run(lock, models) == 0
    dest = models / "vae" / "good.safetensors"
    assert dest.read_bytes() == GOOD
    assert not dest.with_name(dest.name + ".part").exists()
    assert "fetched  vae/good.safetensors\n" in capsys.readouterr().out
    # A second run downloads nothing: the present file matches size and digest.
    before = len(files.requests)
    assert _run(lock, models) == 0
    assert len(files.requests) == before
    assert "ok       vae/good.safetensors" in capsys.readouterr().out
    assert _run(lock, models, "--verify", "--deep") == 0


def test_corrupted_file_is_refused_and_not_left_in_place(server, tmp_path, capsys):
    files, base = server
    corrupt = bytearray(GOOD)
    corrupt[100] ^= 0xFF
    files.body["/bad.safetensors"] = bytes(corrupt)
    lock = _lock(
        tmp_path,
        [
            {
                "folder": "checkpoints",
                "name": "bad.safetensors",
                "url": f"{base}/bad.safetensors",
                "sha256": _sha(GOOD),
                "size": len(GOOD),
            }
        ],
    )
    models = tmp_path / "models"
    assert _run(lock, models) == 1
    err = capsys.readouterr().err
    assert "FAILED   checkpoints/bad.safetensors" in err and "does not match the lock" in err
    folder = models / "checkpoints"
    assert list(folder.iterdir()) == [], "neither the model nor its .part may remain"
    assert len(files.requests) == 1, "a digest mismatch is not retried"
    # A corrupt file already in place (a bad copy on a volume) is removed, never left for ComfyUI to load.
    (folder / "bad.safetensors").write_bytes(bytes(corrupt))
    assert _run(lock, models, "--verify", "--deep") == 1
    assert _run(lock, models) == 1
    assert not (folder / "bad.safetensors").exists()
    assert "remove   checkpoints/bad.safetensors" in capsys.readouterr().err


def test_truncated_download_is_resumed_with_range(server, tmp_path):
    files, base = server
    files.body["/big.safetensors"] = GOOD
    files.truncate_once.add("/big.safetensors")
    lock = _lock(
        tmp_path,
        [
            {
                "folder": "diffusion_models",
                "name": "big.safetensors",
                "url": f"{base}/big.safetensors",
                "sha256": _sha(GOOD),
                "size": len(GOOD),
            }
        ],
    )
    models = tmp_path / "models"
    assert _run(lock, models) == 0
    assert (models / "diffusion_models" / "big.safetensors").read_bytes() == GOOD
    assert files.requests[0] == ("/big.safetensors", None)
    assert files.requests[1] == ("/big.safetensors", f"bytes={len(GOOD) // 2}-"), "the kept prefix is resumed"


def test_truncated_download_without_a_locked_size_is_caught_by_content_length(server, tmp_path, capsys):
    """http.client returns a short body silently: the announced Content-Length is what catches it."""
    files, base = server
    files.body["/short.pth"] = UNLOCKED
    files.truncate_always.add("/short.pth")
    lock = _lock(tmp_path, [{"folder": "upscale_models", "name": "short.pth", "url": f"{base}/short.pth"}])
    models = tmp_path / "models"
    assert _run(lock, models, "--retries", "2") == 1
    err = capsys.readouterr().err
    assert "short read" in err and "FAILED   upscale_models/short.pth" in err
    assert len(files.requests) == 3, "one attempt and two retries"
    assert not (models / "upscale_models" / "short.pth").exists(), "a truncated file is never renamed into place"
    assert yaml.safe_load(lock.read_text())["models"][0]["sha256"] is None, "nothing recorded for a failed fetch"
    # The .part is a good prefix: once the server behaves, the next run resumes it and completes.
    files.truncate_always.clear()
    assert _run(lock, models) == 0
    assert (models / "upscale_models" / "short.pth").read_bytes() == UNLOCKED


def test_unlocked_digest_is_recorded_on_first_download_and_a_later_mismatch_refused(server, tmp_path, capsys):
    files, base = server
    files.body["/new.safetensors"] = UNLOCKED
    lock = _lock(
        tmp_path,
        [
            {"folder": "audio_encoders", "name": "new.safetensors", "url": f"{base}/new.safetensors"},
            {"folder": "vae", "name": "other.safetensors", "url": f"{base}/other.safetensors", "used_by": "x"},
        ],
    )
    models = tmp_path / "models"
    assert _run(lock, models, "--only", "t") == 0
    out = capsys.readouterr().out
    assert f"sha256 {_sha(UNLOCKED)}, size {len(UNLOCKED)}; recorded in {lock}" in out
    text = lock.read_text()
    assert "# provenance comment that must survive" in text and text.startswith("# a lock copy for tests")
    entries = {e["name"]: e for e in yaml.safe_load(text)["models"]}
    assert entries["new.safetensors"]["sha256"] == _sha(UNLOCKED)
    assert entries["new.safetensors"]["size"] == len(UNLOCKED)
    assert entries["other.safetensors"]["sha256"] is None, "only the fetched entry is recorded"
    # Upstream changes the file (same length): the recorded digest refuses it.
    dest = models / "audio_encoders" / "new.safetensors"
    changed = UNLOCKED[:-1] + b"!"
    files.body["/new.safetensors"] = changed
    dest.unlink()
    assert _run(lock, models, "--only", "t") == 1
    assert "does not match the lock" in capsys.readouterr().err
    assert not dest.exists() and not dest.with_name(dest.name + ".part").exists()


def test_no_record_leaves_the_lock_alone_and_says_so(server, tmp_path, capsys):
    files, base = server
    files.body["/n.safetensors"] = UNLOCKED
    lock = _lock(tmp_path, [{"folder": "vae", "name": "n.safetensors", "url": f"{base}/n.safetensors"}])
    before = lock.read_text()
    assert _run(lock, tmp_path / "models", "--no-record") == 0
    assert lock.read_text() == before
    assert "NOT recorded: put them in the lock" in capsys.readouterr().out


def test_verify_mode_downloads_nothing_and_fails_on_missing_or_wrong_size(server, tmp_path, capsys):
    files, base = server
    files.body["/v.safetensors"] = GOOD
    lock = _lock(
        tmp_path,
        [
            {
                "folder": "vae",
                "name": "v.safetensors",
                "url": f"{base}/v.safetensors",
                "sha256": _sha(GOOD),
                "size": len(GOOD),
            }
        ],
    )
    models = tmp_path / "models"
    assert _run(lock, models, "--verify") == 1
    assert "NOTREADY vae/v.safetensors: missing" in capsys.readouterr().err
    assert files.requests == []
    (models / "vae").mkdir(parents=True)
    (models / "vae" / "v.safetensors").write_bytes(GOOD[:-1])
    assert _run(lock, models, "--verify") == 1
    assert "lock says" in capsys.readouterr().err
    (models / "vae" / "v.safetensors").write_bytes(GOOD)
    assert _run(lock, models, "--verify") == 0
    assert files.requests == []


def test_plain_http_only_on_loopback(tmp_path):
    ok = {"folder": "vae", "name": "a", "url": "http://127.0.0.1:9/a", "used_by": []}
    assert fm.plan({"models": [ok]}, tmp_path)
    with pytest.raises(fm.LockFileError):
        fm.plan({"models": [{**ok, "url": "http://example.com/a"}]}, tmp_path)


def test_hf_token_is_not_repeated_across_redirects(monkeypatch):
    """The token goes to huggingface.co only: urllib repeats ordinary headers to a redirect's host (the CDN)."""
    seen = {}

    def fake_urlopen(request, timeout):
        seen["sent"] = dict(request.header_items())
        seen["repeated_on_redirect"] = dict(request.headers)
        raise OSError("stop")

    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    monkeypatch.setattr(fm.urllib.request, "urlopen", fake_urlopen)
    item = fm.Download("vae", "x", "https://huggingface.co/o/r/resolve/main/x", None, None, Path("/nonexistent/x"))
    with pytest.raises(OSError):
        fm._open(item, 0)
    assert seen["sent"].get("Authorization") == "Bearer hf_secret"
    assert "Authorization" not in seen["repeated_on_redirect"], "must be an unredirected header"
    other = fm.Download("vae", "x", "https://github.com/x/y/releases/download/v1/x", None, None, Path("/n/x"))
    with pytest.raises(OSError):
        fm._open(other, 0)
    assert "Authorization" not in seen["sent"], "the token is for huggingface.co only"
