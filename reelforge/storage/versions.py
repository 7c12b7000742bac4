"""Version folders ``<prefix>v<N>/``: claimed before use, so two runs of one subject never pick the same number.

* ``reserve_version`` creates ``<prefix>v<N>/reservation.json`` create-if-absent (``put_new``: a hard link
  locally, ``If-None-Match: *`` on S3) for N = ``next_version``, and tries N+1 on a conflict. The reservation
  makes the folder exist, so it counts for every later ``next_version``.
* States (``versions``): ``complete`` when ``manifest.json`` exists; else ``abandoned`` when ``abandoned.json``
  exists, when the reservation's holder is gone (``Holder.gone``: a dead pid on this host, or older than
  ``max_age_s`` on another host) or unreadable, or when there is no reservation at all (folders made by older
  code); else ``reserved``.
* ``mark_abandoned`` writes ``abandoned.json`` into abandoned folders that have no marker yet. Nothing is ever
  deleted (cached results elsewhere may point at the artifacts) and numbers are never reused.

Only the stores' primitives are used (``put_new``, ``list``, ``read_bytes``, ``next_version``); each store's
methods of the same names delegate here.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from reelforge.liveness import Holder
from reelforge.storage.errors import ArtifactMissing, StoreConflict, StoreError
from reelforge.storage.keys import check_prefix, version_number, version_prefix

if TYPE_CHECKING:
    from reelforge.storage.base import ArtifactRef

RESERVATION = "reservation.json"
MANIFEST = "manifest.json"
ABANDONED = "abandoned.json"
VersionState = Literal["complete", "reserved", "abandoned"]
# A bound on conflicts in a row; each one means another writer took a number, so this is never reached in practice.
_MAX_ATTEMPTS = 10_000


class _Primitives(Protocol):
    def put_new(
        self, data: bytes, key: str, *, kind: str | None = None, metadata: dict[str, Any] | None = None
    ) -> ArtifactRef: ...

    def list(self, prefix: str) -> list[str]: ...

    def read_bytes(self, key: str) -> bytes: ...

    def next_version(self, prefix: str, marker: str = "v") -> int: ...


class Reservation(BaseModel):
    """``reservation.json``: who claimed the version."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    version: int = Field(ge=1)
    holder: Holder


class AbandonedMarker(BaseModel):
    """``abandoned.json``: why and by whom a version was given up."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    version: int = Field(ge=1)
    holder: Holder | None  # the reservation's holder (None: no or unreadable reservation)
    marked_by: Holder
    marked_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    reason: str | None = None  # set when the holder gave it up itself (its run failed)


class VersionInfo(BaseModel):
    """One version folder: its number, state and (when not complete) the reservation's holder."""

    model_config = ConfigDict(frozen=True)

    number: int
    state: VersionState
    holder: Holder | None = None
    prefix: str  # the folder, e.g. characters/mina-park/v3/


def _json(model: BaseModel) -> bytes:
    return (model.model_dump_json(indent=2) + "\n").encode("utf-8")


def reserve_version(store: _Primitives, prefix: str, holder: Holder) -> int:
    """Claim the next free version under ``prefix``; returns its number."""
    number = store.next_version(prefix)
    for _ in range(_MAX_ATTEMPTS):
        key = version_prefix(prefix, number) + RESERVATION
        try:
            store.put_new(_json(Reservation(version=number, holder=holder)), key, kind="json")
            return number
        except StoreConflict:
            number += 1  # another run took it between our listing and our write
    raise StoreError(f"no free version under {prefix!r} after {_MAX_ATTEMPTS} attempts", operation="reserve")


def _scan(store: _Primitives, prefix: str, complete: str = MANIFEST) -> dict[int, set[str]]:
    """Version number -> the bookkeeping files (manifest, reservation, marker) its folder holds."""
    folder = check_prefix(prefix).rstrip("/")
    base = f"{folder}/" if folder else ""
    found: dict[int, set[str]] = {}
    for key in store.list(base):
        segment, sep, name = key[len(base) :].partition("/")
        number = version_number(segment) if sep else None
        if number is None:
            continue
        files = found.setdefault(number, set())
        if name in (complete, RESERVATION, ABANDONED):
            files.add(name)
    return found


def _holder(store: _Primitives, folder: str) -> Holder | None:
    try:
        return Reservation.model_validate_json(store.read_bytes(folder + RESERVATION)).holder
    except (ArtifactMissing, ValidationError, ValueError):
        return None  # removed meanwhile, or torn / hand-edited: nobody provably holds it


