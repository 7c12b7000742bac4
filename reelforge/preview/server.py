"""The preview worker: an aiohttp HTTP + WebSocket server that answers exactly like ComfyUI 0.3.64.

Routes, status codes, error bodies and WebSocket frames follow ``docs/comfyui-api.md`` (the reference
captured from a real server); every route is also served under ``/api``. Nodes run on CPU (numpy) with
optional modelled GPU latency (``latency.py``) and injectable faults (``faults.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import json
import logging
import mimetypes
import os
import shutil
import socket
import sys
import tempfile
import threading
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from aiohttp import WSMsgType, web
from PIL import Image, PngImagePlugin

from reelforge.hashing import sha256_file, sha256_stream
from reelforge.modelfetch import FETCH_PATH, make_fetch_handler
from reelforge.preview.executor import (
    SENSITIVE_EXTRA_DATA_KEYS,
    Executor,
    MessageHub,
    WorkerStats,
)
from reelforge.preview.faults import Faults, FaultSpec, parse_faults
from reelforge.preview.latency import LatencyProfile, parse_latency
from reelforge.preview.modelfiles import configure, settings_for, tolerant_default_lock
from reelforge.preview.registry import NodeRegistry, WorkerDirs, default_registry
from reelforge.preview.validation import validate_prompt
from reelforge.templates.lock import ComfyLock

log = logging.getLogger(__name__)

COMFYUI_VERSION = "0.3.64"
MAX_UPLOAD_SIZE = 100 * 1024 * 1024
SERVER_FEATURES: dict[str, Any] = {"supports_preview_metadata": True, "max_upload_size": MAX_UPLOAD_SIZE}
# aiohttp's own page for an unhandled exception; ComfyUI answers non-JSON bodies with it.
INTERNAL_ERROR_TEXT = "500 Internal Server Error\n\nServer got itself in trouble"

# /view content types; the stdlib table lacks some media types ComfyUI's host knew (measured: flac, mp4).
_MIME_TYPES = {
    ".png": "image/png",
    ".webp": "image/webp",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".mp4": "video/mp4",
    ".webm": "video/webm",
    ".flac": "audio/flac",
    ".mp3": "audio/mpeg",
    ".opus": "audio/ogg",
    ".wav": "audio/x-wav",
}
_FORCED_DOWNLOAD = frozenset(
    {"text/html", "text/html-sandboxed", "application/xhtml+xml", "text/javascript", "text/css"}
)


def model_files(dirs: WorkerDirs, folder: str) -> list[str] | None:
    """Names the worker rooted at ``dirs`` lists for a model folder key (files plus lock), or None."""
    return settings_for(dirs).files(dirs, folder)


def annotated_filepath(name: str) -> tuple[str, str | None]:
    """ComfyUI's ``annotated_filepath``: strip a `` [output]``/`` [input]``/`` [temp]`` suffix."""
    for kind in ("output", "input", "temp"):
        suffix = f"[{kind}]"
        if name.endswith(suffix):
            return name[: -len(suffix)].strip(), kind
    return name, None


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        # ComfyUI resolves the name; no DNS here, and localhost is the only loopback name that matters.
        return host == "localhost"


def _ram() -> tuple[int, int]:
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        return page * os.sysconf("SC_PHYS_PAGES"), page * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0, 0


# --------------------------------------------------------------------------------------------------


