"""What the fleet and the store hold, for the operator commands (``reelforge workers``, ``reelforge characters``).

Workers: each configured worker is asked once, every question on its own (``/system_stats`` for health and
devices, ``/object_info`` for its node classes, ``/models`` and ``/models/<folder>`` for model files, ``/queue``
for its depth and our prompts with their flow runs from ``extra_data.reelforge``, ``/history?max_items=1`` for
the model files its latest prompt loaded: ComfyUI does not report what is loaded in memory). A worker that does
not answer is reported with the reason, never raised.

Characters: ``characters/<slug>/v<N>/`` with its manifest (complete), reservation or abandoned marker; a manifest
gives the name, the LoRA and its verdict, the voice and every artifact's key and URI.
"""

from __future__ import annotations

import asyncio
import difflib
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, Field

from reelforge.comfy import ComfyClient, ComfyError
from reelforge.comfy.graph import AFFINITY_FOLDERS, model_refs
from reelforge.settings import WorkerSettings
from reelforge.storage import (
    ArtifactStore,
    Manifest,
    StoreError,
    character_manifest_key,
    character_prefix,
    production_prefix,
    read_manifest,
)

__all__ = [
    "CharacterEntry",
    "CharacterNotFound",
    "CharacterVersion",
    "OurPrompt",
    "ProductionEntry",
    "ProductionNotFound",
    "ProductionVersion",
    "WorkerReport",
    "find_character",
    "find_production",
    "inspect_workers",
    "list_characters",
    "list_productions",
]

# ------------------------------------------------------------------------------------------------ workers


class OurPrompt(BaseModel):
    """One of reelforge's prompts in a worker's queue."""

    prompt_id: str
    state: str  # running | pending
    job_id: str
    flow_run_id: str | None = None


class WorkerReport(BaseModel):
    """What one worker said (or why it said nothing)."""

    url: str
    labels: list[str] = Field(default_factory=list)
    healthy: bool = False
    error: str | None = None  # why it is not healthy
    comfyui_version: str | None = None
    devices: list[str] = Field(default_factory=list)
    node_classes: int | None = None
    models: dict[str, int] = Field(default_factory=dict)  # folder -> number of files (folders with files only)
    model_files: dict[str, list[str]] = Field(default_factory=dict)
    last_loaded: list[str] = Field(default_factory=list)  # "folder/name" of what its latest prompt loaded
    running: int | None = None
    pending: int | None = None
    ours: list[OurPrompt] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list)  # questions it could not answer while healthy

    @property
    def queue_depth(self) -> int | None:
        return None if self.running is None or self.pending is None else self.running + self.pending


async def _inspect(client: ComfyClient, labels: list[str], reason: Callable[[BaseException], str]) -> WorkerReport:
    report = WorkerReport(url=client.url, labels=labels)
    try:
        stats = await client.system_stats()
    except ComfyError as exc:
        report.error = reason(exc)
        return report
    report.healthy = True
    system = stats.get("system")
    system = system if isinstance(system, dict) else {}
    report.comfyui_version = str(system.get("comfyui_version")) if system.get("comfyui_version") else None
    report.devices = [str(d.get("name")) for d in stats.get("devices") or [] if isinstance(d, dict)]

    async def ask(what: str, call: Callable[[], Any]) -> None:
        try:
            await call()
        except ComfyError as exc:
            report.problems.append(f"{what}: {reason(exc)}")

    async def classes() -> None:
        report.node_classes = len(await client.object_info())

    async def models() -> None:
        folders = await client.models()
        files = await asyncio.gather(*(client.models(f) for f in folders), return_exceptions=True)
        for folder, names in zip(folders, files, strict=True):
            if isinstance(names, list) and names:
                report.model_files[folder] = sorted(names)
                report.models[folder] = len(names)

    async def queue() -> None:
        state = await client.get_queue()
        report.running, report.pending = len(state.running), len(state.pending)
        for where, items in (("running", state.running), ("pending", state.pending)):
            for item in items:
                owner = item.owner
                if owner is not None:
                    report.ours.append(OurPrompt(prompt_id=item.prompt_id, state=where, job_id=owner.job_id,
                                                 flow_run_id=owner.flow_run_id))

    async def last_loaded() -> None:
        history = await client.recent_history(1)
        for entry in history.values():
            prompt = entry.get("prompt") if isinstance(entry, dict) else None
            graph = prompt[2] if isinstance(prompt, list) and len(prompt) > 2 and isinstance(prompt[2], dict) else {}
            refs = model_refs(graph)
            report.last_loaded = sorted(str(r) for r in refs if r.folder in AFFINITY_FOLDERS) or sorted(map(str, refs))

    await asyncio.gather(ask("node classes", classes), ask("models", models), ask("queue", queue),
                         ask("history", last_loaded))
    return report


