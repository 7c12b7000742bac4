"""Prompts for one character: base, variations with training captions, test scenes, a voice and a sample line.

Deterministic for a given spec (name, type, seed): the same spec always yields the same prompts, so jobs
built from them are cacheable by content.
"""

from __future__ import annotations

import random

from pydantic import BaseModel

from reelforge.characters.spec import CharacterSpec

TYPE_LOOKS: dict[str, str] = {
    "kpop_idol": "K-pop idol, stage-ready styling, polished makeup, trendy hair",
    "fitness_athlete": "fitness athlete, athletic build, sportswear",
    "influencer": "lifestyle influencer, fashionable casual outfit, natural makeup",
    "rapper": "hip-hop artist, streetwear, confident attitude, jewelry",
    "testimonial": "friendly everyday person, approachable, business casual",
    "mascot": "brand mascot character, bold shapes, expressive face",
    "cartoon": "cartoon character, clean line art, vibrant flat colours",
}
TYPE_VOICES: dict[str, str] = {
    "kpop_idol": "bright, youthful and energetic, clear articulation, a smile in the voice",
    "fitness_athlete": "upbeat and motivating, strong projection, steady pace",
    "influencer": "warm and conversational, friendly, relaxed pace",
    "rapper": "low and confident, rhythmic delivery, slight rasp",
    "testimonial": "sincere and calm, natural everyday tone",
    "mascot": "playful and bouncy, exaggerated expression, higher pitch",
    "cartoon": "animated and expressive, quick pace, playful",
}
TYPE_LINES: dict[str, str] = {
    "kpop_idol": "I can't wait to see you at the next show!",
    "fitness_athlete": "Let's get moving, one more rep together!",
    "influencer": "Come along, I'll show you my favourite spots today.",
    "rapper": "New track's dropping soon, you're gonna love it.",
    "testimonial": "I tried it for a month, and honestly, it changed my routine.",
    "mascot": "Hooray, you're here! Let's have some fun!",
    "cartoon": "Whoa, did you see that? Let's go on an adventure!",
}
POSES = (
    "standing, arms relaxed", "walking towards the camera", "sitting on a stool", "leaning against a wall",
    "hands on hips", "arms crossed", "mid-stride turning back", "crouching", "waving", "looking over shoulder",
)
EXPRESSIONS = (
    "warm smile", "neutral expression", "laughing", "serious look", "surprised", "confident smirk",
    "thoughtful", "joyful", "calm", "playful wink",
)
OUTFITS = (
    "signature outfit", "casual denim jacket", "formal suit", "sporty tracksuit", "winter coat and scarf",
    "summer dress or shirt", "stage costume", "hoodie and sneakers",
)
LIGHTING = (
    "soft studio lighting", "golden hour sunlight", "overcast daylight", "neon night lights",
    "rim light on dark background", "window light",
)
CONTEXTS = (
    "plain light-grey studio backdrop", "city street", "park", "cafe interior", "rooftop at dusk",
    "concert stage", "gym", "beach boardwalk",
)
TEST_SCENES = (
    "reading a book in a library", "riding a bicycle along a canal", "cooking in a bright kitchen",
    "standing in the rain with an umbrella", "on a mountain trail at sunrise", "at a desk in a modern office",
)
NEGATIVE = (
    "blurry, low quality, deformed, extra limbs, extra fingers, bad anatomy, watermark, text, logo, "
    "cropped, out of frame, multiple people"
)


class VariationPrompt(BaseModel):
    prompt: str
    caption: str  # training caption for the LoRA (trigger word first)


class CharacterPrompts(BaseModel):
    trigger: str  # the LoRA trigger word
    base: str
    negative: str
    variations: list[VariationPrompt]
    tests: list[str]
    voice: str = ""  # a voice description for voice design (gender, age, timbre, pace)
    sample_line: str = ""  # what the character says in its sample and intro clip


def describe(spec: CharacterSpec) -> str:
    """The identity part every prompt of this character shares."""
    parts = [spec.name]
    if spec.age is not None:
        parts.append(f"{spec.age} years old")
    if spec.gender is not None:
        parts.append({"female": "woman", "male": "man", "nonbinary": "person"}[spec.gender])
    parts.append(TYPE_LOOKS.get(spec.character_type, spec.character_type.replace("_", " ")))
    if spec.custom_prompt:
        parts.append(spec.custom_prompt)
    return ", ".join(parts)


def build_prompts(spec: CharacterSpec, *, variations: int = 20, tests: int = 4) -> CharacterPrompts:
    """Base, ``variations`` variation prompts (full body, varied pose/expression/outfit/light/place), tests."""
    rng = random.Random(f"{spec.slug}|{spec.character_type}|{spec.seed}")
    trigger = f"rf{spec.slug.replace('-', '')[:12]}"
    identity = describe(spec)
    style = "photorealistic portrait photo, 85mm" if spec.family == "realistic" else "stylized illustration"
    base = f"{identity}, front view, full body visible, {LIGHTING[0]}, {CONTEXTS[0]}, {style}"
    items: list[VariationPrompt] = []
    seen: set[tuple[str, ...]] = set()
    while len(items) < variations:
        combo = (rng.choice(POSES), rng.choice(EXPRESSIONS), rng.choice(OUTFITS), rng.choice(LIGHTING),
                 rng.choice(CONTEXTS))
        if combo in seen and len(seen) < 2000:
            continue
        seen.add(combo)
        pose, expression, outfit, light, place = combo
        items.append(
            VariationPrompt(
                prompt=f"{identity}, {pose}, {expression}, {outfit}, full body visible, {light}, {place}, {style}",
                caption=f"{trigger}, {pose}, {expression}, {outfit}, {light}, {place}",
            )
        )
    scenes = rng.sample(TEST_SCENES, k=min(tests, len(TEST_SCENES)))
    return CharacterPrompts(
        trigger=trigger,
        base=base,
        negative=NEGATIVE,
        variations=items,
        tests=[f"{trigger}, {identity}, {scene}, {style}" for scene in scenes],
        voice=voice_of(spec),
        sample_line=sample_line_of(spec),
    )


def voice_of(spec: CharacterSpec) -> str:
    """A voice description from the spec: who speaks (gender, age) and how (the type's delivery)."""
    who = {"female": "a woman", "male": "a man", "nonbinary": "a person"}.get(spec.gender or "", "a person")
    age = f"in their {spec.age // 10 * 10}s" if spec.age is not None and spec.age >= 20 else (
        "a teenager" if spec.age is not None and spec.age >= 13 else ""
    )
    traits = TYPE_VOICES.get(spec.character_type, "natural and clear, medium pace")
    return ", ".join(p for p in (f"{who} {age}".strip(), traits) if p)


def sample_line_of(spec: CharacterSpec) -> str:
    """The character introducing itself in one short line (a few seconds of speech)."""
    return f"Hi, I'm {spec.name}. {TYPE_LINES.get(spec.character_type, 'Nice to meet you!')}"
