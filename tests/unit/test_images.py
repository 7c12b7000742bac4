"""The worker and orchestrator images, as far as they can be checked without building them.

* The lock covers what the template engine loads (tests/unit/test_workflows_static.py checks the raw JSON and
  manifests; this checks `reelforge.templates.load_all()`, the objects the flows use, plus the fetcher's folders
  and the Dockerfile's clones).
* entrypoint.sh / healthcheck.sh / proxy/run.sh pass shellcheck and behave: ComfyUI starts only when the models
  are present, the shared LoRA folder reaches ComfyUI's arguments, the healthcheck needs the models and a live
  /system_stats.
* The Caddy proxy (when caddy is installed) lets only the bearer token through, on loopback.
* No Dockerfile bakes a secret into ENV/ARG; the orchestrator image installs this repository (editable).
"""

from __future__ import annotations

import http.server
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from reelforge.templates.catalogue import core_catalogue
from reelforge.templates.lock import load_lock
from reelforge.templates.template import load_all

ROOT = Path(__file__).resolve().parents[2]
COMFY = ROOT / "deployments" / "comfyui"
ORCH = ROOT / "deployments" / "orchestrator"
LOCK_PATH = COMFY / "lock.yaml"
SCRIPTS = [COMFY / "entrypoint.sh", COMFY / "healthcheck.sh", COMFY / "proxy" / "run.sh"]
DOCKERFILES = sorted((ROOT / "deployments").rglob("Dockerfile"))
SECRET_WORDS = re.compile(r"TOKEN|KEY|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)


def _fetch_models():
    import importlib.util

    spec = importlib.util.spec_from_file_location("fetch_models", COMFY / "fetch_models.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("fetch_models", module)
    spec.loader.exec_module(module)
    return module


# ---- the lock covers every template the engine loads


def test_every_loaded_template_has_its_classes_and_models_in_the_lock():
    lock = load_lock(LOCK_PATH)
    core = core_catalogue()
    locked = {m.key: m for m in lock.models}
    folders = _fetch_models().FOLDER_DIRS
    templates = load_all()
    assert len(templates) >= 15
    problems = []
    for name, template in templates.items():
        declared = {c.class_: c.pack for c in template.custom_nodes}
        for cls in sorted(template.node_classes):
            if core.is_core(cls):
                continue
            pack = lock.pack_of(cls)
            if pack is None:
                problems.append(f"{name}: {cls} is neither core nor in a locked pack")
            elif declared.get(cls) != pack.pack:
                problems.append(f"{name}: {cls} is in pack {pack.pack} but the manifest says {declared.get(cls)}")
        for ref in template.models:
            model = locked.get((ref.folder, ref.name))
            if model is None:
                problems.append(f"{name}: model {ref.folder}/{ref.name} is not in lock.yaml")
            elif name not in model.used_by:
                problems.append(f"lock.yaml: {ref.folder}/{ref.name} used_by lacks {name}")
            if ref.folder not in folders:
                problems.append(f"{name}: fetch_models.py has no directory for folder key {ref.folder!r}")
    assert not problems, "\n".join(problems)


def test_the_worker_dockerfile_clones_every_locked_pack_at_its_commit():
    lock = load_lock(LOCK_PATH)
    text = (COMFY / "Dockerfile").read_text(encoding="utf-8")
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.MULTILINE))
    for pack in lock.custom_nodes:
        repo_arg = next((k for k, v in args.items() if v == pack.repo), None)
        commit_arg = next((k for k, v in args.items() if v == pack.commit), None)
        assert repo_arg and commit_arg, f"Dockerfile lacks ARGs for {pack.pack} ({pack.repo} @ {pack.commit})"
        dest = f"/opt/ComfyUI/custom_nodes/{pack.pack}"
        assert f'git clone "${repo_arg}" {dest}' in text, f"{pack.pack} is not cloned into {dest}"
        assert f'git -C {dest} checkout --detach "${commit_arg}"' in text


def test_every_lock_model_has_a_folder_the_fetcher_knows():
    fm = _fetch_models()
    lock = yaml.safe_load(LOCK_PATH.read_text(encoding="utf-8"))
    unknown = {m["folder"] for m in lock["models"]} - set(fm.FOLDER_DIRS)
    assert not unknown, f"fetch_models.py cannot place folder keys {unknown}"


