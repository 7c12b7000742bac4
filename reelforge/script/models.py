"""Typed briefs and scripts: what a video production is asked for, and the scene-by-scene plan it follows.

The models hold types and shapes only (``extra="forbid"``: a misspelt field in an edited file is an error);
what a value may be, given the video model and the cast, is decided by ``reelforge.script.validate`` against
the ``ScriptLimits`` passed in, which reports every problem at once. A ``Script`` handed out by a writer or by
``load_script`` has passed that validation.

``ScriptDraft`` is the part of a script a writer invents (title, mood, scenes); the brief supplies the rest
(target duration, style, cast), so an LLM is never asked to echo them back.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

NARRATOR = "narrator"
"""The only speaker a script may have when its brief names no characters (an off-screen voice)."""

SCRIPT_SCHEMA_VERSION: Literal[1] = 1

ShotType = Literal[
    "establishing", "wide", "full", "medium", "medium_close_up", "close_up", "extreme_close_up",
    "over_the_shoulder", "two_shot", "point_of_view", "insert", "aerial",
]
"""How much of the scene the frame holds (the keyframe prompt's framing)."""

CameraMove = Literal[
    "static", "pan_left", "pan_right", "tilt_up", "tilt_down", "dolly_in", "dolly_out", "truck_left",
    "truck_right", "tracking", "orbit", "crane_up", "crane_down", "zoom_in", "zoom_out", "handheld",
]
"""How the camera moves during the scene (joined into the image-to-video motion prompt)."""

SHOT_TYPES: tuple[str, ...] = ShotType.__args__  # type: ignore[attr-defined]
CAMERA_MOVES: tuple[str, ...] = CameraMove.__args__  # type: ignore[attr-defined]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DialogueLine(_Model):
    """One spoken line: who says it, and what."""

    speaker: str = Field(description="a character of the cast, or 'narrator' when the cast is empty")
    text: str = Field(description="the words spoken, as they are to be voiced and subtitled")


class Scene(_Model):
    """One scene: one keyframe, one animation (one segment, or chained segments), its lines and mood."""

    number: int = Field(description="1, 2, 3, ... in order")
    description: str = Field(description="what the scene shows: place, people, action, light (the keyframe prompt)")
    shot_type: ShotType = Field(description="the framing")
    camera: CameraMove = Field(description="the camera movement")
    motion_prompt: str = Field(description="what moves during the scene (the image-to-video prompt)")
    characters: list[str] = Field(
        default_factory=list, description="the cast members on screen (their identity goes into the keyframe)"
    )
    dialogue: list[DialogueLine] = Field(default_factory=list, description="the lines spoken during the scene")
    duration_s: float = Field(description="seconds on screen")
    end_frame: str | None = Field(
        default=None,
        description="null: the animation ends where it goes; a description: the last frame it must reach "
        "(first/last-frame mode)",
    )
    audio_mood: str | None = Field(default=None, description="this scene's mood when it differs from the script's")
    continues_previous: bool = Field(
        default=False, description="true: the animation starts from the previous scene's last frame (chained)"
    )

    @property
    def first_last_frame(self) -> bool:
        """Whether the script asks for a described last frame (first/last-frame mode)."""
        return self.end_frame is not None

    @property
    def speakers(self) -> list[str]:
        """Speakers of this scene's lines, each once, in order of their first line."""
        return list(dict.fromkeys(line.speaker for line in self.dialogue))


class ScriptDraft(_Model):
    """What a writer invents: the title, the overall audio mood and the scenes (the LLM's answer schema)."""

    title: str = Field(description="the video's title")
    audio_mood: str = Field(description="the music's mood for the whole video, e.g. 'warm lo-fi, hopeful'")
    scenes: list[Scene] = Field(description="the scenes, in order")


class Script(ScriptDraft):
    """A whole script: the draft plus what the brief fixed (target duration, style, cast) and who wrote it.

    Stored as JSON (``dump_script``/``save_script``) in the production's folder, where a person may edit it;
    ``load_script`` validates an edited copy and names each scene and field that no longer fits.
    """

    schema_version: Literal[1] = SCRIPT_SCHEMA_VERSION
    target_duration_s: float = Field(description="the video's duration the scenes sum to")
    style: str = Field(description="the visual style every keyframe shares")
    characters: list[str] = Field(default_factory=list, description="the cast: character names as written")
    writer: str | None = Field(default=None, description="who wrote it: 'offline', 'llm:<model>', 'edited'")

    @property
    def duration_s(self) -> float:
        """The scenes' durations summed."""
        return sum(scene.duration_s for scene in self.scenes)

    def draft(self) -> ScriptDraft:
        """The writer's part of this script."""
        return ScriptDraft(title=self.title, audio_mood=self.audio_mood, scenes=self.scenes)


class Brief(BaseModel):
    """What a video is asked to be: a text, a target duration, the cast by name, a style, a mood, a seed.

    Field checks that need no configuration happen here (``ValidationError`` naming the field); those that
    need limits or the character records (``check_brief``) are made before any writer runs.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    text: str = Field(min_length=1, max_length=4000, description="what the video is about")
    target_duration_s: float = Field(gt=0, description="seconds the video lasts")
    characters: list[str] = Field(default_factory=list, description="the cast, by character name; empty: none")
    style: str = Field(default="cinematic", min_length=1, description="the visual style")
    mood: str | None = Field(default=None, description="the audio mood; unset: the writer chooses")
    seed: int = Field(default=0, ge=0, description="makes the offline writer (and a seeded LLM) repeatable")

    def script(self, draft: ScriptDraft, *, writer: str | None = None) -> Script:
        """A script made of this brief's fixed facts and a writer's draft (not yet validated)."""
        return Script(
            title=draft.title,
            audio_mood=self.mood if self.mood else draft.audio_mood,
            scenes=draft.scenes,
            target_duration_s=self.target_duration_s,
            style=self.style,
            characters=list(self.characters),
            writer=writer,
        )
