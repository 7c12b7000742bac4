"""What the LLM writer sends: the answer schema for a brief and the chat messages. Pure functions.

``draft_schema`` is ``ScriptDraft``'s JSON schema made fit for strict structured output (every property
required, no defaults, no additional properties) and narrowed to the brief: speakers and on-screen
characters are enums of the cast (or ``narrator`` alone). The same schema is written into the system message,
so a server in JSON mode (no schema support) still sees it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from reelforge.script.errors import ScriptProblem
from reelforge.script.models import NARRATOR, Brief, ScriptDraft
from reelforge.settings import ScriptLimits

SCHEMA_NAME = "reelforge_script"

_DROPPED = {"title", "default"}


def _strict(node: Any) -> Any:
    if isinstance(node, dict):
        out = {key: _strict(value) for key, value in node.items() if key not in _DROPPED}
        if out.get("type") == "object" and "properties" in out:
            out["required"] = list(out["properties"])
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_strict(item) for item in node]
    return node


def draft_schema(brief: Brief) -> dict[str, Any]:
    """The JSON schema an answer for ``brief`` must follow (strict-mode compatible)."""
    schema: dict[str, Any] = _strict(ScriptDraft.model_json_schema())
    defs = schema["$defs"]
    speakers = list(brief.characters) or [NARRATOR]
    defs["DialogueLine"]["properties"]["speaker"]["enum"] = speakers
    characters = defs["Scene"]["properties"]["characters"]
    if brief.characters:
        characters["items"]["enum"] = list(brief.characters)
    else:
        characters["maxItems"] = 0
    return schema


def response_format(brief: Brief, mode: str) -> dict[str, Any]:
    """The ``response_format`` of a chat-completions request: ``json_schema`` (strict) or ``json_object``."""
    if mode == "json_schema":
        spec = {"name": SCHEMA_NAME, "strict": True, "schema": draft_schema(brief)}
        return {"type": "json_schema", "json_schema": spec}
    return {"type": "json_object"}


def _cast_rule(cast: Sequence[str]) -> str:
    if cast:
        names = ", ".join(cast)
        return (
            f"The cast is exactly: {names}. Only they speak and appear (use their names as written); give each "
            "of them some lines. List in a scene's characters the cast members on screen."
        )
    return f"There is no cast: characters stay empty, and any line is spoken by {NARRATOR!r} (a voice-over)."


def system_message(brief: Brief, limits: ScriptLimits) -> dict[str, str]:
    """The writer's instructions: the rules every answer must keep, and the JSON schema."""
    rules = [
        "You write scripts for short generated videos. Answer with one JSON object and nothing else, following "
        "this JSON schema:",
        json.dumps(draft_schema(brief), ensure_ascii=False),
        "Rules:",
        f"- The scenes' duration_s values must sum to {brief.target_duration_s:g} seconds (within "
        f"{limits.duration_tolerance_s:g} s). Add them up before answering.",
        f"- Each scene lasts {limits.min_scene_s:g} to {limits.max_scene_s:.2f} seconds; scenes up to "
        f"{limits.segment_s:.2f} s are best (one generated segment). Number scenes 1, 2, 3, ... in order.",
        "- Every scene has a concrete description (place, people, action, light) and a motion_prompt (what moves).",
        f"- {_cast_rule(brief.characters)}",
        f"- Dialogue must fit its scene: at most {limits.words_per_second:g} words per second of the scene.",
        "- continues_previous: true when a scene goes on from the previous scene's last frame without a cut "
        "(never for scene 1). end_frame: null, or a description of the exact last frame the scene must reach.",
        "- audio_mood: the music's mood; a scene's audio_mood is null unless it changes there.",
    ]
    return {"role": "system", "content": "\n".join(rules)}


def user_message(brief: Brief) -> dict[str, str]:
    """The brief, as the user's request."""
    lines = [
        f"Brief: {brief.text}",
        f"Target duration: {brief.target_duration_s:g} seconds.",
        f"Visual style: {brief.style}.",
        f"Cast: {', '.join(brief.characters) if brief.characters else 'none (narrator only)'}.",
    ]
    if brief.mood:
        lines.append(f"Audio mood: {brief.mood}.")
    lines.append("Write the script as JSON.")
    return {"role": "user", "content": "\n".join(lines)}


def messages(brief: Brief, limits: ScriptLimits) -> list[dict[str, str]]:
    """The first request's messages."""
    return [system_message(brief, limits), user_message(brief)]


def feedback_message(problems: Sequence[ScriptProblem]) -> dict[str, str]:
    """The message that sends an invalid answer's problems back, asking for the whole script again."""
    listing = "\n".join(f"- {problem}" for problem in problems)
    return {
        "role": "user",
        "content": "That answer cannot be used. Fix every problem below and answer again with the whole script "
        f"as one JSON object following the schema:\n{listing}",
    }