async def inspect_workers(
    settings: WorkerSettings, *, reason: Callable[[BaseException], str] = str, timeout_s: float | None = None
) -> list[WorkerReport]:
    """One report per worker of ``REELFORGE_COMFY_URLS``, in their order, all asked at once.

    ``reason`` words a failure (the CLI's ``worker_failure``); ``timeout_s`` caps each request (default the
    request timeout setting).
    """
    from reelforge.fleet import worker_clients  # fleet imports the preview worker: only when asked

    timeout = timeout_s or settings.request_timeout_s
    async with httpx.AsyncClient(timeout=timeout) as http:
        clients = worker_clients(settings, http)
        for client in clients:
            client.request_timeout = timeout
        try:
            return list(await asyncio.gather(*(
                _inspect(c, sorted(e.labels), reason) for c, e in zip(clients, settings.comfy_urls, strict=True)
            )))
        finally:
            for client in clients:
                await client.aclose()


# --------------------------------------------------------------------------------------------- characters


class StoredVersion(BaseModel):
    """One version folder of a character or a production."""

    version: int
    state: str  # complete | reserved | abandoned
    manifest_key: str | None = None
    manifest_uri: str | None = None
    created_at: str | None = None


class CharacterVersion(StoredVersion):
    """One version folder of a character."""

    verdict: str | None = None  # passed | failed | None (no LoRA)
    score: float | None = None
    lora: dict[str, Any] | None = None
    voice: dict[str, Any] | None = None  # key, uri of the voice sample
    intro: dict[str, Any] | None = None
    gpu_seconds: float | None = None
    cost: float | None = None
    artifacts: list[dict[str, Any]] = Field(default_factory=list)  # stage, key, uri, kind
    error: str | None = None  # an unreadable manifest


class CharacterEntry(BaseModel):
    """A character in the store: its slug, name (from its latest manifest) and versions."""

    slug: str
    name: str | None = None
    versions: list[CharacterVersion] = Field(default_factory=list)

    @property
    def latest(self) -> CharacterVersion | None:
        return _latest_complete(self.versions)


_V = TypeVar("_V", bound=StoredVersion)


def _latest_complete(versions: list[_V]) -> _V | None:
    complete = [v for v in versions if v.state == "complete"]
    return complete[-1] if complete else None


class StoredNotFound(LookupError):
    """Nothing of that name or slug in the store; ``suggestions`` are the nearest ones stored."""

    what = "entry"

    def __init__(self, wanted: str, suggestions: list[str]) -> None:
        hint = f"; did you mean {' or '.join(repr(s) for s in suggestions)}?" if suggestions else ""
        super().__init__(f"no {self.what} {wanted!r} in the store{hint}")
        self.wanted = wanted
        self.suggestions = suggestions


class CharacterNotFound(StoredNotFound):
    """No character of that name or slug."""

    what = "character"


_VOICE_STAGES = ("voice_design", "voice_clone")
_INTRO_STAGES = ("talking_video",)


def _from_manifest(store: ArtifactStore, slug: str, version: int, details: bool) -> tuple[CharacterVersion, str]:
    key = character_manifest_key(slug, version)
    entry = CharacterVersion(version=version, state="complete", manifest_key=key)
    try:
        manifest: Manifest = read_manifest(store, key)
        entry.manifest_uri = store.ref(key).uri
    except StoreError as exc:
        entry.error = str(exc).splitlines()[0]
        return entry, ""
    entry.created_at = manifest.created_at.isoformat()
    verdict = manifest.details.get("verdict")
    if isinstance(verdict, dict):
        entry.verdict = "passed" if verdict.get("passed") else "failed"
        entry.score = verdict.get("score")
    lora = manifest.details.get("lora")
    entry.lora = lora if isinstance(lora, dict) else None
    entry.gpu_seconds, entry.cost = round(manifest.total_gpu_seconds, 3), round(manifest.total_cost, 6)
    for stage in manifest.stages:
        for out in stage.outputs:
            item = {"stage": stage.stage, "key": out.key, "uri": out.uri, "kind": out.kind}
            if stage.stage in _VOICE_STAGES:
                entry.voice = item
            elif stage.stage in _INTRO_STAGES:
                entry.intro = item
            if details:
                entry.artifacts.append(item)
    return entry, manifest.name or ""


def _slugs(store: ArtifactStore) -> list[str]:
    keys = store.list("characters/")
    return sorted({k.split("/")[1] for k in keys if k.count("/") >= 2})


def _character(store: ArtifactStore, slug: str, *, details: bool) -> CharacterEntry:
    entry = CharacterEntry(slug=slug)
    for info in store.versions(character_prefix(slug)):
        if info.state == "complete":
            version, name = _from_manifest(store, slug, info.number, details)
            entry.name = name or entry.name
        else:
            version = CharacterVersion(version=info.number, state=str(info.state))
        entry.versions.append(version)
    return entry


