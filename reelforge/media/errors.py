"""Exceptions of the media tools (ffmpeg, probing).

::

    MediaError               base; carries the input file and ffmpeg's own message when known
    ├── FFmpegNotFound       no ffmpeg on PATH and no imageio-ffmpeg binary
    ├── FFmpegError          ffmpeg exited non-zero (returncode, the tail of its stderr)
    └── FFmpegTimeout        ffmpeg ran past its timeout and was killed

All are permanent for retry purposes: the same inputs fail the same way (a timeout with the same limit too).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["FFmpegError", "FFmpegNotFound", "FFmpegTimeout", "MediaError"]


class MediaError(Exception):
    """A media tool failed; ``path`` names the input file when one is known."""

    def __init__(self, message: str, *, path: Path | str | None = None, stderr: str = "") -> None:
        self.message = message
        self.path = str(path) if path is not None else None
        self.stderr = stderr
        super().__init__(f"{message} (input {self.path})" if self.path else message)


class FFmpegNotFound(MediaError):
    """No ffmpeg binary could be located."""


class FFmpegError(MediaError):
    """ffmpeg exited with an error; the message carries the tail of its stderr."""

    def __init__(
        self, message: str, *, returncode: int | None = None, stderr: str = "", path: Path | str | None = None
    ) -> None:
        self.returncode = returncode
        super().__init__(message, path=path, stderr=stderr)


class FFmpegTimeout(MediaError):
    """ffmpeg did not finish within its timeout; the process was killed."""

    def __init__(self, message: str, *, timeout: float, stderr: str = "", path: Path | str | None = None) -> None:
        self.timeout = timeout
        super().__init__(message, path=path, stderr=stderr)
