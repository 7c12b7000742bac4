"""Characters: specs, names and slugs, and the deterministic prompt builder (pure: no I/O).

Import from here (``from reelforge.characters import CharacterSpec, build_prompts``).
"""

from reelforge.characters.names import character_slug
from reelforge.characters.prompts import CharacterPrompts, VariationPrompt, build_prompts, describe
from reelforge.characters.spec import CharacterSpec, Gender, StyleFamily

__all__ = [
    "CharacterPrompts",
    "CharacterSpec",
    "Gender",
    "StyleFamily",
    "VariationPrompt",
    "build_prompts",
    "character_slug",
    "describe",
]
