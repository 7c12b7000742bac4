"""Writing a script as a cached stage: the same brief, limits and writer give back the stored script.

An LLM answers differently each time it is asked, so without this a re-run of the same brief would get a new
script and re-make every scene. The stage's parameters are the brief, the limits and the writer's identity
(offline, or the server URL without any credentials in it, the model, temperature and response format). The
writer that runs is the one the environment configures (``REELFORGE_LLM_*``, the API key included, which is never a
parameter, a cache key or a record); timeouts and retry budgets do not change what is written and are not in the key.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from reelforge.records import Product, StageOutput
from reelforge.script.io import dump_script
from reelforge.script.models import Brief
from reelforge.script.writer import make_writer
from reelforge.settings import LLMSettings, ScriptLimits

__all__ = ["script_stage", "script_stage_params"]

_WRITER_FIELDS = ("model", "temperature", "response_format")


def _no_credentials(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def script_stage_params(brief: Brief, limits: ScriptLimits, llm: LLMSettings) -> dict[str, Any]:
    """The stage's parameters (its cache key): what decides the script, and nothing secret."""
    writer: dict[str, Any] = {"kind": "llm" if llm.base_url else "offline"}
    if llm.base_url:
        writer |= {"base_url": _no_credentials(llm.base_url), **{n: getattr(llm, n) for n in _WRITER_FIELDS}}
    return {"brief": brief.model_dump(mode="json"), "limits": limits.model_dump(mode="json"), "writer": writer}


def script_stage(inputs: Mapping[str, Path], params: Mapping[str, Any], out_dir: Path) -> StageOutput:
    """Write the script of ``params["brief"]`` (validated against ``params["limits"]``) as canonical JSON."""
    brief = Brief.model_validate(params["brief"])
    limits = ScriptLimits.model_validate(params["limits"])
    llm = LLMSettings()  # the writer this process is configured with, key included
    if script_stage_params(brief, limits, llm)["writer"] != params["writer"]:
        raise ValueError("the writer configured (REELFORGE_LLM_*) is not the one this stage was keyed for")
    script = asyncio.run(make_writer(llm).write(brief, limits))  # a thread stage: no event loop runs here
    out = out_dir / "script.json"
    out.write_bytes(dump_script(script))
    return StageOutput(
        products=[Product(path=out, kind="json", node_id="script")],
        record={"title": script.title, "writer": script.writer, "scenes": len(script.scenes)},
    )
