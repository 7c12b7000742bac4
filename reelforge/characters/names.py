"""Character names and their folder slugs (pure).

A name is kept as given (NFC, stripped); its slug names the store folder ``characters/<slug>/``:

* plain names (ASCII letters, digits, spaces, ``-``, ``_``, ``'``) slug as before: ``Mina Park`` -> ``mina-park``;
* any other name is transliterated (anyascii: ``김민아`` -> ``GimMinA``, ``🎤`` -> ``:microphone:``) and gets
  ``-`` plus the first 8 hex digits of the sha256 of the NFC name, so names that read alike stay apart
  (``Zoë`` -> ``zoe-<hash>``, ``Zoe`` -> ``zoe``); with nothing readable left, the slug is the hash alone;
* a slug cut to its maximum length gets the hash too, so long names sharing a beginning do not collide.

Slugs depend on anyascii's tables, so the version range in pyproject.toml is kept narrow: a changed
transliteration would file a later run of the same name under a new folder.
"""

from __future__ import annotations

import re
import unicodedata

from anyascii import anyascii

from reelforge.hashing import sha256_bytes

MAX_SLUG_LENGTH = 48
HASH_LENGTH = 8
_PLAIN = re.compile(r"[A-Za-z0-9 _'\-]+")


def normalize_name(name: str) -> str:
    """NFC, surrounding whitespace removed (the form names are kept, compared and hashed in)."""
    return unicodedata.normalize("NFC", name).strip()


def has_name_characters(name: str) -> bool:
    """Whether ``name`` has a letter, digit or pictograph (emoji): not only spaces, punctuation and marks."""
    return any(unicodedata.category(ch)[0] in "LN" or unicodedata.category(ch) == "So" for ch in name)


def name_hash(name: str) -> str:
    return sha256_bytes(normalize_name(name).encode("utf-8"))[:HASH_LENGTH]


def _words(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def character_slug(name: str, *, max_length: int = MAX_SLUG_LENGTH) -> str:
    """The folder slug of a character name: ``[a-z0-9-]+``, never empty, never a path, distinct per spelling."""
    if max_length < HASH_LENGTH + 2:
        raise ValueError(f"max_length must be at least {HASH_LENGTH + 2}")
    name = normalize_name(name)
    readable = _words(anyascii(name))
    lossy = not _PLAIN.fullmatch(name) or len(readable) > max_length
    if not lossy:
        return readable or name_hash(name)
    head = readable[: max_length - HASH_LENGTH - 1].strip("-")
    return f"{head}-{name_hash(name)}" if head else name_hash(name)
