"""Script and brief validation against the limits passed in: pure functions, every problem collected.

``script_problems`` and ``brief_problems`` return the list (empty = valid); ``validate_script`` and
``check_brief`` raise it as one ``ScriptValidationError`` / ``BriefError``. ``problems_from_pydantic`` turns a
pydantic ``ValidationError`` of a script into the same problems, so a malformed stored file, an LLM answer off
the schema and a scene too long all read alike: ``scene 3: duration_s: 0 s is shorter than the minimum 1 s``.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Collection, Sequence

from pydantic import ValidationError

from reelforge.script.errors import BriefError, ScriptProblem, ScriptValidationError
from reelforge.script.models import NARRATOR, Brief, Script
from reelforge.settings import ScriptLimits


def _s(value: float) -> str:
    """``5.0`` -> ``5``, ``5.0625`` -> ``5.06``: seconds as people read them."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


def speech_seconds(text: str, words_per_second: float) -> float:
    """Seconds a line takes to say at ``words_per_second``: words split on spaces; in scripts written without
    spaces (Chinese, Japanese) every two characters count as a word."""
    words = 0.0
    for token in text.split():
        dense = sum(1 for ch in token if _unspaced(ch))
        words += max(1.0 if any(ch.isalnum() for ch in token) else 0.0, dense / 2)
    return words / words_per_second


def _unspaced(ch: str) -> bool:
    name = unicodedata.name(ch, "")
    return name.startswith(("CJK UNIFIED", "HIRAGANA", "KATAKANA", "CJK COMPATIBILITY IDEOGRAPH"))


def _cast_problem(name: str, cast: Sequence[str]) -> str:
    if cast:
        return f"{name!r} is not in the cast ({', '.join(cast)})"
    return f"{name!r} is not in the cast, which is empty: the only speaker is {NARRATOR!r}"


def script_problems(script: Script, limits: ScriptLimits) -> list[ScriptProblem]:
    """Every problem of ``script`` against ``limits`` and its own cast, in scene order; empty = valid."""
    problems: list[ScriptProblem] = []

    def add(scene: int | None, field: str | None, message: str) -> None:
        problems.append(ScriptProblem(scene=scene, field=field, message=message))

    if not script.title.strip():
        add(None, "title", "is empty")
    if not script.audio_mood.strip():
        add(None, "audio_mood", "is empty")
    if not script.style.strip():
        add(None, "style", "is empty")
    problems += _duration_problems(script.target_duration_s, limits)
    cast = list(script.characters)
    if len(set(cast)) != len(cast):
        add(None, "characters", "names a character twice")
    if not script.scenes:
        add(None, "scenes", "there are no scenes")
    elif len(script.scenes) > limits.max_scenes:
        add(None, "scenes", f"{len(script.scenes)} scenes, more than the limit {limits.max_scenes}")
    for position, scene in enumerate(script.scenes, start=1):

        def at(field: str | None, message: str, position: int = position) -> None:
            add(position, field, message)

        if scene.number != position:
            at("number", f"is {scene.number}, expected {position} (scenes are numbered 1, 2, 3, ... in order)")
        if not scene.description.strip():
            at("description", "is empty: say what the scene shows")
        if not scene.motion_prompt.strip():
            at("motion_prompt", "is empty: say what moves")
        if not math.isfinite(scene.duration_s) or scene.duration_s <= 0:
            at("duration_s", f"{_s(scene.duration_s)} s: a scene must last more than 0 s")
        elif scene.duration_s < limits.min_scene_s:
            at("duration_s", f"{_s(scene.duration_s)} s is shorter than the minimum {_s(limits.min_scene_s)} s")
        elif scene.duration_s > limits.max_scene_s + 1e-9:
            at(
                "duration_s",
                f"{_s(scene.duration_s)} s is longer than the maximum {_s(limits.max_scene_s)} s "
                f"({limits.max_segments_per_scene} chained segments of {_s(limits.segment_s)} s): split the scene",
            )
        if scene.end_frame is not None and not scene.end_frame.strip():
            at("end_frame", "is empty: describe the last frame, or use null for a free ending")
        if scene.continues_previous and position == 1:
            at("continues_previous", "the first scene has no previous scene to continue")
        if len(set(scene.characters)) != len(scene.characters):
            at("characters", "names a character twice")
        for name in scene.characters:
            if name not in cast:
                at("characters", _cast_problem(name, cast))
        for index, line in enumerate(scene.dialogue, start=1):
            speakers_allowed = cast or [NARRATOR]
            if line.speaker not in speakers_allowed:
                at(f"dialogue[{index}].speaker", _cast_problem(line.speaker, cast))
            if not line.text.strip():
                at(f"dialogue[{index}].text", "is empty")
        needed = sum(speech_seconds(line.text, limits.words_per_second) for line in scene.dialogue)
        if math.isfinite(scene.duration_s) and scene.duration_s > 0 and needed > scene.duration_s + 1e-9:
            at(
                "dialogue",
                f"needs about {_s(needed)} s at {_s(limits.words_per_second)} words/s, more than the scene's "
                f"{_s(scene.duration_s)} s: shorten the lines or lengthen the scene",
            )
    total = script.duration_s
    if script.scenes and math.isfinite(total) and abs(total - script.target_duration_s) > limits.duration_tolerance_s:
        gap = script.target_duration_s - total
        add(
            None,
            "duration_s",
            f"the scenes sum to {_s(total)} s, the target is {_s(script.target_duration_s)} s "
            f"(within {_s(limits.duration_tolerance_s)} s): {'add' if gap > 0 else 'remove'} {_s(abs(gap))} s",
        )
    return problems


