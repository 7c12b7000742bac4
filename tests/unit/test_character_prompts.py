from __future__ import annotations

import pytest
from pydantic import ValidationError

from reelforge.characters.prompts import build_prompts
from reelforge.characters.spec import CharacterSpec, slugify


def test_prompts_are_deterministic_and_varied() -> None:
    spec = CharacterSpec(name="Mina Park", character_type="kpop_idol", age=22, gender="female", seed=7)
    first, again = build_prompts(spec, variations=12), build_prompts(spec, variations=12)
    assert first == again
    assert len(first.variations) == 12
    assert len({v.prompt for v in first.variations}) == 12
    assert all("full body visible" in v.prompt and "Mina Park" in v.prompt for v in first.variations)
    assert all(v.caption.startswith(first.trigger + ", ") for v in first.variations)
    other = build_prompts(spec.model_copy(update={"seed": 8}), variations=12)
    assert [v.prompt for v in other.variations] != [v.prompt for v in first.variations]


def test_family_follows_type_unless_given() -> None:
    assert CharacterSpec(name="Bolt", character_type="mascot").family == "stylized"
    assert CharacterSpec(name="Ana", character_type="influencer").family == "realistic"
    assert CharacterSpec(name="Ana", character_type="influencer", style="stylized").family == "stylized"


@pytest.mark.parametrize(
    ("name", "slug"),
    [("Mina Park", "mina-park"), ("../../etc/passwd", "etc-passwd-3754d6cb"), ("Zoë Ø", "zoe-o-a0c54886")],
)
def test_slugs_are_safe(name: str, slug: str) -> None:
    assert slugify(name) == slug


def test_bad_specs_name_the_field() -> None:
    with pytest.raises(ValidationError, match="character_type"):
        CharacterSpec(name="A", character_type="K-Pop Idol")
    with pytest.raises(ValidationError, match="name"):
        CharacterSpec(name="bad\x00name")
    with pytest.raises(ValidationError, match="age"):
        CharacterSpec(name="A", age=0)


def test_voice_and_sample_line_follow_the_spec() -> None:
    from reelforge.characters import CharacterSpec, build_prompts

    idol = build_prompts(CharacterSpec(name="Mina Park", character_type="kpop_idol", age=22, gender="female"))
    assert idol.voice.startswith("a woman in their 20s") and "youthful" in idol.voice
    assert idol.sample_line.startswith("Hi, I'm Mina Park.") and len(idol.sample_line.split()) < 20
    rapper = build_prompts(CharacterSpec(name="MC Flow", character_type="rapper", gender="male", age=31))
    assert rapper.voice.startswith("a man in their 30s") and rapper.voice != idol.voice
    other = build_prompts(CharacterSpec(name="Zed", character_type="chef"))
    assert other.voice.startswith("a person") and other.sample_line == "Hi, I'm Zed. Nice to meet you!"