def list_characters(store: ArtifactStore) -> list[CharacterEntry]:
    """Every character in the store with its versions (no per-artifact list), by slug."""
    return [_character(store, slug, details=False) for slug in _slugs(store)]


def find_character(store: ArtifactStore, name_or_slug: str) -> CharacterEntry:
    """One character by slug or by name as written, with every artifact of each version; else
    ``CharacterNotFound`` with the nearest slugs and names."""
    from reelforge.characters import character_slug

    slugs = _slugs(store)
    wanted = name_or_slug.strip()
    candidates = [wanted] if wanted in slugs else []
    if not candidates:
        try:
            slug = character_slug(wanted)
        except ValueError:
            slug = ""
        candidates = [slug] if slug in slugs else []
    if candidates:
        return _character(store, candidates[0], details=True)
    entries = list_characters(store)
    names = {e.name.casefold(): e for e in entries if e.name}
    if wanted.casefold() in names:
        return _character(store, names[wanted.casefold()].slug, details=True)
    shown = {e.slug: e.name or e.slug for e in entries}  # each character once, by its name when it has one
    keys = {**{e.slug: e.slug for e in entries}, **{n: e.slug for n, e in names.items()}}
    close = difflib.get_close_matches(wanted.casefold(), list(keys), n=6, cutoff=0.6)
    suggestions = list(dict.fromkeys(shown[keys[c]] for c in close))[:3]
    raise CharacterNotFound(wanted, suggestions)


# --------------------------------------------------------------------------------------------- productions


class ProductionVersion(StoredVersion):
    """One version of a production: its video, script, cast and the takes it uses."""

    video_uri: str | None = None
    script_key: str | None = None
    cast: dict[str, Any] = Field(default_factory=dict)
    takes: list[dict[str, Any]] = Field(default_factory=list)
    gpu_seconds: float | None = None
    cost: float | None = None
    error: str | None = None  # an unreadable manifest


class ProductionEntry(BaseModel):
    """A production in the store (``productions/<slug>/``): its title and versions."""

    slug: str
    title: str | None = None
    versions: list[ProductionVersion] = Field(default_factory=list)

    @property
    def latest(self) -> ProductionVersion | None:
        return _latest_complete(self.versions)


class ProductionNotFound(StoredNotFound):
    """No production of that slug or title."""

    what = "production"


def _production(store: ArtifactStore, slug: str) -> ProductionEntry:
    entry = ProductionEntry(slug=slug)
    for info in store.versions(production_prefix(slug)):
        version = ProductionVersion(version=info.number, state=str(info.state))
        entry.versions.append(version)
        if info.state != "complete":
            continue
        key = f"{production_prefix(slug, info.number)}manifest.json"
        version.manifest_key = key
        try:
            manifest: Manifest = read_manifest(store, key)
            version.manifest_uri = store.ref(key).uri
        except StoreError as exc:
            version.error = str(exc).splitlines()[0]
            continue
        entry.title = manifest.name or entry.title
        version.created_at = manifest.created_at.isoformat()
        video = manifest.details.get("video")
        version.video_uri = store.ref(video).uri if isinstance(video, str) else None
        script = manifest.details.get("script")
        version.script_key = script.get("key") if isinstance(script, dict) else None
        cast, takes = manifest.details.get("cast"), manifest.details.get("takes")
        version.cast = cast if isinstance(cast, dict) else {}
        version.takes = [t for t in takes if isinstance(t, dict)] if isinstance(takes, list) else []
        version.gpu_seconds, version.cost = round(manifest.total_gpu_seconds, 3), round(manifest.total_cost, 6)
    return entry


def _production_slugs(store: ArtifactStore) -> list[str]:
    keys = store.list("productions/")
    return sorted({k.split("/")[1] for k in keys if k.count("/") >= 2})


def list_productions(store: ArtifactStore) -> list[ProductionEntry]:
    """Every production in the store with its versions, by slug."""
    return [_production(store, slug) for slug in _production_slugs(store)]


def find_production(store: ArtifactStore, slug_or_title: str) -> ProductionEntry:
    """One production by slug or by title (case-insensitive); else ``ProductionNotFound`` with the nearest."""
    wanted = slug_or_title.strip()
    slugs = _production_slugs(store)
    if wanted in slugs:
        return _production(store, wanted)
    entries = list_productions(store)
    by_title = {e.title.casefold(): e for e in entries if e.title}
    if wanted.casefold() in by_title:
        return by_title[wanted.casefold()]
    known = slugs + [e.title for e in entries if e.title]
    raise ProductionNotFound(wanted, difflib.get_close_matches(wanted, known, n=2, cutoff=0.5))