class PreviewWorker:
    """A ComfyUI-protocol server on CPU; ``async with PreviewWorker(tmp) as w: ... w.url``."""

    def __init__(
        self,
        root: Path | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: str | LatencyProfile = "instant",
        faults: str | FaultSpec | Faults | None = None,
        registry: NodeRegistry | None = None,
        name: str | None = None,
        lock: ComfyLock | None = None,
        missing_models: Iterable[str] = (),
    ) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if root is None:
            # Kept until the worker object goes away, so files can be inspected after stop().
            self._tmp = tempfile.TemporaryDirectory(prefix="reelforge-preview-")
            root = Path(self._tmp.name)
        self.root = Path(root).absolute()
        self.dirs = WorkerDirs(self.root)
        # Model files listed as on a provisioned GPU worker: the lock's names (None: the checkout's
        # deployments/comfyui/lock.yaml, no names if it is absent) minus ``missing_models`` ("folder/name").
        self.lock = lock if lock is not None else tolerant_default_lock()
        self.model_settings = configure(self.dirs, self.lock, missing_models)
        self.host = host
        self.port = port
        self.latency = parse_latency(latency)
        self.faults = faults if isinstance(faults, Faults) else Faults(faults)
        self.registry = registry if registry is not None else default_registry()
        self.name = name
        self.stats = WorkerStats()
        self.executor: Executor | None = None
        self.hub: MessageHub | None = None
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._restart_task: asyncio.Task[None] | None = None
        self._crash_task: asyncio.Task[None] | None = None
        self.crashed = False

    # ---- lifecycle ------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host = self.host
        if host in ("0.0.0.0", "", "::"):
            host = "127.0.0.1"
        elif ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def start(self) -> str:
        """Bind and serve; returns the base URL. Starts with an empty queue, history and cache."""
        if self._runner is not None:
            return self.url
        self._loop = asyncio.get_running_loop()
        self.dirs.create()
        # ComfyUI wipes its temp folder at start.
        shutil.rmtree(self.dirs.temp, ignore_errors=True)
        self.dirs.temp.mkdir(parents=True, exist_ok=True)
        self.hub = MessageHub(self.faults)
        self.hub.start()
        self.executor = Executor(
            self.registry,
            self.dirs,
            self.hub,
            latency=self.latency,
            faults=self.faults,
            stats=self.stats,
            on_crash=self._crash_from_executor,
        )
        self.executor.start()
        runner = web.AppRunner(self._make_app(), access_log=None, shutdown_timeout=0.25)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            await self.executor.stop()
            await self.hub.stop()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        self.faults.drop_ws_hook = self._drop_ws_threadsafe
        self.crashed = False
        if self.name is None:
            self.name = f"preview@{self.port}"
        return self.url

    async def stop(self) -> None:
        """Graceful stop: close sockets with a close frame, stop the executor, release the port."""
        self._cancel_restart()
        await self._teardown(abrupt=False)

    async def crash(self) -> None:
        """Stop abruptly: connections dropped, listening socket closed, the running prompt abandoned."""
        await self._teardown(abrupt=True)
        self.crashed = True

    async def restart(self) -> str:
        """Come back on the same port with an empty queue, history and cache (output files kept)."""
        self._cancel_restart()
        if self._runner is not None:
            await self._teardown(abrupt=True)
        self.latency.reset()
        return await self.start()

    async def _teardown(self, *, abrupt: bool) -> None:
        runner, self._runner = self._runner, None
        self.faults.drop_ws_hook = None
        if self.executor is not None:
            await self.executor.stop()
        if self.hub is not None:
            if abrupt:
                self.hub.abort_all()
            else:
                await self.hub.close_all()
            await self.hub.stop()
        if runner is not None:
            await runner.cleanup()

    def _cancel_restart(self) -> None:
        if self._restart_task is not None and self._restart_task is not asyncio.current_task():
            self._restart_task.cancel()
        self._restart_task = None

    def _crash_from_executor(self) -> None:
        """Fault-injected crash, called from inside the executor task (which the crash cancels)."""
        self._crash_task = asyncio.get_running_loop().create_task(self._injected_crash())

    async def _injected_crash(self) -> None:
        log.warning("preview worker %s: injected crash", self.name)
        await self.crash()
        delay = self.faults.restart_after
        if delay is not None:
            self._restart_task = asyncio.get_running_loop().create_task(self._restart_later(delay))

    async def _restart_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        try:
            await self.restart()
        except OSError:
            log.exception("preview worker %s could not restart on port %s", self.name, self.port)

    def _drop_ws_threadsafe(self) -> None:
        hub, loop = self.hub, self._loop
        if hub is None or loop is None or loop.is_closed():
            return

        def close() -> None:
            loop.create_task(hub.close_all())

        loop.call_soon_threadsafe(close)

    async def __aenter__(self) -> PreviewWorker:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def start_in_thread(self) -> PreviewWorkerThread:
        """Run this worker on its own event loop in a daemon thread (for sync callers)."""
        thread = PreviewWorkerThread(self)
        thread.start()
        return thread

    # ---- app ------------------------------------------------------------------------------------
    def _make_app(self) -> web.Application:
        app = web.Application(
            client_max_size=MAX_UPLOAD_SIZE,
            middlewares=[self._origin_only_middleware, self._fault_middleware],
        )
        routes: list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]] = [
            ("GET", "/ws", self.ws_handler),
            ("GET", "/prompt", self.get_prompt),
            ("POST", "/prompt", self.post_prompt),
            ("GET", "/queue", self.get_queue),
            ("POST", "/queue", self.post_queue),
            ("POST", "/interrupt", self.post_interrupt),
            ("POST", "/free", self.post_free),
            ("GET", "/history", self.get_history),
            ("GET", "/history/{prompt_id}", self.get_history_item),
            ("POST", "/history", self.post_history),
            ("GET", "/view", self.view),
            ("POST", "/upload/image", self.upload_image),
            ("POST", "/upload/mask", self.upload_mask),
            ("GET", "/object_info", self.object_info),
            ("GET", "/object_info/{node_class}", self.object_info_one),
            ("GET", "/models", self.models),
            ("GET", "/models/{folder}", self.models_folder),
            ("GET", "/embeddings", self.embeddings),
            ("GET", "/system_stats", self.system_stats),
            ("GET", "/features", self.features),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, path, handler)
        for method, path, handler in routes:  # ComfyUI serves every route under /api too
            app.router.add_route(method, "/api" + path, handler)
        # reelforge's model fetcher, as a GPU host runs it beside ComfyUI (reelforge.modelfetch).
        app.router.add_post(FETCH_PATH, make_fetch_handler(self.dirs.models))
        return app

    @web.middleware
    async def _origin_only_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """ComfyUI's CSRF guard: loopback Host with a different Origin -> 403."""
        if "Host" in request.headers and "Origin" in request.headers:
            host_domain = request.headers["Host"].lower()
            origin_domain = urllib.parse.urlparse(request.headers["Origin"]).netloc.lower()
            host_parsed = urllib.parse.urlsplit("//" + host_domain)
            if host_parsed.port is None:
                origin_domain = origin_domain.split(":")[0]
            if _is_loopback(host_parsed.hostname) and host_domain != origin_domain:
                log.warning("request with non matching host and origin %s != %s, returning 403",
                            host_domain, origin_domain)
                return web.Response(status=403)
        if request.method == "OPTIONS":
            return web.Response()
        return await handler(request)

    @web.middleware
    async def _fault_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not request.path.endswith("/ws") and self.faults.http500_now():
            return web.Response(status=500, text=INTERNAL_ERROR_TEXT)
        return await handler(request)

    def _ex(self) -> Executor:
        assert self.executor is not None
        return self.executor

    def _hub(self) -> MessageHub:
        assert self.hub is not None
        return self.hub

    # ---- WebSocket ------------------------------------------------------------------------------
    async def ws_handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        hub, ex = self._hub(), self._ex()
        sid = request.rel_url.query.get("clientId", "")
        if sid:
            hub.sockets.pop(sid, None)  # reusing a session replaces the old socket
        else:
            sid = uuid.uuid4().hex
        hub.sockets[sid] = ws
        hub.metadata[sid] = {"feature_flags": {}}
        transport = request.transport
        if isinstance(transport, asyncio.Transport):
            hub.transports[id(ws)] = transport
        try:
            await hub.send_now(ws, "status", {"status": ex.queue_info(), "sid": sid})
            if ex.client_id == sid and ex.last_node_id is not None:
                await hub.send_now(ws, "executing", {"node": ex.last_node_id})
            first_message = True
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    try:
                        data = json.loads(msg.data)
                    except json.JSONDecodeError:
                        continue
                    if first_message and isinstance(data, dict) and data.get("type") == "feature_flags":
                        flags = data.get("data", {})
                        hub.metadata.setdefault(sid, {})["feature_flags"] = flags
                        await hub.send_now(ws, "feature_flags", dict(SERVER_FEATURES))
                    first_message = False
        finally:
            # As ComfyUI: removes the entry even if a newer socket took over this clientId.
            hub.sockets.pop(sid, None)
            hub.metadata.pop(sid, None)
            hub.transports.pop(id(ws), None)
        return ws

    # ---- prompt & queue -------------------------------------------------------------------------
    async def get_prompt(self, request: web.Request) -> web.Response:
        return web.json_response(self._ex().queue_info())

    async def post_prompt(self, request: web.Request) -> web.Response:
        json_data = await request.json()  # not JSON -> aiohttp's plain 500, like ComfyUI
        if not isinstance(json_data, dict):
            raise TypeError("prompt request body must be a JSON object")
        ex = self._ex()
        number: Any
        if "number" in json_data:
            number = float(json_data["number"])
        else:
            number = ex.next_number(bool(json_data.get("front")))
        if "prompt" not in json_data:
            error = {"type": "no_prompt", "message": "No prompt provided", "details": "No prompt provided",
                     "extra_info": {}}
            return web.json_response({"error": error, "node_errors": {}}, status=400)
        prompt = json_data["prompt"]
        prompt_id = str(json_data.get("prompt_id", uuid.uuid4()))
        partial = json_data.get("partial_execution_targets")
        outcome = validate_prompt(prompt, self.registry, self.dirs, partial)
        extra_data = json_data.get("extra_data", {})
        extra_data = dict(extra_data) if isinstance(extra_data, dict) else {}
        if "client_id" in json_data:
            extra_data["client_id"] = json_data["client_id"]
        if not outcome.ok:
            return web.json_response({"error": outcome.error, "node_errors": outcome.node_errors}, status=400)
        for key in SENSITIVE_EXTRA_DATA_KEYS:  # never stored in queue or history
            extra_data.pop(key, None)
        ex.put((number, prompt_id, outcome.coerced, extra_data, list(outcome.outputs_to_execute)))
        body = {"prompt_id": prompt_id, "number": number, "node_errors": outcome.node_errors}
        return web.json_response(body)

    async def get_queue(self, request: web.Request) -> web.Response:
        running, pending = self._ex().current_queue()
        return web.json_response({"queue_running": running, "queue_pending": pending})

    async def post_queue(self, request: web.Request) -> web.Response:
        json_data = await request.json()
        ex = self._ex()
        if json_data.get("clear"):
            ex.wipe_queue()
        if "delete" in json_data:
            for prompt_id in json_data["delete"]:
                ex.delete_pending(prompt_id)
        return web.Response(status=200)

    async def post_interrupt(self, request: web.Request) -> web.Response:
        try:
            json_data = await request.json()
        except json.JSONDecodeError:
            json_data = {}
        prompt_id = json_data.get("prompt_id")
        self._ex().interrupt(prompt_id if prompt_id else None)
        return web.Response(status=200)

    async def post_free(self, request: web.Request) -> web.Response:
        json_data = await request.json()
        if json_data.get("unload_models") or json_data.get("free_memory"):
            self.latency.reset()
        return web.Response(status=200)

    # ---- history --------------------------------------------------------------------------------
    async def get_history(self, request: web.Request) -> web.Response:
        query = request.rel_url.query
        max_items = int(query["max_items"]) if "max_items" in query else None
        offset = int(query["offset"]) if "offset" in query else -1
        return web.json_response(self._ex().get_history(max_items=max_items, offset=offset))

    async def get_history_item(self, request: web.Request) -> web.Response:
        return web.json_response(self._ex().get_history(request.match_info["prompt_id"]))

    async def post_history(self, request: web.Request) -> web.Response:
        json_data = await request.json()
        ex = self._ex()
        if json_data.get("clear"):
            ex.wipe_history()
        if "delete" in json_data:
            for prompt_id in json_data["delete"]:
                ex.delete_history(prompt_id)
        return web.Response(status=200)

    # ---- files ----------------------------------------------------------------------------------
    def _dir_by_type(self, kind: str) -> str | None:
        folder = self.dirs.for_type(kind)
        return os.path.abspath(folder) if folder is not None else None

    def _view_target(self, query: Any) -> tuple[int, str]:
        """ComfyUI's /view guards: (status, "") on refusal, (200, path) for an existing file."""
        if "filename" not in query:
            return 404, ""
        filename, output_dir = annotated_filepath(query["filename"])
        if not filename:
            return 400, ""
        if filename[0] == "/" or ".." in filename:
            return 400, ""
        base = self._dir_by_type(output_dir if output_dir is not None else query.get("type", "output"))
        if base is None:
            return 400, ""
        if "subfolder" in query:
            full = os.path.join(base, query["subfolder"])
            if os.path.commonpath((os.path.abspath(full), base)) != base:
                return 403, ""
            base = full
        file = os.path.join(base, os.path.basename(filename))
        if not os.path.isfile(file):
            return 404, ""
        return 200, file

    async def view(self, request: web.Request) -> web.StreamResponse:
        query = request.rel_url.query
        status, file = self._view_target(query)
        if status != 200:
            return web.Response(status=status)
        filename = os.path.basename(file)
        if self.faults.slow_view > 0:
            await asyncio.sleep(self.faults.slow_view)
        disposition = {"Content-Disposition": f'filename="{filename}"'}
        channel = query.get("channel", "rgba")
        if "preview" in query:
            body, content_type = await asyncio.to_thread(_preview_bytes, file, query["preview"], query)
            return web.Response(body=body, content_type=content_type, headers=disposition)
        if channel in ("rgb", "a"):
            body = await asyncio.to_thread(_channel_png, file, channel)
            return web.Response(body=body, content_type="image/png", headers=disposition)
        content_type = _MIME_TYPES.get(Path(filename).suffix.lower()) or (
            mimetypes.guess_type(filename)[0] or "application/octet-stream"
        )
        if content_type in _FORCED_DOWNLOAD:
            content_type = "application/octet-stream"
        return web.FileResponse(file, headers={**disposition, "Content-Type": content_type})

    async def upload_image(self, request: web.Request) -> web.Response:
        post = await request.post()
        return await asyncio.to_thread(self._save_upload, post, None)

    async def upload_mask(self, request: web.Request) -> web.Response:
        post = await request.post()
        return await asyncio.to_thread(self._save_upload, post, self._save_mask)

    def _save_upload(
        self,
        post: Any,
        save: Callable[[web.FileField, Any, str], None] | None,
    ) -> web.Response:
        """ComfyUI's ``image_upload``: hash-compare, ``name (1).ext`` naming, overwrite, subfolder."""
        kind = post.get("type")
        kind = "input" if kind is None else kind
        upload_dir = self._dir_by_type(kind)
        if upload_dir is None:
            # ComfyUI hits an unbound variable here, i.e. a 500 page.
            raise ValueError(f"unknown upload type {kind!r}")
        image = post.get("image")
        if not isinstance(image, web.FileField) or not image.filename:
            return web.Response(status=400)
        filename = image.filename
        subfolder = post.get("subfolder", "")
        subfolder = subfolder if isinstance(subfolder, str) else ""
        full_folder = os.path.join(upload_dir, os.path.normpath(subfolder))
        filepath = os.path.abspath(os.path.join(full_folder, filename))
        if os.path.commonpath((upload_dir, filepath)) != upload_dir:
            return web.Response(status=400)
        os.makedirs(full_folder, exist_ok=True)
        overwrite = post.get("overwrite")
        duplicate = False
        if overwrite not in ("true", "1"):
            stem, ext = os.path.splitext(filename)
            i = 1
            while os.path.exists(filepath):
                if _same_bytes(Path(filepath), image):
                    duplicate = True
                    break
                filename = f"{stem} ({i}){ext}"
                filepath = os.path.join(full_folder, filename)
                i += 1
        if not duplicate:
            if save is not None:
                save(image, post, filepath)
            else:
                with open(filepath, "wb") as f:
                    shutil.copyfileobj(image.file, f)
        return web.json_response({"name": filename, "subfolder": subfolder, "type": kind})

    def _save_mask(self, image: web.FileField, post: Any, filepath: str) -> None:
        """``/upload/mask``: copy ``original_ref``'s image, take the alpha of the upload, keep text chunks."""
        ref = json.loads(post.get("original_ref"))
        filename, kind = annotated_filepath(ref["filename"])
        if filename[0] == "/" or ".." in filename:
            raise ValueError("bad original_ref filename")
        base = self._dir_by_type(kind or ref.get("type", "input"))
        if base is None:
            raise ValueError("bad original_ref type")
        source = os.path.join(base, os.path.normpath(ref.get("subfolder", "")), filename)
        if os.path.commonpath((base, os.path.abspath(source))) != base:
            raise ValueError("bad original_ref subfolder")
        with Image.open(source) as original:
            info = PngImagePlugin.PngInfo()
            for key, value in getattr(original, "text", {}).items():
                info.add_text(key, value)
            with Image.open(image.file) as mask:
                alpha = mask.convert("RGBA").getchannel("A")
                result = original.convert("RGBA")
                result.putalpha(alpha.resize(result.size))
                result.save(filepath, compress_level=4, pnginfo=info)

    # ---- catalogue, models, system --------------------------------------------------------------
    async def object_info(self, request: web.Request) -> web.Response:
        info = await asyncio.to_thread(self.registry.object_info, self.dirs)
        return web.json_response(info)

    async def object_info_one(self, request: web.Request) -> web.Response:
        cls = self.registry.get(request.match_info["node_class"])
        if cls is None:
            return web.json_response({})
        info = await asyncio.to_thread(cls.object_info, self.dirs)
        return web.json_response({cls.name: info})

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response(self.model_settings.folder_keys())

    async def models_folder(self, request: web.Request) -> web.Response:
        files = await asyncio.to_thread(model_files, self.dirs, request.match_info["folder"])
        if files is None:
            return web.Response(status=404)
        return web.json_response(files)

    async def embeddings(self, request: web.Request) -> web.Response:
        files = model_files(self.dirs, "embeddings") or []
        return web.json_response([os.path.splitext(f)[0] for f in files])

    async def system_stats(self, request: web.Request) -> web.Response:
        total, free = _ram()
        argv = ["main.py", "--cpu", "--listen", self.host, "--port", str(self.port)]
        return web.json_response(
            {
                "system": {
                    "os": os.name,
                    "ram_total": total,
                    "ram_free": free,
                    "comfyui_version": COMFYUI_VERSION,
                    "required_frontend_version": "1.27.10",
                    "installed_templates_version": "0.1.95",
                    "required_templates_version": "0.1.95",
                    "python_version": sys.version,
                    "pytorch_version": "2.13.0+cpu",
                    "embedded_python": False,
                    "argv": argv,
                },
                "devices": [
                    {
                        "name": "cpu",
                        "type": "cpu",
                        "index": None,
                        "vram_total": total,
                        "vram_free": free,
                        "torch_vram_total": total,
                        "torch_vram_free": free,
                    }
                ],
            }
        )

    async def features(self, request: web.Request) -> web.Response:
        return web.json_response(dict(SERVER_FEATURES))


