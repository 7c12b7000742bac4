"""The preview worker: a ComfyUI-protocol server that runs the templates' node classes on CPU (docs/preview-worker.md).

Public names: ``PreviewWorker`` (async: ``async with PreviewWorker(root) as worker``), ``PreviewWorkerThread``
(for synchronous callers), ``parse_latency`` and ``parse_faults`` (the ``--latency`` / ``--faults`` grammars).
They are imported on first use, so the small pure parts (latency and fault grammars) stay cheap to import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reelforge.preview.faults import parse_faults
    from reelforge.preview.latency import parse_latency
    from reelforge.preview.server import PreviewWorker, PreviewWorkerThread

__all__ = ["PreviewWorker", "PreviewWorkerThread", "parse_faults", "parse_latency"]

_HOMES = {
    "PreviewWorker": "reelforge.preview.server",
    "PreviewWorkerThread": "reelforge.preview.server",
    "parse_faults": "reelforge.preview.faults",
    "parse_latency": "reelforge.preview.latency",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'reelforge.preview' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
