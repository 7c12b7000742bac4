"""The offline catalogue: ComfyUI core's ``/object_info`` plus the schemas of the locked custom node packs.

It lets templates be checked without a worker. ``catalogue/core.json`` is the full ``/object_info`` answer of
ComfyUI 0.3.64 (captured on a worker without models, so model combos are empty: model files are checked
against a model list instead). Custom pack schemas are ``reelforge/preview/catalogue/custom_*.json``: a dict
of class -> ``/object_info`` entry, optionally with a top-level ``"__pack__": {"pack", "repo", "commit"}``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

CORE_PATH = Path(__file__).resolve().parent / "catalogue" / "core.json"
CUSTOM_DIR = Path(__file__).resolve().parents[1] / "preview" / "catalogue"
PACK_KEY = "__pack__"


@dataclass(frozen=True)
class Catalogue:
    """Node class schemas (``/object_info`` entries) known offline, and which custom pack provides which class."""

    core: Mapping[str, Any]
    custom: Mapping[str, Any] = field(default_factory=dict)
    packs: Mapping[str, str] = field(default_factory=dict)  # custom class -> pack name ("" when not stated)

    def object_info(self) -> dict[str, Any]:
        """Core and custom classes together, as one ``/object_info`` dict (core wins on a name clash)."""
        return {**self.custom, **self.core}

    def is_core(self, class_name: str) -> bool:
        return class_name in self.core

    def get(self, class_name: str) -> Mapping[str, Any] | None:
        entry = self.core.get(class_name, self.custom.get(class_name))
        return entry if isinstance(entry, Mapping) else None

    def __contains__(self, class_name: object) -> bool:
        return class_name in self.core or class_name in self.custom


def _read_json(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object of class -> /object_info entry")
    return data


def load_catalogue(core_path: Path | None = None, custom_dir: Path | None = None) -> Catalogue:
    """Read the core catalogue and every ``custom_*.json`` of ``custom_dir``."""
    core = _read_json(core_path or CORE_PATH)
    custom: dict[str, Any] = {}
    packs: dict[str, str] = {}
    folder = custom_dir or CUSTOM_DIR
    if folder.is_dir():
        for path in sorted(folder.glob("custom_*.json")):
            data = _read_json(path)
            meta = data.get(PACK_KEY)
            pack = str(meta.get("pack", "")) if isinstance(meta, dict) else ""
            for name, entry in data.items():
                if name == PACK_KEY or not isinstance(entry, dict):
                    continue
                custom[name] = entry
                packs[name] = pack
    return Catalogue(core=core, custom=custom, packs=packs)


@cache
def core_catalogue() -> Catalogue:
    """ComfyUI core only."""
    return Catalogue(core=_read_json(CORE_PATH))


@cache
def offline_catalogue() -> Catalogue:
    """Core plus the custom pack schemas shipped with this checkout, read once."""
    return load_catalogue()
