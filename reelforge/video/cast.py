"""The cast of a production, read from the character records in the store: base image, voice, LoRA.

``resolve_cast(store, names)`` finds each name's latest complete character version
(``characters/<slug>/v<N>/manifest.json``) and what a production needs from it; a name without a record is
``UnknownCharacter``, a record without a LoRA is ``CharacterIncomplete`` (keyframes need the identity), a record
without a voice is used with a voice designed from its description (``voice_note`` says so).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from reelforge.characters.names import character_slug
from reelforge.storage import (
    ArtifactRef,
    ArtifactStore,
    StoreError,
    character_manifest_key,
    character_prefix,
    read_manifest,
)
from reelforge.video.errors import CharacterIncomplete, UnknownCharacter

__all__ = ["CastMember", "resolve_cast"]


class CastMember(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    slug: str
    version: int
    base: ArtifactRef  # the reference image (IP-Adapter) and lip-sync face
    lora: ArtifactRef  # the LoRA file
    lora_version: int | None = None
    voice: ArtifactRef | None = None  # the character's voice sample (cloned for each line)
    voice_text: str = ""  # what the sample says (the clone's transcript)
    voice_description: str = ""  # used to design a voice when there is no sample
    voice_note: str | None = None  # what is used instead, when something is missing

    def identity(self) -> dict[str, Any]:
        """What of this member goes into shot identities and cache keys (content, not places)."""
        return {"name": self.name, "base": self.base.sha256, "lora": self.lora.sha256,
                "voice": self.voice.sha256 if self.voice else self.voice_description}


def _latest_manifest_key(store: ArtifactStore, slug: str) -> tuple[int, str] | None:
    complete = [v for v in store.versions(character_prefix(slug)) if v.state == "complete"]
    if not complete:
        return None
    number = max(v.number for v in complete)
    return number, character_manifest_key(slug, number)


def _member(store: ArtifactStore, name: str) -> CastMember:
    slug = character_slug(name)
    found = _latest_manifest_key(store, slug)
    if found is None:
        raise UnknownCharacter(
            f"characters: {name!r} has no character record in the store (characters/{slug}/); make it first with "
            f"`reelforge run character --name {name!r}`", name=name)
    version, key = found
    try:
        manifest = read_manifest(store, key)
    except StoreError as exc:
        raise UnknownCharacter(f"characters: {name!r}: its record {key} cannot be read ({exc})", name=name) from exc
    base = voice = None
    for stage in manifest.stages:
        if stage.stage.startswith("character_base_") and stage.outputs:
            base = stage.outputs[0]
        if stage.stage in ("voice_design", "voice_clone") and stage.outputs:
            voice = stage.outputs[0]
    where = f"characters/{slug}/v{version}"
    if base is None:
        raise CharacterIncomplete(f"characters: {name!r} ({where}) has no base image", name=name, missing="base")
    lora = manifest.details.get("lora") or {}
    if not lora.get("file_key"):
        raise CharacterIncomplete(
            f"characters: {name!r} ({where}) has no LoRA (it was made without one), and keyframes need its "
            f"identity: make it again with a LoRA (`reelforge run character --name {name!r}`)",
            name=name, missing="lora")
    prompts = manifest.details.get("prompts") or {}
    description = str(prompts.get("voice") or "a clear, warm voice")
    note = None
    if voice is None:
        note = f"{name!r} has no voice sample: its lines use a voice designed from {description!r}"
    lora_ref = store.ref(str(lora["file_key"]))
    return CastMember(
        name=manifest.name or name, slug=slug, version=version, base=ArtifactRef(**base.model_dump(
            exclude={"node_id"})), lora=lora_ref, lora_version=lora.get("version"),
        voice=ArtifactRef(**voice.model_dump(exclude={"node_id"})) if voice else None,
        voice_text=str(prompts.get("sample_line") or ""), voice_description=description, voice_note=note,
    )


def resolve_cast(store: ArtifactStore, names: list[str]) -> dict[str, CastMember]:
    """Each name's character, in order; the first problem found is raised (naming the character)."""
    return {name: _member(store, name) for name in names}