# ---- shell scripts


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shell_scripts_pass_shellcheck(script):
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (apt-get install -y shellcheck)")
    assert os.access(script, os.X_OK), f"{script.name} must be executable"
    assert script.read_text(encoding="utf-8").startswith("#!/bin/sh\n")
    result = subprocess.run([shellcheck, "-s", "sh", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


FAKE_MAIN = """import json, sys
with open(sys.argv[0] + ".argv", "w") as f:
    json.dump(sys.argv[1:], f)
"""


def _worker(tmp_path: Path, present: bool) -> dict[str, str]:
    """A fake ComfyUI folder (main.py records its argv), a one-model lock, the model present or not."""
    comfy = tmp_path / "ComfyUI"
    comfy.mkdir()
    (comfy / "main.py").write_text(FAKE_MAIN, encoding="utf-8")
    data = b"tiny model"
    lock = tmp_path / "lock.yaml"
    lock.write_text(
        yaml.safe_dump(
            {
                "models": [
                    {
                        "folder": "vae",
                        "name": "m.safetensors",
                        "url": "https://example.invalid/m",
                        "sha256": None,
                        "size": len(data),
                        "used_by": ["t"],
                    }
                ]
            }
        ),
        encoding="utf-8",
    )
    if present:
        (comfy / "models" / "vae").mkdir(parents=True)
        (comfy / "models" / "vae" / "m.safetensors").write_bytes(data)
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "COMFYUI_DIR": str(comfy),
        "REELFORGE_LOCK": str(lock),
        "REELFORGE_FETCH_SCRIPT": str(COMFY / "fetch_models.py"),
        "PYTHON": sys.executable,
        "REELFORGE_READY_FILE": str(tmp_path / "ready"),
        "REELFORGE_STATE_DIR": str(tmp_path),
    }


def _sh(script: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", str(script), *args], env=env, capture_output=True, text=True, timeout=60)


def test_entrypoint_refuses_to_start_comfyui_without_its_models(tmp_path):
    env = _worker(tmp_path, present=False)
    (tmp_path / "ready").write_text("stale")
    result = _sh(COMFY / "entrypoint.sh", env)
    assert result.returncode == 1
    assert "NOTREADY vae/m.safetensors: missing" in result.stderr and "not ready" in result.stderr
    assert not (tmp_path / "ComfyUI" / "main.py.argv").exists(), "ComfyUI must not start"
    assert not (tmp_path / "ready").exists(), "a stale ready marker is removed"


def test_entrypoint_starts_comfyui_when_models_are_present(tmp_path):
    env = _worker(tmp_path, present=True) | {"COMFYUI_PORT": "8190"}
    result = _sh(COMFY / "entrypoint.sh", env, "--lowvram")
    assert result.returncode == 0, result.stderr
    argv = yaml.safe_load((tmp_path / "ComfyUI" / "main.py.argv").read_text())
    assert argv == ["--listen", "0.0.0.0", "--port", "8190", "--lowvram"]
    assert (tmp_path / "ready").exists()


def test_entrypoint_adds_the_shared_lora_folder(tmp_path):
    shared = tmp_path / "shared loras"  # a space: quoting matters
    shared.mkdir()
    env = _worker(tmp_path, present=True) | {"REELFORGE_LORA_SHARED_DIR": str(shared)}
    result = _sh(COMFY / "entrypoint.sh", env)
    assert result.returncode == 0, result.stderr
    argv = yaml.safe_load((tmp_path / "ComfyUI" / "main.py.argv").read_text())
    config = Path(argv[argv.index("--extra-model-paths-config") + 1])
    assert yaml.safe_load(config.read_text()) == {"reelforge": {"loras": str(shared)}}
    # A shared folder that is not mounted is an error, not a worker that silently lacks the LoRAs.
    missing = env | {"REELFORGE_LORA_SHARED_DIR": str(tmp_path / "not-mounted")}
    (tmp_path / "ComfyUI" / "main.py.argv").unlink()
    result = _sh(COMFY / "entrypoint.sh", missing)
    assert result.returncode == 1 and "not a readable directory" in result.stderr
    assert not (tmp_path / "ComfyUI" / "main.py.argv").exists()


def test_entrypoint_gives_comfyui_the_models_folder_it_verified(tmp_path):
    env = _worker(tmp_path, present=True)
    volume = tmp_path / "models volume"
    (tmp_path / "ComfyUI" / "models").rename(volume)  # the models live on a volume elsewhere
    env |= {"REELFORGE_MODELS_DIR": str(volume)}
    result = _sh(COMFY / "entrypoint.sh", env)
    assert result.returncode == 0, result.stderr
    argv = yaml.safe_load((tmp_path / "ComfyUI" / "main.py.argv").read_text())
    config = yaml.safe_load(Path(argv[argv.index("--extra-model-paths-config") + 1]).read_text())
    expected = {"base_path": str(volume), "is_default": True, "vae": "vae", "loras": "loras"}
    assert config == {"reelforge_models": expected}
    # (Without it no extra config is passed: test_entrypoint_starts_comfyui_when_models_are_present.)


class _Stats(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        body = b'{"system": {}}' if self.path == "/system_stats" else b"upstream " + self.path.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def upstream():
    servers = []

    def start() -> int:
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Stats)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return httpd.server_address[1]

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


def test_healthcheck_needs_the_marker_the_models_and_a_live_comfyui(tmp_path, upstream):
    env = _worker(tmp_path, present=True)
    port = upstream()
    env["COMFYUI_PORT"] = str(port)
    result = _sh(COMFY / "healthcheck.sh", env)
    assert result.returncode == 1 and "has not verified" in result.stderr
    (tmp_path / "ready").touch()
    result = _sh(COMFY / "healthcheck.sh", env)
    assert result.returncode == 0, result.stderr
    (tmp_path / "ComfyUI" / "models" / "vae" / "m.safetensors").unlink()  # the volume went away
    result = _sh(COMFY / "healthcheck.sh", env)
    assert result.returncode == 1 and "models missing" in result.stderr
    (tmp_path / "b").mkdir()
    env_dead = _worker(tmp_path / "b", present=True) | {"COMFYUI_PORT": str(_free_port())}  # nothing listens
    (tmp_path / "b" / "ready").touch()
    result = _sh(COMFY / "healthcheck.sh", env_dead)
    assert result.returncode == 1 and "does not answer" in result.stderr


# ---- the authenticating proxy

TOKEN = "rf-test-token-0123456789abcdef"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, token: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.mark.parametrize(
    ("token", "why"),
    [(None, "must be set"), ("short", "must be set"), ("a" * 20 + "*", "may only use"), ("{env.HOME}" * 3, "may only")],
)
def test_proxy_refuses_to_start_with_an_unusable_token(tmp_path, token, why):
    env = {"PATH": os.environ["PATH"], "CADDY": "/bin/false", "REELFORGE_PROXY_ADDRESS": "http://127.0.0.1:1"}
    if token is not None:
        env["REELFORGE_COMFY_TOKEN"] = token
    result = _sh(COMFY / "proxy" / "run.sh", env)
    assert result.returncode == 1 and why in result.stderr


def test_proxy_refuses_plain_http_by_default(tmp_path):
    env = {
        "PATH": os.environ["PATH"],
        "CADDY": "/bin/true",
        "REELFORGE_COMFY_TOKEN": TOKEN,
        "REELFORGE_PROXY_TLS_DIR": str(tmp_path),
    }
    result = _sh(COMFY / "proxy" / "run.sh", env)
    assert result.returncode == 1 and "refusing plain HTTP" in result.stderr
    (tmp_path / "tls.caddy").write_text("tls /certs/tls.crt /certs/tls.key\n")
    assert _sh(COMFY / "proxy" / "run.sh", env).returncode == 0  # /bin/true stands in for caddy


def test_proxy_lets_only_the_token_through(tmp_path, upstream):
    caddy = shutil.which("caddy")
    if caddy is None:
        pytest.skip("caddy is not installed (apt-get install -y caddy): the proxy is checked only by run.sh here")
    comfy_port, fetch_port, port = upstream(), upstream(), _free_port()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "XDG_DATA_HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path),
        "REELFORGE_COMFY_TOKEN": TOKEN,
        "REELFORGE_PROXY_ADDRESS": f"http://127.0.0.1:{port}",
        "REELFORGE_PROXY_TLS_DIR": str(tmp_path / "tls.d"),
        "COMFYUI_UPSTREAM": f"127.0.0.1:{comfy_port}",
        "REELFORGE_MODELFETCH_UPSTREAM": f"127.0.0.1:{fetch_port}",
    }
    proc = subprocess.Popen(
        ["sh", str(COMFY / "proxy" / "run.sh")], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                _get(base + "/")
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        f"caddy did not start: {proc.stderr.read() if proc.poll() is not None else ''}"
                    ) from None
                time.sleep(0.2)
        assert _get(base + "/system_stats")[0] == 401
        assert _get(base + "/system_stats", "wrong-token-0123456789")[0] == 401
        assert _get(base + "/system_stats", TOKEN[:-1])[0] == 401
        assert _get(base + "/prompt", TOKEN + "x")[0] == 401
        assert _get(base + "/system_stats", TOKEN) == (200, '{"system": {}}')
        status, body = _get(base + "/reelforge/models/fetch", TOKEN)
        assert status == 200 and body == "upstream /reelforge/models/fetch"
        assert _get(base + "/reelforge/models/fetch")[0] == 401
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# ---- Dockerfiles: no baked secrets, the orchestrator installs this repository


def test_there_are_two_dockerfiles():
    assert {p.relative_to(ROOT).as_posix() for p in DOCKERFILES} >= {
        "deployments/comfyui/Dockerfile",
        "deployments/orchestrator/Dockerfile",
    }


def _instructions(path: Path) -> list[str]:
    """Dockerfile instructions with continuation lines joined and comments dropped."""
    out, current = [], ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if not current and line.lstrip().startswith("#"):
            continue
        current += line.rstrip("\\").strip() + " " if line.rstrip().endswith("\\") else line.strip()
        if not line.rstrip().endswith("\\"):
            if current.strip():
                out.append(current.strip())
            current = ""
    return out


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_no_secret_is_baked_into_env_or_arg(dockerfile):
    baked = []
    for instruction in _instructions(dockerfile):
        keyword, _, rest = instruction.partition(" ")
        if keyword.upper() not in ("ENV", "ARG"):
            continue
        names = re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)(?==|\s|$)", rest)
        baked += [name for name in names if SECRET_WORDS.search(name)]
    assert not baked, f"{dockerfile}: ENV/ARG would bake secrets into the image: {baked}"


