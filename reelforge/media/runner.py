"""The thin runner for long ffmpeg jobs: ``-progress`` callbacks, a deadline that kills, errors that say why.

``run_job(args)`` runs ``ffmpeg -hide_banner -nostdin -nostats -progress pipe:1 <args>``. ffmpeg writes one
``key=value`` block per ~0.5 s on stdout (``out_time_us``, ``frame``, ``speed``, ending in ``progress=continue``
or ``progress=end``); each block becomes a ``Progress`` handed to the callback. stderr is drained in a thread
into a bounded buffer (the last ``keep_lines`` lines), so a chatty filter can neither block ffmpeg on a full
pipe nor grow the orchestrator's memory with the length of the video.

A timer kills the process at the deadline (``FFmpegTimeout``). A non-zero exit becomes ``FFmpegError`` naming
the input file and carrying ffmpeg's own error lines (``ffmpeg_message``). An exception raised by the progress
callback (a cancellation) kills ffmpeg and propagates.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from reelforge.media.errors import FFmpegError, FFmpegTimeout
from reelforge.media.ffmpeg import ffmpeg_exe

__all__ = ["JobResult", "Progress", "ProgressCallback", "ffmpeg_message", "run_job"]


@dataclass(frozen=True)
class Progress:
    """One ``-progress`` block: media time written so far and, when the total is known, the fraction."""

    out_time_s: float
    frame: int | None
    speed: float | None
    total_s: float | None
    done: bool

    @property
    def fraction(self) -> float | None:
        if self.done:
            return 1.0
        if not self.total_s:
            return None
        return max(0.0, min(1.0, self.out_time_s / self.total_s))


ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True)
class JobResult:
    """A finished job: the kept tail of stderr, the last progress block and the wall time."""

    stderr: str
    last: Progress | None
    wall_s: float


# Lines that describe streams or configuration rather than what went wrong, and the generic consequences ffmpeg
# prints after the cause ("Task finished with error code", "Conversion failed!").
_NOISE = re.compile(
    r"^(\s|Input #|Output #|Stream mapping|Press \[q\]|\s*(Metadata|Duration|Stream #|Side data|encoder)\b|"
    r"frame=|size=|video:|\[out#)|Terminating thread|Task finished with error code|Conversion failed|"
    r"Nothing was written into output|Could not open encoder before EOF|Error while filtering|Error closing"
)


def ffmpeg_message(stderr: str, lines: int = 4) -> str:
    """ffmpeg's own error text from its log: the last ``lines`` lines that are not stream or progress noise."""
    kept = [ln.strip() for ln in stderr.splitlines() if ln.strip() and not _NOISE.search(ln)]
    return " | ".join(kept[-lines:])


def _parse_block(block: dict[str, str], total_s: float | None) -> Progress:
    us = block.get("out_time_us") or block.get("out_time_ms") or "0"
    try:
        out_time = max(0.0, int(us) / 1e6)
    except ValueError:  # "N/A" before the first packet
        out_time = 0.0
    frame_text = block.get("frame")
    speed_text = (block.get("speed") or "").strip().rstrip("x")
    try:
        speed = float(speed_text) if speed_text and speed_text != "N/A" else None
    except ValueError:
        speed = None
    return Progress(
        out_time_s=out_time,
        frame=int(frame_text) if frame_text and frame_text.isdigit() else None,
        speed=speed,
        total_s=total_s,
        done=block.get("progress") == "end",
    )


def run_job(
    args: Sequence[str | Path],
    *,
    input_path: Path | str | None = None,
    total_s: float | None = None,
    progress: ProgressCallback | None = None,
    timeout: float | None = None,
    loglevel: str = "error",
    keep_lines: int = 400,
    cwd: Path | None = None,
) -> JobResult:
    """Run one ffmpeg job to completion; see the module docstring for progress, deadline and errors.

    ``loglevel`` is ffmpeg's: ``error`` for encodes (stderr is then only what went wrong), ``info`` for
    measurements whose summary is read from the log (ebur128).
    """
    cmd = [
        ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", loglevel,
        "-progress", "pipe:1", *[str(a) for a in args],
    ]  # fmt: skip
    started = time.monotonic()
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd, text=True,
        encoding="utf-8", errors="replace",
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    tail: deque[str] = deque(maxlen=keep_lines)

    def drain() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            tail.append(line.rstrip("\n"))

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    timed_out = threading.Event()

    def kill() -> None:
        timed_out.set()
        proc.kill()

    timer = threading.Timer(timeout, kill) if timeout is not None else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    last: Progress | None = None
    block: dict[str, str] = {}
    try:
        for line in proc.stdout:
            key, sep, value = line.strip().partition("=")
            if not sep:
                continue
            block[key] = value
            if key == "progress":
                last = _parse_block(block, total_s)
                block = {}
                if progress is not None:
                    progress(last)
        returncode = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        if timer is not None:
            timer.cancel()
        reader.join()
    stderr = "\n".join(tail)
    if timed_out.is_set():
        raise FFmpegTimeout(
            f"ffmpeg did not finish within {timeout:g} s and was killed: {ffmpeg_message(stderr, 2)}".rstrip(": "),
            timeout=timeout or 0.0,
            stderr=stderr,
            path=input_path,
        )
    if returncode != 0:
        message = ffmpeg_message(stderr)
        raise FFmpegError(
            f"ffmpeg failed (exit {returncode}): {message or 'no error message'}",
            returncode=returncode,
            stderr=stderr,
            path=input_path,
            ffmpeg_message=message,
        )
    return JobResult(stderr=stderr, last=last, wall_s=time.monotonic() - started)
