"""Character types: what each kind of character is (pure data): its age range, gender, name pool and style.

``character_type(name)`` gives a ``TypeInfo``; ``fitness_athlete_female`` is ``fitness_athlete`` with its gender
fixed. Unknown types raise ``UnknownType`` listing the known ones. The single-character flow accepts any type
word (its prompt describes it); batches check types against this table, so a CSV typo is a row error.
"""

from __future__ import annotations

import difflib
from typing import Literal

from pydantic import BaseModel, ConfigDict

from reelforge.characters.spec import Gender

__all__ = ["TYPES", "NamePool", "TypeInfo", "UnknownType", "character_type", "known_types"]

NamePool = Literal["korean", "japanese", "western", "stage", "mascot"]


class TypeInfo(BaseModel):
    """One character type: where names come from, which ages and genders fit."""

    model_config = ConfigDict(frozen=True)

    name: str  # the base type word, e.g. fitness_athlete
    pool: NamePool
    age_min: int
    age_max: int
    gender: Gender | None = None  # fixed by the type (fitness_athlete_female), else chosen per character
    genders: tuple[Gender, ...] = ("female", "male")  # the choices when not fixed


TYPES: dict[str, TypeInfo] = {
    t.name: t
    for t in (
        TypeInfo(name="kpop_idol", pool="korean", age_min=17, age_max=28),
        TypeInfo(name="jpop_idol", pool="japanese", age_min=17, age_max=28),
        TypeInfo(name="fitness_athlete", pool="western", age_min=20, age_max=40),
        TypeInfo(name="influencer", pool="western", age_min=18, age_max=40, genders=("female", "male", "nonbinary")),
        TypeInfo(name="rapper", pool="stage", age_min=18, age_max=40),
        TypeInfo(name="testimonial", pool="western", age_min=22, age_max=70, genders=("female", "male", "nonbinary")),
        TypeInfo(name="mascot", pool="mascot", age_min=1, age_max=120, genders=("nonbinary",)),
        TypeInfo(name="cartoon", pool="mascot", age_min=1, age_max=120, genders=("female", "male", "nonbinary")),
    )
}
_GENDER_SUFFIXES: dict[str, Gender] = {"_female": "female", "_male": "male"}


class UnknownType(ValueError):
    """A type word that is not in the table; the message lists the known ones."""

    def __init__(self, name: str) -> None:
        self.type_name = name
        close = difflib.get_close_matches(name, known_types(), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        super().__init__(f"unknown character type {name!r}; {hint}known: {', '.join(sorted(TYPES))} "
                         "(add _female or _male to fix the gender, e.g. fitness_athlete_female)")


def known_types() -> list[str]:
    base = sorted(TYPES)
    gendered = [f"{t}{s}" for t in base for s in _GENDER_SUFFIXES if len(TYPES[t].genders) > 1]
    return base + gendered


def character_type(name: str) -> TypeInfo:
    """The type ``name`` stands for (``<type>_female`` / ``<type>_male`` fix the gender)."""
    if name in TYPES:
        return TYPES[name]
    for suffix, gender in _GENDER_SUFFIXES.items():
        base = name.removesuffix(suffix)
        if base != name and base in TYPES and gender in TYPES[base].genders:
            return TYPES[base].model_copy(update={"gender": gender, "genders": (gender,)})
    raise UnknownType(name)