def _same_bytes(path: Path, upload: web.FileField) -> bool:
    uploaded, _ = sha256_stream(upload.file)
    upload.file.seek(0)
    return sha256_file(path)[0] == uploaded


def _preview_bytes(file: str, preview: str, query: Any) -> tuple[bytes, str]:
    """``/view?preview=webp;90``: re-encode like ComfyUI (alpha requested -> webp; jpeg/rgb -> RGB)."""
    parts = preview.split(";")
    image_format = parts[0]
    channel = query.get("channel", "")
    if image_format not in ("webp", "jpeg") or "a" in channel:
        image_format = "webp"
    quality = int(parts[-1]) if parts[-1].isdigit() else 90
    buffer = BytesIO()
    with Image.open(file) as img:
        out: Image.Image = img
        if image_format == "jpeg" or channel == "rgb":
            out = img.convert("RGB")
        out.save(buffer, format=image_format, quality=quality)
    return buffer.getvalue(), f"image/{image_format}"


def _channel_png(file: str, channel: str) -> bytes:
    buffer = BytesIO()
    with Image.open(file) as img:
        if channel == "rgb":
            if img.mode == "RGBA":
                r, g, b, _ = img.split()
                Image.merge("RGB", (r, g, b)).save(buffer, format="PNG")
            else:
                img.convert("RGB").save(buffer, format="PNG")
        else:
            alpha = img.getchannel("A") if img.mode == "RGBA" else Image.new("L", img.size, 255)
            alpha_img = Image.new("RGBA", img.size)
            alpha_img.putalpha(alpha)
            alpha_img.save(buffer, format="PNG")
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------------
# Sync callers and the CLI
# --------------------------------------------------------------------------------------------------

