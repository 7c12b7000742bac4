"""Characters: specs, names and slugs, types and name pools, batch plans, the prompt builder (pure: no I/O).

Import from here (``from reelforge.characters import CharacterSpec, build_prompts``).
"""

from reelforge.characters.batch import (
    BatchFileError,
    BatchPlan,
    BatchRow,
    Composition,
    RowError,
    generate,
    read_csv,
)
from reelforge.characters.names import character_slug
from reelforge.characters.prompts import CharacterPrompts, VariationPrompt, build_prompts, describe
from reelforge.characters.spec import CharacterSpec, Gender, StyleFamily
from reelforge.characters.types import TypeInfo, UnknownType, character_type, known_types

__all__ = [
    "BatchFileError",
    "BatchPlan",
    "BatchRow",
    "CharacterPrompts",
    "CharacterSpec",
    "Composition",
    "Gender",
    "RowError",
    "StyleFamily",
    "TypeInfo",
    "UnknownType",
    "VariationPrompt",
    "build_prompts",
    "character_slug",
    "character_type",
    "describe",
    "generate",
    "known_types",
    "read_csv",
]
