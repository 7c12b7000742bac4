"""Character names: readable, distinct slugs for any script; names without letters refused."""

from __future__ import annotations

import hashlib
import re
import unicodedata

import pytest
from pydantic import ValidationError

from reelforge.characters.names import character_slug, name_hash
from reelforge.characters.spec import CharacterSpec
from reelforge.storage.keys import character_prefix, safe_slug


def _hash(name: str) -> str:
    return hashlib.sha256(unicodedata.normalize("NFC", name).encode("utf-8")).hexdigest()[:8]


def test_non_latin_names_get_readable_distinct_slugs() -> None:
    slugs = {name: character_slug(name) for name in ["김민아", "🎤🎶", "민아", "Мина", "ミナ", "Zoë", "Zoe"]}
    assert slugs["김민아"] == f"gimmina-{_hash('김민아')}"
    assert slugs["🎤🎶"] == f"microphone-notes-{_hash('🎤🎶')}"
    assert slugs["Мина"] == f"mina-{_hash('Мина')}"
    assert slugs["Zoë"] == f"zoe-{_hash('Zoë')}" and slugs["Zoe"] == "zoe"
    assert len(set(slugs.values())) == len(slugs)  # all distinct (they all read 'character' before)
    for slug in slugs.values():
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", slug) and len(slug) <= 48
        character_prefix(slug)  # a valid key part


def test_plain_names_keep_their_slugs() -> None:
    assert character_slug("Mina Park") == "mina-park" == character_slug("  mina park ")
    assert character_slug("O'Brien_2") == "o-brien-2"
    assert safe_slug("Zoë") == "zoe"  # storage's generic slug keeps its contract


def test_composed_and_decomposed_spellings_agree() -> None:
    composed, decomposed = "Zo\u00eb", "Zoe\u0308"
    assert character_slug(composed) == character_slug(decomposed) and name_hash(composed) == name_hash(decomposed)


def test_path_tricks_and_long_names() -> None:
    assert character_slug("../../etc") == f"etc-{_hash('../../etc')}"
    assert character_slug("...") == _hash("...")  # nothing readable: the hash alone
    long_a, long_b = "a" * 60 + "x", "a" * 60 + "y"
    assert character_slug(long_a) != character_slug(long_b)
    assert len(character_slug(long_a)) <= 48 and character_slug(long_a).startswith("a" * 39 + "-")


def test_spec_keeps_the_real_name() -> None:
    spec = CharacterSpec(name="  Zoe\u0308 Park ")
    assert spec.name == "Zo\u00eb Park" and spec.slug == f"zoe-park-{_hash('Zoë Park')}"
    assert CharacterSpec(name="김민아").slug == f"gimmina-{_hash('김민아')}"
    assert CharacterSpec(name="🎤🎶").name == "🎤🎶"  # emoji-only names are allowed


@pytest.mark.parametrize("name", ["   ", "...", "—", "\u200b", "-_-"])
def test_names_without_letters_are_refused(name: str) -> None:
    with pytest.raises(ValidationError) as caught:
        CharacterSpec(name=name)
    assert [e["loc"] for e in caught.value.errors()] == [("name",)]
    assert "letter, digit or emoji" in str(caught.value)