def test_the_secret_checker_catches_a_baked_token(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM x\nENV A=1 \\\n    REELFORGE_COMFY_TOKEN=abc\nARG HF_TOKEN\n")
    with pytest.raises(AssertionError, match=r"REELFORGE_COMFY_TOKEN.*HF_TOKEN"):
        test_no_secret_is_baked_into_env_or_arg(bad)


def test_the_build_secret_is_mounted_for_the_non_root_user():
    text = (COMFY / "Dockerfile").read_text(encoding="utf-8")
    uid = re.search(r"useradd --uid (\d+)", text).group(1)
    assert re.search(rf"--mount=type=secret,id=hf_token,required=false,uid={uid}\b", text)
    instructions = _instructions(COMFY / "Dockerfile")
    users = [i for i in instructions if i.startswith("USER ")]
    assert users and users[-1] != "USER root", "the worker must run as a non-root user"
    assert 'ENTRYPOINT ["/opt/reelforge/entrypoint.sh"]' in instructions
    assert any(i.startswith("HEALTHCHECK ") and "/opt/reelforge/healthcheck.sh" in i for i in instructions)
    copied = next(i for i in instructions if i.startswith("COPY lock.yaml"))
    for name in copied.split()[1:-1]:
        assert (COMFY / name).is_file(), f"COPY {name}: not in deployments/comfyui"


def test_the_orchestrator_image_installs_this_repository():
    dockerfile = ORCH / "Dockerfile"
    instructions = _instructions(dockerfile)
    workdir = next(i.split()[1] for i in instructions if i.startswith("WORKDIR "))
    installs = [i for i in instructions if i.startswith("RUN ") and "pip install" in i]
    assert installs, "the orchestrator Dockerfile must pip install reelforge"
    target = re.search(r"pip install -e (\S+)", installs[0])
    assert target, "an editable install: templates are found in workflows/ beside the package"
    # Every COPY source exists in the build context (the repository root) and lands under the install path.
    copied = []
    for instruction in instructions:
        if instruction.startswith("COPY "):
            *sources, dest = instruction.split()[1:]
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: missing from the repository root"
                copied.append(source)
            assert dest.startswith("./") or dest.startswith(workdir)
    assert target.group(1) == workdir
    for needed in ("pyproject.toml", "reelforge", "flows", "tasks", "workflows"):
        assert needed in copied, f"{needed} is not copied into the image"
    # The packages pyproject.toml installs are all copied.
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    for pattern in project["tool"]["setuptools"]["packages"]["find"]["include"]:
        assert pattern.rstrip("*") in copied, f"package {pattern} is not copied"
    readme = project["project"].get("readme")
    assert readme in copied, "pyproject's readme must be in the image for the install to build"
    users = [i for i in instructions if i.startswith("USER ")]
    assert users and users[-1] != "USER root"


def test_the_orchestrator_build_context_lets_in_only_what_it_copies():
    ignore = (ORCH / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
    rules = [line.strip() for line in ignore if line.strip() and not line.startswith("#")]
    assert rules[0] == "*", "deny everything, then allow what the image needs"
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    copied = {source for i in _instructions(ORCH / "Dockerfile") if i.startswith("COPY ") for source in i.split()[1:-1]}
    assert copied <= allowed, f"COPY sources the ignore file keeps out: {copied - allowed}"
    assert {"**/.env", "**/.env.*"} <= set(rules), ".env files must never enter the context"
