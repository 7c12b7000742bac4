"""Store keys of LoRA versions (pure): ``loras/<slug>/v<N>/record.json`` and the file beside it.

```
loras/<slug>/v<N>/reservation.json         who claimed version N (store.reserve_version)
loras/<slug>/v<N>/<sha256[:16]>.safetensors the LoRA file, named by its content
loras/<slug>/v<N>/record.json              the LoraRecord: written once, after the file
loras/<slug>/v<N>/verdict.json             test scores and verdict: written once, later
```

Slugs follow the store's rules (``[A-Za-z0-9_-]+``: the character's folder slug); every key passes
``reelforge.storage.keys.check_key``.
"""

from __future__ import annotations

import re

from reelforge.storage.errors import UnsafeKey
from reelforge.storage.keys import check_key, content_key, version_number, version_prefix

__all__ = [
    "LORA_ROOT",
    "RECORD",
    "VERDICT",
    "lora_file_key",
    "lora_prefix",
    "lora_record_key",
    "lora_verdict_key",
    "lora_version_prefix",
    "parse_lora_key",
]

LORA_ROOT = "loras"
RECORD = "record.json"
VERDICT = "verdict.json"
_SLUG = re.compile(r"[A-Za-z0-9_-]+")


def _slug(slug: str) -> str:
    if not isinstance(slug, str) or not _SLUG.fullmatch(slug):
        raise UnsafeKey(f"LoRA slug {str(slug)[:80]!r} is not a safe slug (letters, digits, '-', '_')")
    return slug


def lora_prefix(slug: str | None = None) -> str:
    """``loras/`` (every LoRA) or ``loras/<slug>/`` (one character's versions)."""
    return f"{LORA_ROOT}/" if slug is None else check_key(f"{LORA_ROOT}/{_slug(slug)}") + "/"


def lora_version_prefix(slug: str, version: int) -> str:
    """``loras/<slug>/v<N>/``."""
    return version_prefix(lora_prefix(slug), version)


def lora_record_key(slug: str, version: int) -> str:
    """``loras/<slug>/v<N>/record.json``."""
    return check_key(lora_version_prefix(slug, version) + RECORD)


def lora_verdict_key(slug: str, version: int) -> str:
    """``loras/<slug>/v<N>/verdict.json``."""
    return check_key(lora_version_prefix(slug, version) + VERDICT)


def lora_file_key(slug: str, version: int, sha256: str) -> str:
    """``loras/<slug>/v<N>/<sha256[:16]>.safetensors``."""
    return content_key(lora_version_prefix(slug, version), sha256, ".safetensors")


def parse_lora_key(key: str) -> tuple[str, int, str] | None:
    """``loras/mina/v3/record.json`` -> (``mina``, 3, ``record.json``); None for any other key."""
    parts = key.split("/")
    if len(parts) != 4 or parts[0] != LORA_ROOT or not _SLUG.fullmatch(parts[1]):
        return None
    number = version_number(parts[2])
    return None if number is None else (parts[1], number, parts[3])
