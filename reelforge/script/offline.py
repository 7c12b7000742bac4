"""The offline writer: a script from a brief with no LLM, deterministic for the brief and its seed.

It lays out a short film's beats (an establishing shot, the cast's entrance, exchanges of lines, a chained
continuation, a closing shot ending on a described last frame) over as many scenes as the target needs, each
scene within one generated segment of the video model where that fits, durations in tenths of a second that
sum exactly to the target. Lines are short enough for the scene's speaking rate; a brief without a cast gets a
narrator. Good enough for a timed animatic; the LLM writer is the one for real scripts.
"""

from __future__ import annotations

import hashlib
import math
import random
import re

from reelforge.script.models import NARRATOR, Brief, CameraMove, DialogueLine, Scene, Script, ScriptDraft, ShotType
from reelforge.script.validate import check_brief, speech_seconds, validate_script
from reelforge.settings import ScriptLimits

OFFLINE_WRITER = "offline"

_MOODS = (
    "warm and hopeful, soft piano and strings",
    "upbeat pop, bright synths and claps",
    "dreamy ambient, slow pads",
    "tense and pulsing, low drums",
    "playful lo-fi, mellow beat",
    "epic cinematic, swelling brass",
)

_LINES: dict[str, tuple[str, ...]] = {
    "open": ("This is where it begins.", "Here we are.", "Look at this place.", "It all starts today."),
    "meet": ("Are you ready?", "You made it!", "Right on time.", "I knew you would come.", "Let's do this."),
    "talk": (
        "We only get one chance.", "Trust me on this.", "What if it works?", "Stay close to me.",
        "I have an idea.", "Then let's try it.", "Do you hear that?", "We can do it together.",
    ),
    "peak": ("Now!", "Go, go, go!", "Look at that!", "We did it!", "Hold on!"),
    "close": ("Same time tomorrow?", "That was only the start.", "See you soon.", "What a day."),
}

_BEATS: dict[str, tuple[tuple[ShotType, ...], tuple[CameraMove, ...], str]] = {
    "open": (("establishing", "wide", "aerial"), ("dolly_in", "crane_down", "pan_right"), "Establishing view"),
    "meet": (("medium", "full", "two_shot"), ("tracking", "truck_left", "static"), "The cast appears"),
    "talk": (("close_up", "over_the_shoulder", "medium_close_up", "two_shot"), ("static", "dolly_in", "handheld"),
             "An exchange"),
    "chain": (("medium", "full"), ("tracking", "orbit"), "The same moment goes on"),
    "peak": (("wide", "medium", "point_of_view"), ("handheld", "zoom_in", "orbit"), "The turning point"),
    "close": (("wide", "medium"), ("dolly_out", "crane_up"), "Closing shot"),
}

_MOTION: dict[str, str] = {
    "open": "the scene comes alive slowly, light shifting, background movement",
    "meet": "{who} walk into frame and turn toward each other",
    "talk": "{who} talk, small gestures and expressions, natural head movement",
    "chain": "the movement carries on without a cut, {who} keep going",
    "peak": "{who} react with a burst of energy, fast movement",
    "close": "{who} settle, the camera pulls back, motion comes to rest",
}


def _topic(text: str) -> str:
    first = re.split(r"(?<=[.!?。！？])\s+|\n", text.strip(), maxsplit=1)[0].rstrip(".!?。！？ ")
    return first or text.strip()


def _title(topic: str) -> str:
    words = topic.split()
    title = " ".join(words[:6]) + ("..." if len(words) > 6 else "")
    return title[:1].upper() + title[1:]


def _scene_count(target: float, limits: ScriptLimits) -> int:
    fits_one_segment = min(limits.segment_s, limits.max_scene_s)
    count = math.ceil(target / (0.95 * fits_one_segment))
    count = max(count, math.ceil(target / limits.max_scene_s), 1)
    count = min(count, max(1, math.floor(target / limits.min_scene_s)), limits.max_scenes)
    return count


def _durations(target: float, count: int, limits: ScriptLimits, rng: random.Random) -> list[float]:
    """``count`` durations in tenths of a second summing exactly to ``target`` (rounded to a tenth)."""
    total = round(target * 10)
    low = math.ceil(limits.min_scene_s * 10 - 1e-9)
    one_segment = math.floor(min(limits.segment_s, limits.max_scene_s) * 10 + 1e-9)
    high = one_segment if one_segment * count >= total else math.floor(limits.max_scene_s * 10 + 1e-9)
    weights = [rng.uniform(0.8, 1.2) for _ in range(count)]
    tenths = [min(high, max(low, round(total * w / sum(weights)))) for w in weights]
    order = list(range(count))
    while sum(tenths) != total:
        step = 1 if sum(tenths) < total else -1
        rng.shuffle(order)
        movable = [i for i in order if low <= tenths[i] + step <= high]
        if not movable:
            break
        tenths[movable[0]] += step
    return [t / 10 for t in tenths]