def _duration_problems(target: float, limits: ScriptLimits) -> list[ScriptProblem]:
    field = "target_duration_s"
    message = None
    if not math.isfinite(target) or target <= 0:
        message = f"{_s(target)} s: a video must last more than 0 s"
    elif target > limits.max_duration_s:
        message = f"{_s(target)} s is over the maximum {_s(limits.max_duration_s)} s"
    elif target < limits.min_scene_s - limits.duration_tolerance_s:
        message = f"{_s(target)} s is shorter than one scene ({_s(limits.min_scene_s)} s)"
    elif target > limits.max_scenes * limits.max_scene_s:
        message = f"{_s(target)} s needs more than {limits.max_scenes} scenes of at most {_s(limits.max_scene_s)} s"
    return [ScriptProblem(field=field, message=message)] if message else []


def validate_script(script: Script, limits: ScriptLimits, *, source: str | None = None) -> Script:
    """``script`` itself when it is valid; else ``ScriptValidationError`` with every problem."""
    problems = script_problems(script, limits)
    if problems:
        raise ScriptValidationError(problems, source=source)
    return script


def brief_problems(
    brief: Brief, limits: ScriptLimits, known_characters: Collection[str] | None = None
) -> list[ScriptProblem]:
    """What keeps ``brief`` from being written for: its duration against ``limits``, its cast (each name once,
    none called ``narrator``, each among ``known_characters`` when given: the character records' names)."""
    problems = _duration_problems(brief.target_duration_s, limits)
    seen: set[str] = set()
    for index, name in enumerate(brief.characters, start=1):
        field = f"characters[{index}]"
        if not name.strip():
            problems.append(ScriptProblem(field=field, message="is empty"))
        elif name in seen:
            problems.append(ScriptProblem(field=field, message=f"{name!r} is named twice"))
        elif name.casefold() == NARRATOR:
            problems.append(ScriptProblem(field=field, message=f"{NARRATOR!r} is the cast-less voice, not a character"))
        elif known_characters is not None and name not in known_characters:
            problems.append(ScriptProblem(field=field, message=f"{name!r}: no such character"))
        seen.add(name)
    return problems


def check_brief(brief: Brief, limits: ScriptLimits, known_characters: Collection[str] | None = None) -> Brief:
    """``brief`` itself when it can be written for; else ``BriefError`` with every problem."""
    problems = brief_problems(brief, limits, known_characters)
    if problems:
        raise BriefError(problems)
    return brief


def problems_from_pydantic(exc: ValidationError) -> list[ScriptProblem]:
    """A pydantic error of a ``Script``/``ScriptDraft`` as script problems: ``('scenes', 2, 'dialogue', 0,
    'speaker')`` becomes scene 3, field ``dialogue[1].speaker``; the input values are not repeated."""
    problems = []
    for error in exc.errors(include_url=False):
        loc = list(error["loc"])
        scene: int | None = None
        if len(loc) >= 2 and loc[0] == "scenes" and isinstance(loc[1], int):
            scene = loc[1] + 1
            loc = loc[2:]
        parts: list[str] = []
        for item in loc:
            if isinstance(item, int):
                parts[-1:] = [f"{parts[-1] if parts else ''}[{item + 1}]"]
            else:
                parts.append(str(item))
        message = error["msg"]
        if error["type"] == "literal_error":
            message = f"{message} (got {error.get('input')!r})"
        problems.append(ScriptProblem(scene=scene, field=".".join(parts) or None, message=message))
    return problems
