"""Store-relative keys and safe slugs: pure functions, no I/O.

A key is a ``/``-separated relative path (``characters/mina-park/v1/base/<sha>.png``). ``check_key`` refuses
anything that could escape a store's root or collide with its own bookkeeping files.
"""

from __future__ import annotations

import re
import unicodedata

from reelforge.storage.errors import UnsafeKey

MAX_KEY_BYTES = 1024
MAX_SLUG_LENGTH = 64
_SLUG_FALLBACK = "item"


def safe_slug(name: str, *, max_length: int = MAX_SLUG_LENGTH, fallback: str = _SLUG_FALLBACK) -> str:
    """ASCII letters, digits and single dashes; never empty, never ``.``/``..``, at most ``max_length`` characters.

    Unicode is folded to ASCII where it has a decomposition (``Zoë`` -> ``zoe``), everything else (path
    separators, dots, control characters) becomes a dash, and leading/trailing dashes are dropped.
    """
    if max_length < 1:
        raise ValueError("max_length must be at least 1")
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:max_length].strip("-")
    if slug:
        return slug
    fallback_slug = re.sub(r"[^a-z0-9]+", "-", fallback.lower()).strip("-")[:max_length].strip("-")
    return fallback_slug or _SLUG_FALLBACK[:max_length]


def check_key(key: str) -> str:
    """Return ``key`` unchanged if it is a safe store-relative key, else raise ``UnsafeKey`` naming the problem.

    Refused: empty keys, absolute paths (``/x``, ``C:...``), backslashes, control characters, empty segments
    (``a//b``, trailing ``/``), ``.`` and ``..`` segments, segments starting with ``.`` (hidden files, which the
    stores use for temporary files and metadata), and keys over 1024 UTF-8 bytes.
    """
    if not isinstance(key, str):
        raise UnsafeKey(f"key must be a string, got {type(key).__name__}")
    if not key:
        raise UnsafeKey("empty key")
    shown = repr(key[:80] + ("..." if len(key) > 80 else ""))
    size = len(key.encode("utf-8", "surrogatepass"))
    if size > MAX_KEY_BYTES:
        raise UnsafeKey(f"key too long: {size} bytes (at most {MAX_KEY_BYTES}): {shown}")
    bad = next((ch for ch in key if unicodedata.category(ch) in ("Cc", "Cs")), None)
    if bad is not None:
        raise UnsafeKey(f"key contains a control character {bad!r}: {shown}")
    if "\\" in key:
        raise UnsafeKey(f"key contains a backslash: {shown}")
    if key.startswith("/") or re.match(r"^[A-Za-z]:", key):
        raise UnsafeKey(f"key is an absolute path: {shown}")
    for segment in key.split("/"):
        if segment == "":
            raise UnsafeKey(f"key has an empty segment ('//' or a trailing '/'): {shown}")
        if segment == "..":
            raise UnsafeKey(f"key has a '..' segment: {shown}")
        if segment == ".":
            raise UnsafeKey(f"key has a '.' segment: {shown}")
        if segment.startswith("."):
            raise UnsafeKey(f"key has a hidden segment {segment[:40]!r} (starts with '.'): {shown}")
    return key


def check_prefix(prefix: str) -> str:
    """A listing prefix: empty (everything), or a key-like string that may end with ``/``."""
    if prefix == "":
        return prefix
    body = prefix[:-1] if prefix.endswith("/") else prefix
    check_key(body)
    return prefix


