"""Placeholder audio for the preview worker: music with audible beats, and speech.

``render_music`` stands in for ACE-Step (``VAEDecodeAudio``): a kick on every beat at the tempo named in
the tags (``"120 bpm"``, ``"bpm: 90"``; default 120) over a soft chord bed, exactly the requested length.

``render_speech`` stands in for a TTS model: espeak-ng when it is installed (robotic but intelligible, with
speed / pitch / voice taken from the voice parameters), otherwise a voiced tone with a syllable-like
envelope of plausible length (~0.07 s per character at 150 words per minute). Both are deterministic.

AUDIO values are ComfyUI's ``{"waveform": [B, C, T] float32, "sample_rate": int}``.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import tempfile
import wave
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

DEFAULT_BPM = 120.0
MUSIC_SAMPLE_RATE = 44100
SPEECH_SAMPLE_RATE = 24000  # Qwen3-TTS outputs 24 kHz mono
SECONDS_PER_CHAR = 0.07  # ~150 words per minute of English text
_BPM_RE = (
    re.compile(r"(\d+(?:\.\d+)?)\s*-?\s*bpm\b", re.IGNORECASE),
    re.compile(r"\bbpm\s*[:=]?\s*(\d+(?:\.\d+)?)", re.IGNORECASE),
)


def audio_value(waveform: np.ndarray, sample_rate: int) -> dict[str, Any]:
    """An AUDIO value from ``[C, T]`` or ``[B, C, T]`` samples."""
    data = np.asarray(waveform, dtype=np.float32)
    if data.ndim == 1:
        data = data[None]
    if data.ndim == 2:
        data = data[None]
    return {"waveform": np.ascontiguousarray(data), "sample_rate": int(sample_rate)}


def _seed_of(*parts: Any) -> int:
    return zlib.crc32("\x1f".join(str(p) for p in parts).encode("utf-8"))


# -- music ------------------------------------------------------------------------------------------------


def parse_bpm(tags: str, default: float = DEFAULT_BPM) -> float:
    """Tempo named in ACE-Step style tags: ``"pop, 120 bpm"`` or ``"bpm: 90"``; clamped to 30..300."""
    for pattern in _BPM_RE:
        match = pattern.search(tags or "")
        if match:
            return float(min(300.0, max(30.0, float(match.group(1)))))
    return default


def _kick(sample_rate: int) -> np.ndarray:
    """A short kick drum: a pitch sweep 140 -> 45 Hz with an instant attack and exponential decay."""
    n = int(0.18 * sample_rate)
    t = np.arange(n, dtype=np.float64) / sample_rate
    freq = 45.0 + 95.0 * np.exp(-t / 0.03)
    phase = 2 * np.pi * np.cumsum(freq) / sample_rate
    env = np.exp(-t / 0.06)
    click = np.exp(-t / 0.002) * 0.3
    # cos: the kick starts at full amplitude, so its onset is the exact beat sample
    out: np.ndarray = (np.cos(phase) * env + click * np.cos(2 * np.pi * 1800.0 * t)).astype(np.float64)
    return out


def render_music(
    seconds: float,
    tags: str = "",
    seed: int = 0,
    sample_rate: int = MUSIC_SAMPLE_RATE,
    *,
    samples: int | None = None,
    lyrics: str = "",
) -> dict[str, Any]:
    """Stereo music of exactly ``round(seconds * sample_rate)`` samples (or ``samples`` when given).

    Beats: a kick at ``k * 60 / bpm`` seconds (accented on every bar's first beat). Bed: a four-chord
    progression changing every bar, root chosen by the seed; lyrics add a soft melody line.
    """
    total = int(samples) if samples is not None else round(float(seconds) * sample_rate)
    total = max(0, total)
    bpm = parse_bpm(tags)
    beat = 60.0 / bpm
    rng = np.random.default_rng(_seed_of("music", seed, tags))
    t = np.arange(total, dtype=np.float64) / sample_rate
    left = np.zeros(total, dtype=np.float64)
    right = np.zeros(total, dtype=np.float64)

    # Bed: I - V - vi - IV, one chord per bar, 30 ms crossfades so chord changes make no sharp onset.
    root = 110.0 * 2 ** (int(rng.integers(0, 12)) / 12)
    progression = ((0, 4, 7), (7, 11, 14), (9, 12, 16), (5, 9, 12))
    bar = 4 * beat
    bed = np.zeros(total, dtype=np.float64)
    n_bars = math.ceil(total / sample_rate / bar) + 1 if total else 0
    fade = 0.03
    for b in range(n_bars):
        start, stop = b * bar, (b + 1) * bar
        lo, hi = int(max(0.0, start - fade) * sample_rate), min(total, int((stop + fade) * sample_rate))
        if lo >= hi:
            continue
        seg = t[lo:hi]
        gain = np.clip((seg - (start - fade)) / fade, 0, 1) * np.clip(((stop + fade) - seg) / fade, 0, 1)
        if b == 0:
            gain = np.clip((stop + fade - seg) / fade, 0, 1)
        chord = progression[b % len(progression)]
        tone = sum(np.sin(2 * np.pi * root * 2 ** (s / 12) * seg) for s in chord)
        bed[lo:hi] += gain * tone / len(chord)
    pan = 0.5 + 0.2 * float(rng.uniform(-1, 1))
    left += 0.08 * bed * (1.0 - pan) * 2
    right += 0.08 * bed * pan * 2

    if lyrics.strip():  # a soft melody following the words' letters
        notes = [ord(c) % 8 for c in lyrics if c.isalpha()] or [0]
        scale = (0, 2, 4, 5, 7, 9, 11, 12)
        idx = (t / (beat / 2)).astype(np.int64) % len(notes)
        freq = root * 4 * 2 ** (np.take(scale, np.take(notes, idx)) / 12)
        melody = 0.04 * np.sin(2 * np.pi * np.cumsum(freq) / sample_rate)
        left += melody
        right += melody

    kick = _kick(sample_rate)
    n_beats = math.ceil(total / sample_rate / beat) + 1 if total else 0
    for k in range(n_beats):
        at = round(k * beat * sample_rate)
        if at >= total:
            break
        piece = kick[: total - at] * (0.6 if k % 4 == 0 else 0.45)
        left[at : at + len(piece)] += piece
        right[at : at + len(piece)] += piece

    return audio_value(np.stack([left, right]).astype(np.float32), sample_rate)


# -- speech -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VoiceParams:
    """What a placeholder voice sounds like: base pitch, speaking rate, gender, language (espeak code)."""

    pitch_hz: float = 120.0
    speed_wpm: float = 150.0
    gender: Literal["male", "female"] = "male"
    language: str = "en"


_LANGUAGE_CODES = {
    "auto": "en",
    "english": "en",
    "chinese": "cmn",
    "japanese": "ja",
    "korean": "ko",
    "french": "fr",
    "german": "de",
    "spanish": "es",
    "portuguese": "pt",
    "russian": "ru",
    "italian": "it",
}


def language_code(language: str) -> str:
    """espeak-ng voice code of a language name as the TTS packs name them ("Auto" = English)."""
    return _LANGUAGE_CODES.get(language.strip().lower(), "en")


def voice_from_description(description: str, language: str = "Auto") -> VoiceParams:
    """Voice parameters from a natural-language description ("a deep, slow male voice")."""
    words = set(re.findall(r"[a-z]+", description.lower()))
    female = bool(words & {"female", "woman", "women", "girl", "she", "her", "lady", "feminine"})
    gender: Literal["male", "female"] = "female" if female else "male"
    pitch = 210.0 if female else 115.0
    speed = 150.0
    if words & {"deep", "low", "bass", "baritone", "gravelly", "husky"}:
        pitch *= 0.8
    if words & {"high", "bright", "young", "child", "squeaky", "youthful", "soprano"}:
        pitch *= 1.2
    if words & {"old", "elderly", "aged"}:
        pitch *= 0.92
        speed *= 0.9
    if words & {"slow", "calm", "measured", "relaxed", "soothing", "gentle"}:
        speed = 125.0
    if words & {"fast", "energetic", "excited", "quick", "rapid", "urgent", "cheerful"}:
        speed = 180.0
    return VoiceParams(pitch_hz=pitch, speed_wpm=speed, gender=gender, language=language_code(language))


def estimate_pitch(waveform: np.ndarray, sample_rate: int) -> float | None:
    """Median fundamental frequency (Hz) of the voiced frames of ``[..., T]`` samples, or None."""
    data = np.asarray(waveform, dtype=np.float64)
    mono = data.reshape(-1, data.shape[-1]).mean(axis=0) if data.ndim > 1 else data
    mono = mono[: int(12 * sample_rate)]
    frame = int(0.04 * sample_rate)
    hop = max(1, int(0.02 * sample_rate))
    if frame < 8 or mono.size < frame:
        return None
    lo, hi = int(sample_rate / 400.0), min(frame - 1, int(sample_rate / 60.0))
    if lo >= hi:
        return None
    energy_floor = 0.1 * float(np.sqrt(np.mean(mono**2)) or 0.0)
    found: list[float] = []
    for start in range(0, mono.size - frame, hop):
        seg = mono[start : start + frame]
        seg = seg - seg.mean()
        if float(np.sqrt(np.mean(seg**2))) <= max(energy_floor, 1e-4):
            continue
        ac = np.correlate(seg, seg, mode="full")[frame - 1 :]
        if ac[0] <= 0:
            continue
        lag = lo + int(np.argmax(ac[lo:hi]))
        if ac[lag] / ac[0] > 0.3:
            found.append(sample_rate / lag)
    return float(np.median(found)) if found else None


def voice_from_reference(audio: dict[str, Any] | None, ref_text: str = "", language: str = "Auto") -> VoiceParams:
    """Voice parameters that roughly follow a reference clip: its pitch, and its pace if its text is known."""
    voice = VoiceParams(language=language_code(language))
    if audio is None:
        return voice
    waveform = np.asarray(audio["waveform"], dtype=np.float32)
    sample_rate = int(audio["sample_rate"])
    pitch = estimate_pitch(waveform[0] if waveform.ndim == 3 else waveform, sample_rate)
    if pitch is not None:
        pitch = float(min(400.0, max(60.0, pitch)))
        voice = replace(voice, pitch_hz=pitch, gender="female" if pitch > 165.0 else "male")
    duration = waveform.shape[-1] / sample_rate if sample_rate > 0 else 0.0
    words = len(ref_text.split())
    if words >= 3 and duration > 0.5:
        voice = replace(voice, speed_wpm=float(min(240.0, max(80.0, words / duration * 60.0))))
    return voice


def speech_seconds(text: str, voice: VoiceParams | None = None) -> float:
    """Plausible spoken length of ``text``: ~0.07 s per character at 150 wpm, plus punctuation pauses."""
    voice = voice or VoiceParams()
    chars = len(" ".join(text.split()))
    pauses = 0.25 * len(re.findall(r"[,;:]", text)) + 0.4 * len(re.findall(r"[.!?]+(?=\s|$)", text))
    return max(0.3, chars * SECONDS_PER_CHAR * 150.0 / max(40.0, voice.speed_wpm) + pauses)


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def _espeak(text: str, voice: VoiceParams, sample_rate: int) -> np.ndarray | None:
    """Speak ``text`` with espeak-ng; mono float32 at ``sample_rate``, or None if espeak-ng fails."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        return None
    base = 210.0 if voice.gender == "female" else 115.0
    pitch = int(min(99, max(0, round(50 + 60 * math.log2(max(30.0, voice.pitch_hz) / base)))))
    variant = "+f3" if voice.gender == "female" else "+m3"
    with tempfile.TemporaryDirectory(prefix="reelforge-tts-") as tmp:
        out = Path(tmp) / "speech.wav"
        cmd = [exe, "-w", str(out), "-s", str(round(voice.speed_wpm)), "-p", str(pitch)]
        cmd += ["-v", f"{voice.language}{variant}", "--", text]
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if proc.returncode != 0 or not out.exists():
            return None
        with wave.open(str(out), "rb") as w:
            rate, width, channels = w.getframerate(), w.getsampwidth(), w.getnchannels()
            raw = w.readframes(w.getnframes())
    if width != 2 or rate <= 0:
        return None
    samples = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1)
    if samples.size == 0:
        return None
    return _resample(samples, rate, sample_rate)


