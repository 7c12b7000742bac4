"""Exceptions of the media tools (ffmpeg, probing, assembly).

::

    MediaError                 base; ``path`` names the input file, ``stderr`` holds ffmpeg's own output
    ├── FFmpegNotFound         no ffmpeg on PATH and no imageio-ffmpeg binary
    ├── FFmpegError            ffmpeg exited non-zero (``returncode``, ``ffmpeg_message``: its own error lines)
    ├── FFmpegTimeout          ffmpeg ran past its timeout and was killed (``timeout``)
    ├── MediaInputError        a supplied file or timeline is wrong; found before any long encode
    │   │                      (``path``, ``problem``: a short code such as ``"no_video"``)
    │   ├── MediaProbeError    missing, corrupt or truncated file; not media at all   (``unreadable``)
    │   ├── MissingStream      no video / no audio stream where one is needed         (``stream``)
    │   ├── SilentAudio        zero-length or silent audio                            (``duration_s``, ``peak_db``)
    │   ├── FpsMismatch        a clip's frame rate differs from the others / the target (``fps``, ``expected``)
    │   ├── MusicTooShort      music shorter than one beat                            (``duration_s``, ``beat_s``)
    │   ├── CueOutOfRange      a subtitle cue or dialogue line outside the video      (``index``, ``start_s``, ...)
    │   ├── FontUnavailable    the subtitle font is missing or cannot draw the text   (``font``, ``missing``)
    │   ├── TimelineInvalid    a timeline that cannot be built (in/out points, transitions too long)
    │   └── InvalidInputs      several of the above at once (``problems``)
    └── MediaCheckFailed       (reelforge.media.verify) a produced file is not what it should be (``problems``)

All are permanent for retry purposes: the same inputs fail the same way (a timeout with the same limit too).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "CueOutOfRange",
    "FFmpegError",
    "FFmpegNotFound",
    "FFmpegTimeout",
    "FontUnavailable",
    "FpsMismatch",
    "InvalidInputs",
    "MediaError",
    "MediaInputError",
    "MissingStream",
    "MusicTooShort",
    "SilentAudio",
    "TimelineInvalid",
]


class MediaError(Exception):
    """A media tool failed; ``path`` names the input file when one is known."""

    def __init__(self, message: str, *, path: Path | str | None = None, stderr: str = "") -> None:
        self.message = message
        self.path = str(path) if path is not None else None
        self.stderr = stderr
        super().__init__(self._render())

    def _render(self) -> str:
        return f"{self.message} (input {self.path})" if self.path else self.message


class FFmpegNotFound(MediaError):
    """No ffmpeg binary could be located."""


class FFmpegError(MediaError):
    """ffmpeg exited with an error; the message carries the tail of its stderr.

    ``ffmpeg_message`` is ffmpeg's own error text (the lines of its log that say what failed), without the
    banner and progress noise.
    """

    def __init__(
        self,
        message: str,
        *,
        returncode: int | None = None,
        stderr: str = "",
        path: Path | str | None = None,
        ffmpeg_message: str = "",
    ) -> None:
        self.returncode = returncode
        self.ffmpeg_message = ffmpeg_message
        super().__init__(message, path=path, stderr=stderr)


class FFmpegTimeout(MediaError):
    """ffmpeg did not finish within its timeout; the process was killed."""

    def __init__(self, message: str, *, timeout: float, stderr: str = "", path: Path | str | None = None) -> None:
        self.timeout = timeout
        super().__init__(message, path=path, stderr=stderr)


class MediaInputError(MediaError):
    """A supplied file (or the timeline itself) is wrong; ``str()`` reads ``<file>: <what is wrong>``."""

    problem = "invalid"

    def __init__(self, message: str, *, path: Path | str | None = None, stderr: str = "") -> None:
        super().__init__(message, path=path, stderr=stderr)

    def _render(self) -> str:
        if self.path and not self.message.startswith(self.path):
            return f"{self.path}: {self.message}"
        return self.message


class MediaProbeError(MediaInputError, ValueError):
    """The file is missing, or ffmpeg/PyAV cannot read it as media (corrupt, truncated, not media)."""

    problem = "unreadable"


class MissingStream(MediaInputError):
    """The file has no ``stream`` ("video" or "audio") where the timeline needs one."""

    problem = "missing_stream"

    def __init__(self, message: str, *, path: Path | str | None = None, stream: str) -> None:
        self.stream = stream
        super().__init__(message, path=path)


class SilentAudio(MediaInputError):
    """Audio that lasts no time or holds only silence (``peak_db`` is its loudest sample, dBFS)."""

    problem = "silent"

    def __init__(
        self, message: str, *, path: Path | str | None = None, duration_s: float = 0.0, peak_db: float | None = None
    ) -> None:
        self.duration_s = duration_s
        self.peak_db = peak_db
        super().__init__(message, path=path)


class FpsMismatch(MediaInputError):
    """A clip's frame rate is not the one the timeline is built at."""

    problem = "fps_mismatch"

    def __init__(self, message: str, *, path: Path | str | None = None, fps: float, expected: float) -> None:
        self.fps = fps
        self.expected = expected
        super().__init__(message, path=path)


class MusicTooShort(MediaInputError):
    """The music is shorter than one beat of its own tempo (or than a beat at the slowest tempo we detect)."""

    problem = "music_too_short"

    def __init__(self, message: str, *, path: Path | str | None = None, duration_s: float, beat_s: float) -> None:
        self.duration_s = duration_s
        self.beat_s = beat_s
        super().__init__(message, path=path)


class CueOutOfRange(MediaInputError):
    """A subtitle cue (or a dialogue line) starts before 0, ends before it starts, or ends after the video."""

    problem = "cue_out_of_range"

    def __init__(
        self,
        message: str,
        *,
        path: Path | str | None = None,
        index: int,
        start_s: float,
        end_s: float,
        video_s: float,
    ) -> None:
        self.index = index
        self.start_s = start_s
        self.end_s = end_s
        self.video_s = video_s
        super().__init__(message, path=path)


class FontUnavailable(MediaInputError):
    """The subtitle font file is missing or unreadable, or lacks glyphs for ``missing`` characters."""

    problem = "font"

    def __init__(self, message: str, *, font: Path | str, missing: Sequence[str] = ()) -> None:
        self.font = str(font)
        self.missing = list(missing)
        super().__init__(message, path=font)


class TimelineInvalid(MediaInputError):
    """The timeline cannot be built: an out point past a clip's end, a transition longer than its scenes..."""

    problem = "timeline"


class InvalidInputs(MediaInputError):
    """Several inputs are wrong at once; ``problems`` holds each error (every one names its file)."""

    problem = "several"

    def __init__(self, problems: Sequence[MediaInputError]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} problems with the inputs:\n{lines}")


def raise_collected(problems: Sequence[MediaInputError]) -> None:
    """Raise the one problem as itself, several as ``InvalidInputs``; nothing when there are none."""
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise InvalidInputs(problems)
