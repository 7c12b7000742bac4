"""Locating and running the ffmpeg binary.

``ffmpeg_exe()`` prefers an ``ffmpeg`` on PATH and falls back to the static binary shipped by the
imageio-ffmpeg wheel (which has no ffprobe; see ``reelforge.media.probe``). The runners below pipe raw
frames / PCM samples through ffmpeg without temporary files where possible.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path

import numpy as np

from reelforge.media.errors import FFmpegError, FFmpegNotFound, FFmpegTimeout

__all__ = ["FFmpegError", "FFmpegTimeout", "ffmpeg_exe", "run_ffmpeg"]


@cache
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary: PATH first, else imageio-ffmpeg's static build (cached)."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg
    except ImportError as exc:  # pragma: no cover - imageio-ffmpeg is a dependency
        raise FFmpegNotFound("ffmpeg not found on PATH and imageio-ffmpeg is not installed") from exc
    exe: str = imageio_ffmpeg.get_ffmpeg_exe()
    return exe


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run_ffmpeg(
    args: Sequence[str | Path],
    *,
    input_bytes: bytes | None = None,
    timeout: float | None = None,
    check: bool = True,
    input_path: Path | str | None = None,
    cwd: Path | str | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``ffmpeg -hide_banner <args>`` (stdin closed unless ``input_bytes`` is given).

    Raises ``FFmpegError`` with the tail of stderr on failure when ``check``, and ``FFmpegTimeout`` when it runs
    past ``timeout`` (``subprocess.run`` kills it then). ``input_path`` names the input in errors; ``cwd`` is
    the folder relative paths (and filter arguments such as ``subtitles=filename=``) are read from.
    """
    cmd = [ffmpeg_exe(), "-hide_banner", *[str(a) for a in args]]
    if input_bytes is None:
        cmd.insert(2, "-nostdin")
    try:
        proc = subprocess.run(
            cmd,
            input=input_bytes,
            stdin=None if input_bytes is not None else subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
            cwd=cwd,
        )
    except subprocess.TimeoutExpired as exc:
        stderr = (exc.stderr or b"").decode("utf-8", "replace")
        raise FFmpegTimeout(
            f"ffmpeg did not finish within {timeout:g} s and was killed: {_tail(stderr, 5)}".rstrip(": "),
            timeout=timeout or 0.0,
            stderr=stderr,
            path=input_path,
        ) from exc
    if check and proc.returncode != 0:
        stderr = proc.stderr.decode("utf-8", "replace")
        raise FFmpegError(
            f"ffmpeg failed (exit {proc.returncode}): {_tail(stderr)}",
            returncode=proc.returncode,
            stderr=stderr,
            path=input_path,
            ffmpeg_message=_tail(stderr, 3),
        )
    return proc


def encode_raw_video(
    frames: Iterable[np.ndarray],
    *,
    width: int,
    height: int,
    fps: float,
    output: Path,
    pix_fmt_in: str = "rgb24",
    input_args: Sequence[str | Path] = (),
    output_args: Sequence[str | Path] = (),
    timeout: float | None = None,
) -> None:
    """Pipe raw uint8 frames (``[H,W,3]``) into ffmpeg and write ``output``.

    ``input_args`` are extra inputs placed after the raw-video input (e.g. ``-i audio.f32``),
    ``output_args`` the codec/mapping options before the output path.
    """
    cmd = [
        ffmpeg_exe(),
        "-hide_banner",
        "-y",
        "-f",
        "rawvideo",
        "-pix_fmt",
        pix_fmt_in,
        "-s",
        f"{width}x{height}",
        "-r",
        repr(float(fps)),
        "-i",
        "pipe:0",
        *[str(a) for a in input_args],
        *[str(a) for a in output_args],
        str(output),
    ]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stderr is not None
    # stderr is read in a thread so that a chatty ffmpeg can never block on a full pipe while we write.
    chunks: list[bytes] = []

    def drain() -> None:
        assert proc.stderr is not None
        chunks.append(proc.stderr.read())

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    broken = False
    try:
        for frame in frames:
            try:
                proc.stdin.write(np.ascontiguousarray(frame, dtype=np.uint8).tobytes())
            except BrokenPipeError:
                broken = True
                break
    except BaseException:
        proc.kill()
        proc.wait()
        reader.join()
        raise
    finally:
        try:
            proc.stdin.close()
        except BrokenPipeError:
            broken = True
    try:
        returncode = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        proc.kill()
        proc.wait()
        reader.join()
        raise FFmpegTimeout(
            f"ffmpeg did not finish writing {output} within {timeout:g} s and was killed",
            timeout=timeout or 0.0,
            stderr=b"".join(chunks).decode("utf-8", "replace"),
        ) from exc
    reader.join()
    stderr = b"".join(chunks).decode("utf-8", "replace")
    if returncode != 0 or broken:
        raise FFmpegError(
            f"ffmpeg failed (exit {returncode}): {_tail(stderr)}", returncode=returncode, stderr=stderr
        )


def decode_audio(path: Path, *, sample_rate: int, channels: int, timeout: float | None = None) -> np.ndarray:
    """Decode the first audio stream of ``path`` to float32 ``[C,T]`` at the given rate and channel count."""
    proc = run_ffmpeg(
        [
            "-i",
            path,
            "-map",
            "0:a:0",
            "-vn",
            "-f",
            "f32le",
            "-acodec",
            "pcm_f32le",
            "-ac",
            str(channels),
            "-ar",
            str(sample_rate),
            "pipe:1",
        ],
        timeout=timeout,
        input_path=path,
    )
    samples = np.frombuffer(proc.stdout, dtype="<f4")
    usable = (samples.size // channels) * channels
    out: np.ndarray = samples[:usable].reshape(-1, channels).T.copy()
    return out


def write_raw_audio(path: Path, waveform: np.ndarray) -> None:
    """Write ``[C,T]`` float32 samples as interleaved little-endian f32 (input for ``-f f32le``)."""
    data = np.ascontiguousarray(np.asarray(waveform, dtype="<f4").T)
    path.write_bytes(data.tobytes())


def raw_audio_input_args(path: Path, *, sample_rate: int, channels: int) -> list[str]:
    """ffmpeg input options for a file written by ``write_raw_audio``."""
    return ["-f", "f32le", "-ar", str(sample_rate), "-ac", str(channels), "-i", str(path)]
