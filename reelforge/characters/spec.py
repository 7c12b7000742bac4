"""A character spec: who to generate, in which style family."""

from __future__ import annotations

import re
import unicodedata
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from reelforge.storage.keys import safe_slug

StyleFamily = Literal["realistic", "stylized"]
Gender = Literal["female", "male", "nonbinary"]

# Types whose look is drawn rather than photographed default to the stylized (SDXL) family.
STYLIZED_TYPES = frozenset({"mascot", "cartoon", "anime", "chibi"})


def slugify(name: str, *, max_length: int = 48) -> str:
    """A file-system-safe slug: ASCII letters, digits and single dashes, never empty, never a path."""
    return safe_slug(name, max_length=max_length, fallback="character")


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

    @field_validator("character_type")
    @classmethod
    def _type_is_a_word(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", value):
            raise ValueError("must be lower-case letters, digits and underscores, e.g. kpop_idol")
        return value

    @property
    def slug(self) -> str:
        return slugify(self.name)

    @property
    def family(self) -> StyleFamily:
        if self.style is not None:
            return self.style
        return "stylized" if self.character_type in STYLIZED_TYPES else "realistic"