def _beats(count: int) -> list[str]:
    if count == 1:
        return ["close"]
    if count == 2:
        return ["open", "close"]
    middle = ["meet"] + ["talk", "peak"] * count
    beats = ["open", *middle[: count - 2], "close"]
    if count >= 4:
        beats[2] = "chain"  # continues the entrance without a cut
    return beats


def _line(rng: random.Random, beat: str, seconds: float, limits: ScriptLimits) -> str | None:
    pool = [line for line in _LINES["talk" if beat == "chain" else beat]
            if speech_seconds(line, limits.words_per_second) <= 0.8 * seconds]
    return rng.choice(pool) if pool else None


class OfflineWriter:
    """Writes scripts with no LLM: the default when ``REELFORGE_LLM_BASE_URL`` is unset."""

    name = OFFLINE_WRITER

    async def write(self, brief: Brief, limits: ScriptLimits) -> Script:
        """The same as ``compose`` (the ``ScriptWriter`` protocol)."""
        return self.compose(brief, limits)

    def compose(self, brief: Brief, limits: ScriptLimits) -> Script:
        """A valid script for ``brief``; the same brief (seed included) gives the same script."""
        check_brief(brief, limits)
        key = "\x1f".join([brief.text, repr(brief.target_duration_s), *brief.characters, brief.style, str(brief.seed)])
        rng = random.Random(hashlib.sha256(key.encode("utf-8")).digest())
        topic = _topic(brief.text)
        count = _scene_count(brief.target_duration_s, limits)
        durations = _durations(brief.target_duration_s, count, limits, rng)
        beats = _beats(count)
        cast = list(brief.characters)
        mood = brief.mood or rng.choice(_MOODS)
        scenes: list[Scene] = []
        speaker_turn = rng.randrange(len(cast)) if cast else 0
        previous_on_screen: list[str] = []
        for number, (beat, seconds) in enumerate(zip(beats, durations, strict=True), start=1):
            shots, cameras, label = _BEATS[beat]
            if beat == "chain":
                on_screen = previous_on_screen
            elif beat == "open" or not cast:
                on_screen = []
            elif beat == "talk" and len(cast) > 2:
                on_screen = [cast[(speaker_turn + k) % len(cast)] for k in range(2)]
            else:
                on_screen = cast
            pool = on_screen if cast else [NARRATOR]
            lines = 0 if beat == "chain" or not pool else (2 if beat == "talk" and seconds >= 3 else 1)
            if not cast and beat == "peak":
                lines = 0
            dialogue: list[DialogueLine] = []
            budget = seconds
            for _ in range(lines):
                text = _line(rng, beat, budget, limits)
                if text is None:
                    break
                dialogue.append(DialogueLine(speaker=pool[speaker_turn % len(pool)], text=text))
                budget -= speech_seconds(text, limits.words_per_second)
                speaker_turn += 1
            who = " and ".join(on_screen) if on_screen else "the people in the scene"
            place = f"{label}: {topic}"
            if on_screen:
                place += f", with {' and '.join(on_screen)}"
            end_frame = None
            if beat == "close":
                end_frame = (
                    f"{' and '.join(on_screen) + ' ' if on_screen else ''}still in a calm closing pose, the setting of "
                    f"'{topic}' behind, {brief.style}, room for the title"
                )
            scenes.append(
                Scene(
                    number=number,
                    description=f"{place}. {brief.style.capitalize()}.",
                    shot_type=rng.choice(shots),
                    camera=rng.choice(cameras),
                    motion_prompt=_MOTION[beat].format(who=who),
                    characters=list(on_screen),
                    dialogue=dialogue,
                    duration_s=seconds,
                    end_frame=end_frame,
                    audio_mood=f"{mood}, building to a peak" if beat == "peak" else None,
                    continues_previous=beat == "chain",
                )
            )
            previous_on_screen = on_screen
        draft = ScriptDraft(title=_title(topic), audio_mood=mood, scenes=scenes)
        return validate_script(brief.script(draft, writer=OFFLINE_WRITER), limits, source="offline writer")
