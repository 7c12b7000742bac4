"""Bad input of a video production, found before any GPU time: each names the field, scene or character.

    InputRejected (reelforge.errors: ``reelforge run`` exits 2)
    └── VideoInputError
        ├── DurationRejected       --duration 0, or over REELFORGE_SCRIPT_MAX_DURATION_S
        ├── UnknownCharacter       a --characters name with no character record in the store
        ├── CharacterIncomplete    a character without what a keyframe needs (its LoRA, its base image)
        ├── MusicRejected          --music is not a readable audio file
        └── ScriptRejected         the script (written, or --script FILE) does not validate: its problems
"""

from __future__ import annotations

from reelforge.errors import InputRejected

__all__ = [
    "CastMismatch",
    "CharacterIncomplete",
    "DurationRejected",
    "MusicRejected",
    "PoseRejected",
    "ScriptRejected",
    "UnknownCharacter",
    "VideoInputError",
]


class VideoInputError(InputRejected):
    """A production's input is wrong; ``field`` names the parameter (``duration``, ``characters``, ...)."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


class DurationRejected(VideoInputError):
    pass


class UnknownCharacter(VideoInputError):
    def __init__(self, message: str, *, name: str) -> None:
        super().__init__(message, field="characters")
        self.name = name


class CharacterIncomplete(VideoInputError):
    def __init__(self, message: str, *, name: str, missing: str) -> None:
        super().__init__(message, field="characters")
        self.name = name
        self.missing = missing


class MusicRejected(VideoInputError):
    pass


class CastMismatch(VideoInputError):
    """``--characters`` and the ``--script``'s cast were both given and differ."""

    def __init__(self, message: str, *, given: list[str], script: list[str]) -> None:
        super().__init__(message, field="characters")
        self.given = given
        self.script = script


class PoseRejected(VideoInputError):
    pass


class ScriptRejected(VideoInputError):
    def __init__(self, message: str, *, problems: list[str]) -> None:
        super().__init__(message, field="script")
        self.problems = problems