T = TypeVar("T")


class PreviewWorkerThread:
    """A PreviewWorker on its own event loop in a daemon thread; ``.url``, ``.call(coro)``, ``.stop()``."""

    def __init__(self, worker: PreviewWorker) -> None:
        self.worker = worker
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=f"preview-worker-{id(worker):x}", daemon=True)
        self.url = ""

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def start(self) -> str:
        self._thread.start()
        self.url = self.call(self.worker.start())
        return self.url

    def call(self, coro: Awaitable[T], timeout: float | None = 30.0) -> T:
        """Run a coroutine on the worker's loop and wait for its result."""

        async def wrap() -> T:
            return await coro

        future: Future[T] = asyncio.run_coroutine_threadsafe(wrap(), self.loop)
        return future.result(timeout)

    @property
    def stats(self) -> WorkerStats:
        return self.worker.stats

    @property
    def faults(self) -> Faults:
        return self.worker.faults

    def crash(self) -> None:
        self.call(self.worker.crash())

    def restart(self) -> str:
        self.url = self.call(self.worker.restart())
        return self.url

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self.call(self.worker.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self.loop.close()

    def __enter__(self) -> PreviewWorkerThread:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class OptionError(ValueError):
    """A ``reelforge preview-worker`` option is wrong; ``option`` names it, the message says what is wrong."""

    def __init__(self, option: str, message: str) -> None:
        self.option = option
        super().__init__(f"{option}: {message}")


@dataclass(frozen=True)
class ServeOptions:
    """Checked options of :func:`serve_forever` (see :func:`check_options`)."""

    host: str
    port: int
    latency: LatencyProfile
    faults: FaultSpec
    root: Path | None


def check_options(
    host: str = "127.0.0.1",
    port: int = 8188,
    latency: str = "instant",
    faults: str | None = None,
    root: Path | None = None,
) -> ServeOptions:
    """Parse and check every option before anything starts; raise :class:`OptionError` naming the first bad one.

    The port is probed by binding it (as the server will, with ``SO_REUSEADDR``), so a port in use is reported
    here; the server's own bind can still lose a race and is translated the same way by :func:`serve_forever`.
    """
    if not 0 <= port <= 65535:
        raise OptionError("--port", f"{port} is not a TCP port (0..65535; 0 picks a free one)")
    try:
        profile = parse_latency(latency)
    except ValueError as exc:
        raise OptionError("--latency", str(exc)) from None
    try:
        spec = parse_faults(faults)
    except ValueError as exc:
        raise OptionError("--faults", str(exc)) from None
    if root is not None and root.exists() and not root.is_dir():
        raise OptionError("--root", f"{root} exists and is not a directory")
    try:
        addresses = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise OptionError("--host", f"cannot resolve {host!r}: {exc.strerror}") from None
    if port:
        for family, kind, proto, _, address in addresses:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind(address)
                except OSError as exc:
                    raise bind_error(host, port, exc) from None
    return ServeOptions(host=host, port=port, latency=profile, faults=spec, root=root)


def bind_error(host: str, port: int, exc: OSError) -> OptionError:
    """The option a failed bind is about, with the reason in words."""
    if exc.errno == errno.EADDRINUSE:
        return OptionError("--port", f"port {port} is already in use on {host or 'all interfaces'}")
    if exc.errno == errno.EACCES:
        return OptionError("--port", f"no permission to listen on port {port}")
    if exc.errno == errno.EADDRNOTAVAIL:
        return OptionError("--host", f"{host} is not an address of this machine")
    reason = (exc.strerror or str(exc)).lower()
    return OptionError("--host/--port", f"cannot listen on {host}:{port}: {reason}")


def serve_forever(options: ServeOptions) -> None:
    """Run a preview worker until interrupted (``reelforge preview-worker``); a failed bind is an OptionError."""

    async def main() -> None:
        worker = PreviewWorker(
            options.root, host=options.host, port=options.port, latency=options.latency, faults=options.faults
        )
        try:
            worker.dirs.create()  # here, so that a failure names --root rather than the bind
        except OSError as exc:
            raise OptionError("--root", f"cannot create folders under {worker.root}: {exc.strerror}") from exc
        try:
            url = await worker.start()
        except OSError as exc:
            raise bind_error(options.host, options.port, exc) from exc
        print(f"preview worker listening on {url} (root {worker.root})", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await worker.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