def _resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    if rate == target:
        return samples.astype(np.float32)
    n = round(samples.size * target / rate)
    src = np.arange(samples.size, dtype=np.float64) / rate
    dst = np.arange(n, dtype=np.float64) / target
    out: np.ndarray = np.interp(dst, src, samples).astype(np.float32)
    return out


def _syllables(word: str) -> int:
    return max(1, len(re.findall(r"[aeiouy]+", word.lower())))


def _tone_speech(text: str, voice: VoiceParams, seed: int, sample_rate: int) -> np.ndarray:
    """A voiced tone shaped like speech: one pulse per syllable, gaps between words, pauses at punctuation."""
    rng = np.random.default_rng(_seed_of("speech", seed, text, voice))
    total_s = speech_seconds(text, voice)
    tokens = re.findall(r"[^\W_]+(?:'[^\W_]+)*|[,;:.!?]", text) or ["ah"]
    pause_of = {",": 0.25, ";": 0.25, ":": 0.25, ".": 0.4, "!": 0.4, "?": 0.4}
    pause_total = sum(pause_of.get(tok, 0.0) for tok in tokens)
    word_weight = sum(len(tok) + 1 for tok in tokens if tok not in pause_of) or 1
    per_char = max(0.0, total_s - pause_total) / word_weight
    total = round(total_s * sample_rate)
    out = np.zeros(total, dtype=np.float64)
    pos = 0.0
    sentence_start = 0.0
    for tok in tokens:
        if tok in pause_of:
            pos += pause_of[tok]
            if tok in ".!?":
                sentence_start = pos
            continue
        word_s = (len(tok) + 1) * per_char
        n_syl = _syllables(tok)
        syl_s = word_s * 0.85 / n_syl
        for s in range(n_syl):
            start = pos + s * syl_s
            lo, hi = int(start * sample_rate), min(total, int((start + syl_s * 0.9) * sample_rate))
            if hi <= lo:
                continue
            local = np.arange(hi - lo, dtype=np.float64) / sample_rate
            x = local / max(1e-6, syl_s * 0.9)
            declination = 1.0 - 0.15 * min(1.0, (start - sentence_start) / 3.0)
            f0 = voice.pitch_hz * declination * (1.0 + 0.08 * float(rng.uniform(-1, 1))) * (1 + 0.05 * x)
            phase = 2 * np.pi * np.cumsum(f0) / sample_rate
            voiced = sum(np.sin(k * phase) / k for k in range(1, 6))
            env = np.sin(np.pi * np.clip(x, 0, 1)) ** 0.6
            onset = rng.normal(0.0, 1.0, hi - lo) * np.exp(-local / 0.012) * 0.3  # consonant-like burst
            out[lo:hi] += 0.25 * env * voiced + onset * 0.5
        pos += word_s
    return out.astype(np.float32)


def render_speech(
    text: str,
    voice: VoiceParams | None = None,
    seed: int = 0,
    reference: dict[str, Any] | None = None,
    sample_rate: int = SPEECH_SAMPLE_RATE,
    *,
    use_espeak: bool | None = None,
) -> dict[str, Any]:
    """Mono speech for ``text`` as an AUDIO value.

    ``voice`` defaults to parameters taken from ``reference`` (voice cloning) or a neutral voice.
    ``use_espeak``: None = use espeak-ng when installed; False forces the tone fallback.
    """
    if voice is None:
        voice = voice_from_reference(reference) if reference is not None else VoiceParams()
    samples: np.ndarray | None = None
    if use_espeak is not False and text.strip():
        samples = _espeak(text, voice, sample_rate)
    if samples is None:
        samples = _tone_speech(text, voice, seed, sample_rate)
    peak = float(np.max(np.abs(samples))) if samples.size else 0.0
    if peak > 0.95:
        samples = samples * np.float32(0.95 / peak)
    return audio_value(samples[None, None, :], sample_rate)
