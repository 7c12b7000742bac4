"""Names unique across the whole system: an atomic claim per name in the store (``names/<slug>.json``).

A claim is created with ``put_new`` (create-if-absent on a local folder, a conditional ``If-None-Match`` write on
S3), so of two batches asking for one name at once exactly one gets it; the other takes the next name (a pool
name for a generated one, ``<name> 2``, ``<name> 3`` ... for one written in the CSV). The claim names its owner:
a hash of the batch's source (the CSV's place, or the type, count and group) and seed, so running the same batch
again (a retry, a resume after a crash, the CSV with a bad row fixed) gets the same names back and its characters
a new version each, served from cache. The same batch started twice at once shares its names the same way (two
versions of each character, never two characters of one name).

A name is taken when someone else claimed it, or when the store already has a character of that name (made by a
single-character run, which claims nothing).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

from reelforge.characters import character_slug
from reelforge.characters.batch import BatchPlan, BatchRow
from reelforge.characters.pools import NameGenerator
from reelforge.characters.types import character_type
from reelforge.storage import ArtifactMissing, ArtifactStore, StoreConflict, character_prefix, name_claim_key

__all__ = ["NameClaims", "resolve_names"]

MAX_TRIES = 1000  # names tried for one row before giving up (a pool this exhausted needs a look anyway)


class NameClaims:
    """Claims on names in ``store`` for one owner (a batch's plan key)."""

    def __init__(self, store: ArtifactStore, owner: str, *, batch_id: str) -> None:
        self.store = store
        self.owner = owner
        self.batch_id = batch_id

    def _ours(self, key: str) -> bool | None:
        """True: our claim; False: someone else's; None: nobody's."""
        try:
            data = self.store.read_bytes(key)
        except ArtifactMissing:
            return None
        try:
            claim = json.loads(data)
        except ValueError:
            return False  # a claim we cannot read is still someone's
        return bool(isinstance(claim, dict) and claim.get("owner") == self.owner)

    def claim(self, name: str, *, row: int) -> bool:
        """Take ``name`` for ``row``; False when it belongs to someone else."""
        slug = character_slug(name)
        key = name_claim_key(slug)
        ours = self._ours(key)
        if ours is not None:
            return ours
        if self.store.next_version(character_prefix(slug)) > 1:
            return False  # a character of this name exists already, made outside any batch
        body = json.dumps({"name": name, "slug": slug, "owner": self.owner, "row": row, "batch_id": self.batch_id,
                           "claimed_at": time.time()}, ensure_ascii=False).encode("utf-8")
        try:
            self.store.put_new(body, key, kind="json")
        except StoreConflict:  # another batch claimed it between our look and our write
            return self._ours(key) is True
        return True


def _candidates(row: BatchRow, names: NameGenerator) -> Iterator[str]:
    yield row.name
    if "name" in row.generated:
        kind = character_type(row.type_given)
        while True:
            yield names.next(kind, row.gender)
    n = 2
    while True:
        candidate = f"{row.name} {n}"
        if character_slug(candidate) not in names.taken:
            names.take(character_slug(candidate))
            yield candidate
        n += 1


def resolve_names(plan: BatchPlan, claims: NameClaims) -> BatchPlan:
    """The plan with every row's name claimed: its own, else the next free one (noted in ``renamed_from``).

    Rows are claimed in order, one at a time, so a batch decides the same way against the same store.
    """
    names = NameGenerator(plan.seed, {r.slug for r in plan.rows})
    rows = []
    for row in plan.rows:
        for tries, candidate in enumerate(_candidates(row, names), start=1):
            if claims.claim(candidate, row=row.row):
                break
            if tries >= MAX_TRIES:
                raise RuntimeError(f"row {row.row}: no free name after {MAX_TRIES} tries from {row.name!r}")
        if candidate != row.name:
            row = row.model_copy(update={"name": candidate, "renamed_from": row.name})
        rows.append(row)
    return plan.model_copy(update={"rows": rows})
