"""Small helpers shared by test modules (not fixtures: those live in conftest.py files)."""

from __future__ import annotations

from typing import Any

import aiohttp

from reelforge.preview.registry import ExecContext, NodeRegistry, NodeResult, WorkerDirs


def call(reg: NodeRegistry, name: str, dirs: WorkerDirs, **inputs: Any) -> NodeResult:
    """Run one preview node class directly, as the executor would."""
    cls = reg.get(name)
    assert cls is not None, name
    ctx = ExecContext(prompt_id="p1", node_id="1", prompt={}, extra_pnginfo=None, dirs=dirs)
    return cls.run(ctx, inputs)


async def post_prompt(http: aiohttp.ClientSession, url: str, body: Any) -> tuple[int, Any]:
    async with http.post(url + "/prompt", json=body) as r:
        return r.status, await r.json()


async def get_json(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as r:
        assert r.status == 200, (url, r.status)
        return await r.json()
