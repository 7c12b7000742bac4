"""A character spec: who to generate, in which style family. Names and slugs: ``reelforge.characters.names``."""

from __future__ import annotations

import re
import unicodedata
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from reelforge.characters.names import MAX_SLUG_LENGTH, character_slug, has_name_characters, normalize_name

StyleFamily = Literal["realistic", "stylized"]
Gender = Literal["female", "male", "nonbinary"]

# Types whose look is drawn rather than photographed default to the stylized (SDXL) family.
STYLIZED_TYPES = frozenset({"mascot", "cartoon", "anime", "chibi"})


def slugify(name: str, *, max_length: int = MAX_SLUG_LENGTH) -> str:
    """The folder slug of a character name (``names.character_slug``): safe, readable, distinct per spelling."""
    return character_slug(name, max_length=max_length)


class CharacterSpec(BaseModel):
    """One character to create; ``style`` defaults from the type (cartoon, mascot: stylized)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=80)
    character_type: str = Field(default="influencer", min_length=1, max_length=40)
    age: int | None = Field(default=None, ge=1, le=120)
    gender: Gender | None = None
    custom_prompt: str = Field(default="", max_length=2000)
    style: StyleFamily | None = None
    seed: int = Field(default=0, ge=0, le=2**32 - 1)

    @field_validator("name", "character_type", "custom_prompt")
    @classmethod
    def _no_control_characters(cls, value: str) -> str:
        if any(unicodedata.category(ch) == "Cc" for ch in value):
            raise ValueError("must not contain control characters")
        return value.strip()

    @field_validator("name")
    @classmethod
    def _name_has_letters(cls, value: str) -> str:
        value = normalize_name(value)
        if not has_name_characters(value):  # runs after the strip above: '   ' arrives here empty
            raise ValueError("must contain a letter, digit or emoji (not only spaces or punctuation)")
        return value

    @field_validator("character_type")
    @classmethod
    def _type_is_a_word(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", value):
            raise ValueError("must be lower-case letters, digits and underscores, e.g. kpop_idol")
        return value

    @property
    def slug(self) -> str:
        """The store folder's name: ``Mina Park`` -> ``mina-park``, ``김민아`` -> ``gimmina-<8 hex>``."""
        return slugify(self.name)

    @property
    def family(self) -> StyleFamily:
        if self.style is not None:
            return self.style
        return "stylized" if self.character_type in STYLIZED_TYPES else "realistic"
