"""Takes of a shot: ``productions/<slug>/scene-NN/shot-NN/take-NN/``, one per distinct shot identity.

``take_for`` returns the take whose ``take.json`` holds this identity, or claims the next number (create-if-absent
of its ``take.json``, so two runs never share a number for different shots). Earlier takes are never touched.
"""

from __future__ import annotations

import json
from typing import Any

from reelforge.storage import ArtifactStore, StoreConflict, StoreError, production_shot_prefix
from reelforge.storage.keys import version_number

__all__ = ["take_for"]

TAKE_FILE = "take.json"


def _takes(store: ArtifactStore, slug: str, scene: int, shot: int) -> dict[int, str | None]:
    prefix = production_shot_prefix(slug, scene, shot)
    found: dict[int, str | None] = {}
    for key in store.list(prefix):
        parts = key[len(prefix):].split("/")
        number = version_number(parts[0], "take-") if parts else None
        if number is None:
            continue
        found.setdefault(number, None)
        if len(parts) == 2 and parts[1] == TAKE_FILE:
            try:
                found[number] = str(json.loads(store.read_bytes(key))["identity"])
            except (StoreError, ValueError, KeyError, TypeError):
                found[number] = None
    return found


def take_for(store: ArtifactStore, slug: str, scene: int, shot: int, identity: str,
             details: dict[str, Any] | None = None) -> tuple[int, bool]:
    """(take number, whether it is new) for the shot with ``identity``."""
    for _ in range(20):
        takes = _takes(store, slug, scene, shot)
        for number, known in sorted(takes.items()):
            if known == identity:
                return number, False
        number = max(takes, default=0) + 1
        body = json.dumps({"identity": identity, "scene": scene, "shot": shot, "take": number,
                           "details": details or {}}, indent=2, sort_keys=True).encode()
        try:
            store.put_new(body, production_shot_prefix(slug, scene, shot, number) + TAKE_FILE, kind="json")
        except StoreConflict:
            continue  # another run claimed it meanwhile: look again
        return number, True
    raise StoreError(f"could not claim a take of scene {scene} shot {shot} of {slug!r}")