def _info(
    store: _Primitives, prefix: str, number: int, files: set[str], max_age_s: float | None, complete: str = MANIFEST
) -> VersionInfo:
    folder = version_prefix(prefix, number)
    if complete in files:
        return VersionInfo(number=number, state="complete", prefix=folder)
    if RESERVATION not in files:  # made by code older than reservations
        return VersionInfo(number=number, state="abandoned", prefix=folder)
    holder = _holder(store, folder)
    gone = ABANDONED in files or holder is None or holder.gone(max_age_s)
    return VersionInfo(number=number, state="abandoned" if gone else "reserved", holder=holder, prefix=folder)


def versions(
    store: _Primitives, prefix: str, *, max_age_s: float | None = None, complete: str = MANIFEST
) -> list[VersionInfo]:
    """Every version folder under ``prefix``, by number (``max_age_s``: see ``Holder.gone``)."""
    scanned = sorted(_scan(store, prefix, complete).items())
    return [_info(store, prefix, n, files, max_age_s, complete) for n, files in scanned]


def mark_abandoned(
    store: _Primitives, prefix: str, *, max_age_s: float | None = None, complete: str = MANIFEST
) -> list[int]:
    """Write ``abandoned.json`` into abandoned versions without one; returns the numbers marked by this call."""
    marked: list[int] = []
    by = Holder.current(label="mark_abandoned")
    for number, files in sorted(_scan(store, prefix, complete).items()):
        if ABANDONED in files:
            continue
        info = _info(store, prefix, number, files, max_age_s, complete)
        if info.state != "abandoned":
            continue
        marker = AbandonedMarker(version=number, holder=info.holder, marked_by=by)
        try:
            store.put_new(_json(marker), info.prefix + ABANDONED, kind="json")
        except StoreConflict:
            continue  # marked by someone else meanwhile
        marked.append(number)
    return marked


def abandon(store: _Primitives, prefix: str, number: int, *, reason: str) -> bool:
    """The holder gives its own version up (its run failed): ``abandoned.json`` with the reason; False if the
    version was already marked. Its artifacts stay (cached records may point at them); the number is not reused."""
    marker = AbandonedMarker(version=number, holder=None, marked_by=Holder.current(label="abandon"), reason=reason)
    try:
        store.put_new(_json(marker), version_prefix(prefix, number) + ABANDONED, kind="json")
    except StoreConflict:
        return False
    return True


class VersionedFolders:
    """The version methods of a store, over its own primitives (mixed into ``LocalStore`` and ``S3Store``).

    The store provides ``put_new``, ``list``, ``read_bytes``, ``next_version`` and ``_boundary(operation, key)``
    (which turns low-level failures into store errors naming the store, the key and the operation).
    """

    def _boundary(self, operation: str, key: str | None) -> contextlib.AbstractContextManager[None]:
        raise NotImplementedError

    def reserve_version(self, prefix: str, holder: Holder) -> int:
        """Claim the next ``<prefix>v<N>/`` by creating its ``reservation.json`` (create-if-absent: atomic)."""
        with self._boundary("reserve", prefix or None):
            return reserve_version(cast(_Primitives, self), prefix, holder)

    def versions(self, prefix: str, *, max_age_s: float | None = None, complete: str = MANIFEST) -> list[VersionInfo]:
        """Every version folder under ``prefix`` with its state (complete: it holds ``complete``, e.g.
        ``record.json`` for LoRA versions; reserved; abandoned)."""
        with self._boundary("versions", prefix or None):
            return versions(cast(_Primitives, self), prefix, max_age_s=max_age_s, complete=complete)

    def mark_abandoned(self, prefix: str, *, max_age_s: float | None = None, complete: str = MANIFEST) -> list[int]:
        """Mark reservations whose holder is gone and which are not complete; returns the numbers marked."""
        with self._boundary("mark_abandoned", prefix or None):
            return mark_abandoned(cast(_Primitives, self), prefix, max_age_s=max_age_s, complete=complete)

    def abandon(self, prefix: str, number: int, *, reason: str) -> bool:
        """Give up one's own reserved version (the run failed); see ``versions.abandon``."""
        with self._boundary("abandon", prefix or None):
            return abandon(cast(_Primitives, self), prefix, number, reason=reason)
