"""The model fetcher: an endpoint next to ComfyUI that downloads a model file from a URL, checked by sha256.

Protocol (``POST /reelforge/models/fetch``, JSON; ``Authorization: Bearer <token>`` when a token is set)::

    {"folder": "loras", "name": "rf-<sha16>.safetensors", "url": "https://...", "sha256": "<64 hex>", "size": N}

    200 {"name", "sha256", "size", "status": "fetched" | "present"}   the file is in <models>/<folder>/<name>
    400 {"error": ...}   bad request (unknown folder, unsafe name, not a URL, bad digest)
    401                  missing or wrong token
    409 {"error": ...}   a different file already has that name
    422 {"error": ...}   the download's size or sha256 is not what was asked
    502 {"error": ...}   the URL answered an error or could not be reached

The file is streamed into a hidden temp file in the target folder and renamed into place only after its size
and sha256 match, so ComfyUI (which lists a folder's files as soon as they exist) never sees a partial file.

The same handler serves two places: the preview worker (``reelforge.preview``) and, on a GPU host, a sidecar
started with ``python -m reelforge.modelfetch --models /ComfyUI/models --port 8189`` behind the same proxy and
token as ComfyUI (deployments/comfyui/README.md). It imports only the standard library and aiohttp, so the
worker image can run this one file without installing reelforge.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import re
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import ClientError, ClientSession, ClientTimeout, web

__all__ = ["FETCH_PATH", "main", "make_fetch_handler"]

FETCH_PATH = "/reelforge/models/fetch"
FOLDERS = frozenset({"loras"})
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}\.safetensors$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def make_fetch_handler(
    models_root: Path, *, token: str | None = None, timeout_s: float = 600.0, max_bytes: int = 8 << 30
) -> Handler:
    """An aiohttp handler for ``FETCH_PATH`` that writes under ``models_root/<folder>/``."""

    async def fetch(request: web.Request) -> web.StreamResponse:
        if token is not None:
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return _error(401, "missing or wrong bearer token")
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "the body is not JSON")
        if not isinstance(body, dict):
            return _error(400, "the body is not a JSON object")
        folder, name, url = body.get("folder"), body.get("name"), body.get("url")
        sha256, size = body.get("sha256"), body.get("size")
        if folder not in FOLDERS:
            return _error(400, f"folder must be one of {sorted(FOLDERS)}, not {folder!r}")
        if not isinstance(name, str) or not _NAME.match(name):
            return _error(400, f"name {name!r} is not a plain .safetensors file name")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            return _error(400, "url must be an http(s) URL")
        if not isinstance(sha256, str) or not _SHA256.match(sha256):
            return _error(400, "sha256 must be 64 lower-case hex digits")
        if not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= max_bytes:
            return _error(400, f"size must be an integer in 1..{max_bytes}")
        target_dir = models_root / folder
        target = target_dir / name
        if await asyncio.to_thread(target.is_file):
            if await asyncio.to_thread(_digest, target) == sha256:
                return web.json_response({"name": name, "sha256": sha256, "size": size, "status": "present"})
            return _error(409, f"{folder}/{name} exists with other content")
        await asyncio.to_thread(target_dir.mkdir, parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=target_dir, prefix=f".{name}.", suffix=".part")
        try:
            digest = hashlib.sha256()
            received = 0
            with os.fdopen(fd, "wb") as out:
                async with ClientSession(timeout=ClientTimeout(total=timeout_s)) as session:
                    async with session.get(url) as resp:
                        if resp.status != 200:
                            return _error(502, f"the URL answered {resp.status}")  # the URL itself is never echoed
                        async for chunk in resp.content.iter_chunked(_CHUNK):
                            received += len(chunk)
                            if received > size:
                                return _error(422, f"the download is larger than {size} bytes")
                            digest.update(chunk)
                            out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if received != size or digest.hexdigest() != sha256:
                return _error(422, f"the download is {received} bytes with sha256 {digest.hexdigest()[:16]}…, "
                                   f"not {size} bytes with {sha256[:16]}…")
            os.replace(tmp_name, target)
        except (ClientError, TimeoutError) as exc:
            return _error(502, f"the URL could not be fetched ({type(exc).__name__})")
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
        return web.json_response({"name": name, "sha256": sha256, "size": size, "status": "fetched"})

    return fetch


def main(argv: list[str] | None = None) -> None:
    """Run the fetcher as a sidecar of a GPU worker."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, required=True, help="ComfyUI's models folder")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8189)
    parser.add_argument("--token-env", default="REELFORGE_COMFY_TOKEN", help="variable holding the bearer token")
    args = parser.parse_args(argv)
    token = os.environ.get(args.token_env) or None
    app = web.Application()
    app.router.add_post(FETCH_PATH, make_fetch_handler(args.models, token=token))
    print(json.dumps({"serving": FETCH_PATH, "models": str(args.models), "auth": token is not None}), flush=True)
    web.run_app(app, host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
