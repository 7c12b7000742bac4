from __future__ import annotations

import pytest

from reelforge.characters.spec import slugify
from reelforge.storage.base import guess_media
from reelforge.storage.errors import UnsafeKey
from reelforge.storage.keys import (
    character_key,
    character_prefix,
    check_key,
    production_key,
    run_key,
    safe_slug,
    version_number,
)
from reelforge.storage.lineage import JobFacts, Manifest, ParentRef, StageRecord, StoredOutput, cost_for


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("", "empty key"),
        ("../etc/passwd", "'..' segment"),
        ("a/../../b", "'..' segment"),
        ("a/..", "'..' segment"),
        ("./a", "'.' segment"),
        ("/etc/passwd", "absolute path"),
        ("C:/Windows/x", "absolute path"),
        ("a\\..\\b", "backslash"),
        ("a/b\x00.png", "control character"),
        ("a/b\n.png", "control character"),
        ("a/\x7f", "control character"),
        ("a//b", "empty segment"),
        ("a/b/", "empty segment"),
        ("a/.hidden", "hidden segment"),
        ("a/.b.png.tmp", "hidden segment"),
        ("a/" + "x" * 1030, "too long"),
        ("a/" + "é" * 520, "too long"),  # 1040 bytes in UTF-8, 522 characters
    ],
)
def test_check_key_refuses_path_tricks_and_names_them(key: str, problem: str) -> None:
    with pytest.raises(UnsafeKey, match=problem):
        check_key(key)


@pytest.mark.parametrize("key", ["a", "characters/mina-park/v1/base/0123abcd.png", "a/b c/ü.txt", "x" * 1024])
def test_check_key_accepts_ordinary_keys(key: str) -> None:
    assert check_key(key) == key


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("Mina Park", "mina-park"),
        ("..", "item"),
        ("../../etc/passwd", "etc-passwd"),
        ("/etc/passwd", "etc-passwd"),
        ("a\x00b\nc", "a-b-c"),
        ("", "item"),
        ("   ", "item"),
        ("Zoë Ø Straße", "zoe-strae"),
        ("東京", "item"),
        ("--Hello__World--", "hello-world"),
    ],
)
def test_safe_slug(name: str, slug: str) -> None:
    assert safe_slug(name) == slug


def test_safe_slug_is_bounded_and_never_ends_with_a_dash() -> None:
    slug = safe_slug("ab-" * 100)
    assert len(slug) <= 64 and not slug.endswith("-") and slug.startswith("ab-ab")
    assert safe_slug("x" * 500) == "x" * 64
    assert safe_slug("...", fallback="character") == "character"
    assert slugify("Mina Park") == "mina-park"  # character names: reelforge.characters.names (test_names.py)
    assert len(slugify("y" * 100)) == 48


def test_key_builders() -> None:
    assert character_key("mina-park", 3, "base", "0123.png") == "characters/mina-park/v3/base/0123.png"
    assert character_prefix("mina-park") == "characters/mina-park/"
    assert character_prefix("mina-park", 2) == "characters/mina-park/v2/"
    assert production_key("ad", 1, 2, 3, "clip.mp4") == "productions/ad/scene-01/shot-02/take-03/clip.mp4"
    assert run_key("5f1c-9a_2", "manifest.json") == "runs/5f1c-9a_2/manifest.json"


@pytest.mark.parametrize(
    "call",
    [
        lambda: character_key("../x", 1, "base", "a.png"),
        lambda: character_key("mina", 1, "base", "../a.png"),
        lambda: character_key("mina", 1, "a/b", "a.png"),
        lambda: character_key("mina", 1, "base", "sub/a.png"),
        lambda: production_key("ad", 1, 1, 1, ".hidden"),
        lambda: run_key("../other", "manifest.json"),
        lambda: run_key("", "manifest.json"),
    ],
)
def test_key_builders_refuse_unsafe_parts(call: object) -> None:
    with pytest.raises(UnsafeKey):
        call()  # type: ignore[operator]


def test_key_builders_refuse_negative_numbers() -> None:
    with pytest.raises(ValueError, match="version"):
        character_key("mina", -1, "base", "a.png")
    with pytest.raises(ValueError, match="take"):
        production_key("ad", 1, 1, True, "a.mp4")  # type: ignore[arg-type]


def test_version_number() -> None:
    assert version_number("v12") == 12
    assert version_number("take-03", "take-") == 3
    assert version_number("v1x") is None and version_number("version") is None and version_number("take-") is None


@pytest.mark.parametrize(
    ("name", "media_type", "kind"),
    [
        ("a.png", "image/png", "image"),
        ("a.JPG", "image/jpeg", "image"),
        ("a.flac", "audio/flac", "audio"),
        ("a.opus", "audio/opus", "audio"),
        ("a.wav", "audio/wav", "audio"),
        ("a.mp4", "video/mp4", "video"),
        ("a.webm", "video/webm", "video"),
        ("a.safetensors", "application/octet-stream", "lora"),
        ("manifest.json", "application/json", "json"),
        ("notes.txt", "text/plain", "text"),
        ("blob", "application/octet-stream", "file"),
        ("a.zip", "application/zip", "file"),
    ],
)
def test_guess_media(name: str, media_type: str, kind: str) -> None:
    assert guess_media(name) == (media_type, kind)


def test_guess_media_kind_override() -> None:
    assert guess_media("weights.bin", "lora") == ("application/octet-stream", "lora")
    with pytest.raises(ValueError, match="unknown artifact kind"):
        guess_media("a.png", "picture")


def test_cost_and_records() -> None:
    assert cost_for(3600, 2.5) == 2.5
    assert cost_for(90, 1.2) == pytest.approx(0.03)
    assert cost_for(None, 9.0) == 0.0
    with pytest.raises(ValueError):
        cost_for(-1, 1.0)
    with pytest.raises(ValueError):
        cost_for(1, -1.0)
    from reelforge.storage.base import ArtifactRef

    common = {"size": 1, "media_type": "image/png", "kind": "image"}
    parent = ArtifactRef(key="a.png", uri="file:///x/a.png", sha256="a" * 64, **common)  # type: ignore[arg-type]
    child = ArtifactRef(key="b.png", uri="file:///x/b.png", sha256="b" * 64, **common)  # type: ignore[arg-type]
    job = JobFacts(prompt_id="p1", worker="http://gpu1:8188", gpu_seconds=36.0, cost=cost_for(36, 1.0))
    record = StageRecord(
        stage="portrait",
        version="t1",
        kind="gpu",
        job_id="mina-park-v1-base",
        cache_key="k",
        params={"seed": 7},
        inputs={"reference": ParentRef.of(parent)},
        outputs=[StoredOutput(**child.model_dump(), node_id="9")],
        job=job,
    )
    assert record.inputs["reference"] == ParentRef(sha256="a" * 64, key="a.png")
    assert record.refs == [child] and record.seed == 7
    manifest = Manifest(subject="mina-park", kind="character", stages=[record, record])
    again = Manifest.model_validate_json(manifest.model_dump_json())
    assert again == manifest
    assert again.total_gpu_seconds == 72.0 and again.total_cost == pytest.approx(0.02)
