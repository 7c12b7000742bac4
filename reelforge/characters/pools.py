"""Names from pools per type (data/names.json), deterministic for a seed, never one already taken (pure).

``NameGenerator(seed, taken)`` hands out names in a fixed order for a seed: Korean family + given names for
K-pop (``Kim Minji``), Japanese for J-pop, stage names for rappers (``Lil Nova``), mascot names (``Pip the
Fox``), Western names otherwise. A name whose slug is in ``taken`` (or was handed out before) is skipped; when a
pool runs dry a numeric suffix makes the name new (``Kim Minji 2``).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from functools import cache
from importlib import resources
from typing import Any

from reelforge.characters.names import character_slug
from reelforge.characters.spec import Gender
from reelforge.characters.types import TypeInfo

__all__ = ["NameGenerator", "pools"]


@cache
def pools() -> dict[str, Any]:
    """The name pools shipped with the package."""
    data = resources.files("reelforge.characters").joinpath("data/names.json").read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(data)
    return loaded


def _candidates(kind: TypeInfo, gender: Gender, rng: random.Random) -> list[str]:
    p = pools()[kind.pool]
    if kind.pool in ("korean", "japanese"):
        given = p.get(gender) or p["female"] + p["male"]
        names = [f"{f} {g}" for f in p["family"] for g in given]
    elif kind.pool == "stage":
        names = [f"{a} {w}" for a in p["prefix"] for w in p["word"]] + list(p["word"])
    elif kind.pool == "mascot":
        names = [f"{a} {b}" for a in p["first"] for b in p["last"]]
    else:
        given = p.get(gender) or p["nonbinary"]
        names = [f"{g} {f}" for g in given for f in p["family"]]
    rng.shuffle(names)
    return names


class NameGenerator:
    """Unique names for one batch: deterministic for ``seed``, avoiding ``taken`` slugs."""

    def __init__(self, seed: int, taken: Iterable[str] = ()) -> None:
        self.seed = seed
        self.taken = set(taken)
        self._orders: dict[tuple[str, str], list[str]] = {}

    def take(self, slug: str) -> None:
        self.taken.add(slug)

    def next(self, kind: TypeInfo, gender: Gender) -> str:
        key = (kind.pool, gender)
        order = self._orders.get(key)
        if order is None:
            order = self._orders[key] = _candidates(kind, gender, random.Random(f"{self.seed}|{kind.pool}|{gender}"))
        for name in order:
            if character_slug(name) not in self.taken:
                self.taken.add(character_slug(name))
                return name
        base = order[0] if order else kind.name.replace("_", " ").title()
        n = 2
        while character_slug(f"{base} {n}") in self.taken:
            n += 1
        name = f"{base} {n}"
        self.taken.add(character_slug(name))
        return name