def _number(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return value


def _filename(filename: str) -> str:
    if "/" in filename:
        raise UnsafeKey(f"filename must not contain '/': {filename!r}")
    return check_key(filename)


def character_key(slug: str, version: int, stage: str, filename: str) -> str:
    """``characters/<slug>/v<version>/<stage>/<filename>``; slug and stage must already be safe slugs."""
    base = _checked_slug_key("characters", slug, f"v{_number(version, 'version')}", stage)
    return check_key(f"{base}/{_filename(filename)}")


def character_prefix(slug: str, version: int | None = None) -> str:
    """``characters/<slug>/`` or ``characters/<slug>/v<version>/`` (for ``list`` and ``next_version``)."""
    base = _checked_slug_key("characters", slug)
    return f"{base}/" if version is None else f"{base}/v{_number(version, 'version')}/"


def production_key(slug: str, scene: int, shot: int, take: int, filename: str) -> str:
    """``productions/<slug>/scene-NN/shot-NN/take-NN/<filename>`` (numbers zero-padded to 2 digits)."""
    base = _checked_slug_key(
        "productions",
        slug,
        f"scene-{_number(scene, 'scene'):02d}",
        f"shot-{_number(shot, 'shot'):02d}",
        f"take-{_number(take, 'take'):02d}",
    )
    return check_key(f"{base}/{_filename(filename)}")


def production_prefix(slug: str, version: int | None = None) -> str:
    """``productions/<slug>/`` or ``productions/<slug>/v<version>/`` (a production version: its manifest)."""
    base = _checked_slug_key("productions", slug)
    return f"{base}/" if version is None else f"{base}/v{_number(version, 'version')}/"


def production_part_prefix(slug: str, part: str) -> str:
    """``productions/<slug>/<part>/``: what belongs to the production, not to one shot (script, music, assembly)."""
    return _checked_slug_key("productions", slug, part) + "/"


def production_shot_prefix(slug: str, scene: int, shot: int, take: int | None = None) -> str:
    """``productions/<slug>/scene-NN/shot-NN/`` or ``.../take-NN/`` (one take of one shot)."""
    base = _checked_slug_key(
        "productions", slug, f"scene-{_number(scene, 'scene'):02d}", f"shot-{_number(shot, 'shot'):02d}"
    )
    return f"{base}/" if take is None else f"{base}/take-{_number(take, 'take'):02d}/"


def character_stage_prefix(slug: str, version: int, stage: str) -> str:
    """``characters/<slug>/v<version>/<stage>/``: where a stage of one character version stores its outputs."""
    number = _number(version, "version")
    return _checked_slug_key("characters", slug, f"v{number}", stage) + "/"


_SHA256 = re.compile(r"[0-9a-f]{64}")
_SUFFIX = re.compile(r"(\.[A-Za-z0-9]{1,16})?")


def content_key(prefix: str, sha256: str, suffix: str = "") -> str:
    """``<prefix><sha256[:16]><suffix>``: an artifact named by its content under a folder-like prefix.

    ``suffix`` is the file extension (``.png``; lower-cased); 16 hex digits make collisions within one folder
    vanishingly unlikely, and the store refuses other content under an existing key anyway.
    """
    if not _SHA256.fullmatch(sha256):
        raise UnsafeKey(f"not a sha256 hex digest: {sha256[:80]!r}")
    if not _SUFFIX.fullmatch(suffix):
        raise UnsafeKey(f"file extension {suffix[:40]!r} is not '.' plus letters and digits")
    folder = check_prefix(prefix).rstrip("/")
    name = f"{sha256[:16]}{suffix.lower()}"
    return check_key(f"{folder}/{name}" if folder else name)


def run_key(flow_run_id: str, filename: str) -> str:
    """``runs/<flow_run_id>/<filename>``."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}", flow_run_id):
        raise UnsafeKey(f"flow run id must be letters, digits, '-' or '_': {flow_run_id[:80]!r}")
    return check_key(f"runs/{flow_run_id}/{_filename(filename)}")


def template_prefix(template: str, part: str) -> str:
    """``templates/<template>/<part>/``: the inputs and outputs of ``reelforge run template`` for one template."""
    return _checked_slug_key("templates", template, part) + "/"


def _checked_slug_key(*parts: str) -> str:
    for part in parts[1:]:
        if not re.fullmatch(r"[A-Za-z0-9_-]+", part):
            raise UnsafeKey(f"key part {part[:80]!r} is not a safe slug (use safe_slug())")
    return check_key("/".join(parts))


def version_number(segment: str, marker: str = "v") -> int | None:
    """``v12`` -> 12, ``take-03`` (marker ``take-``) -> 3; anything else -> None."""
    match = re.fullmatch(re.escape(marker) + r"(\d{1,9})", segment)
    return int(match.group(1)) if match else None


def version_prefix(prefix: str, version: int, marker: str = "v") -> str:
    """``<prefix>/<marker><version>/``: the folder of one version (``prefix`` with or without its ``/``)."""
    folder = check_prefix(prefix).rstrip("/")
    segment = f"{marker}{_number(version, 'version')}"
    if version_number(segment, marker) is None:
        raise UnsafeKey(f"version marker {marker!r} does not make a version segment")
    return check_key(f"{folder}/{segment}" if folder else segment) + "/"


def name_claim_key(slug: str) -> str:
    """``names/<slug>.json``: the claim on a character name (one owner across every batch)."""
    return check_key(_checked_slug_key("names", slug) + ".json")


def batch_key(batch_id: str, filename: str) -> str:
    """``batches/<batch id>/<filename>`` (the summary, the plan, the group record of one batch run)."""
    return check_key(f"{_checked_slug_key('batches', batch_id)}/{_filename(filename)}")


def group_key(group_slug: str, batch_id: str) -> str:
    """``groups/<group slug>/<batch id>.json``: a group's record as one batch made it."""
    return check_key(_checked_slug_key("groups", group_slug, batch_id) + ".json")
