"""Media of known truth, for tests, benches and self-checks: beat tracks of a given tempo and phase, tones,
WAV files and short test clips made by ffmpeg's own sources.

``beat_track`` draws the kind of music the beat estimator must handle: a kick (or a click) on every beat,
optionally an accented downbeat per bar, eighth-note hats between beats, a chord bed and noise. The beat times
are known to the sample, so the estimator's tempo and phase errors can be measured exactly.
"""

from __future__ import annotations

import wave
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from reelforge.media.ffmpeg import run_ffmpeg

__all__ = ["beat_track", "sample_clip", "tone", "write_wav"]


def write_wav(path: Path, samples: np.ndarray, sample_rate: int) -> Path:
    """``samples`` (``[T]`` mono or ``[C, T]``, floats in -1..1) as 16-bit PCM WAV."""
    data = np.asarray(samples, dtype=np.float64)
    if data.ndim == 1:
        data = data[None, :]
    pcm = (np.clip(data.T, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(pcm.shape[1])
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())
    return path


def _kick(rate: int) -> np.ndarray:
    t = np.arange(int(0.15 * rate)) / rate
    freq = 50.0 + 90.0 * np.exp(-t / 0.025)
    out: np.ndarray = np.cos(2 * np.pi * np.cumsum(freq) / rate) * np.exp(-t / 0.05)
    return out


def _hat(rate: int, rng: np.random.Generator) -> np.ndarray:
    n = int(0.04 * rate)
    noise = rng.standard_normal(n)
    noise = np.diff(noise, prepend=0.0)  # brighter: a first difference lifts the highs
    out: np.ndarray = noise * np.exp(-np.arange(n) / rate / 0.008) * 0.15
    return out


def beat_track(
    bpm: float,
    seconds: float,
    *,
    rate: int = 22050,
    first_s: float = 0.0,
    accent: bool = False,
    hats: bool = False,
    bed: bool = False,
    noise_db: float | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, list[float]]:
    """Mono samples of a beat track and its beat times (seconds): a kick at ``first_s + k * 60 / bpm``."""
    rng = np.random.default_rng(seed)
    n = round(seconds * rate)
    out = np.zeros(n)
    period = 60.0 / bpm
    kick = _kick(rate)
    count = int((seconds - first_s) / period) + 1
    beats = [first_s + k * period for k in range(count) if first_s + k * period < seconds]
    for k, b in enumerate(beats):
        at = round(b * rate)
        gain = 1.0 if (accent and k % 4 == 0) or not accent else 0.55
        seg = kick[: n - at] * gain * 0.6
        out[at : at + seg.size] += seg
        if hats:
            half = round((b + period / 2) * rate)
            if half < n:
                h = _hat(rate, rng)[: n - half]
                out[half : half + h.size] += h
    if bed:
        t = np.arange(n) / rate
        out += 0.05 * (np.sin(2 * np.pi * 220 * t) + np.sin(2 * np.pi * 277.2 * t) + np.sin(2 * np.pi * 329.6 * t))
    if noise_db is not None:
        out += rng.standard_normal(n) * 10 ** (noise_db / 20)
    return out.astype(np.float32), beats


def tone(freq: float, seconds: float, *, rate: int = 48000, level_db: float = -12.0) -> np.ndarray:
    """A sine of ``freq`` Hz at ``level_db`` dBFS peak, with 5 ms fades (no click at either end)."""
    n = round(seconds * rate)
    t = np.arange(n) / rate
    out = np.sin(2 * np.pi * freq * t) * 10 ** (level_db / 20)
    ramp = min(n // 2, round(0.005 * rate))
    if ramp:
        out[:ramp] *= np.linspace(0, 1, ramp)
        out[-ramp:] *= np.linspace(1, 0, ramp)
    result: np.ndarray = out.astype(np.float32)
    return result


def sample_clip(
    path: Path,
    *,
    seconds: float,
    size: tuple[int, int] = (320, 180),
    fps: str = "24",
    source: str = "testsrc2",
    audio_hz: float | None = 440.0,
    extra: Sequence[str] = (),
) -> Path:
    """An H.264 (yuv420p) MP4 from ffmpeg's ``source`` (``testsrc2`` numbers its frames; options may follow:
    ``"color=c=black"``), with a sine of
    ``audio_hz`` (None: no audio stream) as 44.1 kHz AAC; ``extra`` goes before the output name."""
    joiner = ":" if "=" in source else "="  # "testsrc2" or "color=c=black"
    args = ["-y", "-f", "lavfi", "-i", f"{source}{joiner}size={size[0]}x{size[1]}:rate={fps}"]
    if audio_hz is not None:
        args += ["-f", "lavfi", "-i", f"sine=frequency={audio_hz:g}:sample_rate=44100"]
    args += ["-t", f"{seconds:g}", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    if audio_hz is not None:
        args += ["-c:a", "aac", "-ac", "2"]
    run_ffmpeg([*args, *extra, str(path)])
    return path
