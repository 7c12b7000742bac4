"""Beat grid (tempo and beat times) from music, and cuts snapped to it with the total duration kept exact.

Estimator (numpy only; no librosa, whose first call compiles for ~40 s, media-facts):

1. The music is decoded through PyAV chunk by chunk to mono 11025 Hz; an onset envelope (half-wave rectified
   spectral flux of the log magnitude, 512-sample Hann windows every 128 samples: 86 envelope frames per second)
   is built as it arrives, so memory does not grow with the length of the track beyond the envelope itself
   (~350 KB per 10 minutes).
2. Tempo: the envelope's autocorrelation, each lag scored with its harmonics (``ACF(L) + ACF(2L)/2 + ...``) so
   the beat period wins over its half and double, under a broad log-normal prior around 120 BPM; the peak lag
   is refined by parabolic interpolation.
3. Phase: the comb ``sum_k env(phase + k*period)`` maximised over the period; then period and phase are refined
   by a least-squares line through the envelope's local peak nearest each predicted beat (sub-frame precision
   over the whole track), and the constant latency of the flux detector is removed.

Measured on 32 synthetic tracks of known tempo (bench/assembly.py, tests/unit/test_media_beats.py).

Snapping (pure): ``snap_boundaries`` moves each scene boundary to the nearest beat within a tolerance, as whole
frames, by dynamic programming over the candidates so no scene becomes shorter than the minimum or longer than
its clip allows; the first and last frames never move, so the total duration stays exactly what it was.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reelforge.media.errors import MediaProbeError, MusicTooShort, SilentAudio

__all__ = [
    "BeatGrid",
    "SnapResult",
    "analyse_music",
    "beat_grid",
    "decode_mono",
    "onset_envelope",
    "snap_boundaries",
    "timeline_beats",
]

RATE = 11025
N_FFT = 512
HOP = 128
BPM_MIN = 40.0
BPM_MAX = 240.0
SILENT_PEAK_DB = -60.0


@dataclass(frozen=True)
class BeatGrid:
    """A constant-tempo grid: ``beats`` (seconds in the track), ``bpm``, the first beat, and the evidence."""

    bpm: float
    period_s: float
    first_s: float
    beats: list[float]
    duration_s: float
    confidence: float  # how much the comb's best phase stands out (0: none, ~1: clear beats)
    peak_db: float  # the track's loudest sample, dBFS
    support: float = 0.0  # median onset strength on the grid's beats over the mean strength (>= MIN_SUPPORT)


def decode_mono(path: Path | str, *, rate: int = RATE, chunk: int = 1 << 15) -> Iterator[np.ndarray]:
    """The first audio stream of ``path`` as float32 mono chunks at ``rate`` Hz (PyAV; ``MediaProbeError``)."""
    import av

    from reelforge.media.probe import open_media

    container = open_media(path)
    try:
        if not container.streams.audio:
            from reelforge.media.errors import MissingStream

            raise MissingStream("has no audio stream", path=path, stream="audio")
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        pending: list[np.ndarray] = []
        size = 0
        try:
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    pending.append(out.to_ndarray().reshape(-1))
                    size += pending[-1].size
                if size >= chunk:
                    yield np.concatenate(pending)
                    pending, size = [], 0
            for out in resampler.resample(None):
                pending.append(out.to_ndarray().reshape(-1))
        except av.FFmpegError as exc:
            raise MediaProbeError(f"cannot decode its audio (corrupt or truncated?): {exc}", path=path) from exc
        if pending:
            yield np.concatenate(pending)
    finally:
        container.close()


def _bands(n_bins: int, count: int = 24, low_hz: float = 30.0, high_hz: float = 5000.0) -> np.ndarray:
    """A ``[bins, bands]`` matrix summing FFT power into log-spaced bands, so that broadband hats (many bins) do
    not outweigh a kick (a few low bins) in the flux."""
    freqs = np.fft.rfftfreq(N_FFT, 1.0 / RATE)[:n_bins]
    edges = np.geomspace(low_hz, high_hz, count + 1)
    matrix = np.zeros((n_bins, count), dtype=np.float32)
    for b in range(count):
        inside = (freqs >= edges[b]) & (freqs < edges[b + 1])
        if not inside.any():  # a band narrower than one bin takes its nearest bin
            inside = np.abs(freqs - np.sqrt(edges[b] * edges[b + 1])) == np.min(
                np.abs(freqs - np.sqrt(edges[b] * edges[b + 1]))
            )
        matrix[inside, b] = 1.0
    return matrix


class _Flux:
    """Streaming onset envelope: feed sample chunks, read ``envelope()`` at the end."""

    def __init__(self) -> None:
        self.bands = _bands(N_FFT // 2 + 1)
        self.window = np.hanning(N_FFT).astype(np.float32)
        self.buffer = np.zeros(N_FFT // 2, dtype=np.float32)  # centred frames: half a window of silence first
        self.previous: np.ndarray | None = None
        self.values: list[np.ndarray] = []
        self.samples = 0
        self.peak = 0.0

    def feed(self, chunk: np.ndarray) -> None:
        if chunk.size:
            self.peak = max(self.peak, float(np.max(np.abs(chunk))))
        self.samples += chunk.size
        data = np.concatenate([self.buffer, chunk.astype(np.float32, copy=False)])
        count = (data.size - N_FFT) // HOP + 1 if data.size >= N_FFT else 0
        if count <= 0:
            self.buffer = data
            return
        idx = np.arange(N_FFT)[None, :] + HOP * np.arange(count)[:, None]
        frames = data[idx] * self.window
        power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
        mag = np.log1p(1000.0 * (power @ self.bands))
        prev = self.previous if self.previous is not None else mag[:1]
        diff = np.diff(np.vstack([prev, mag]), axis=0)
        self.values.append(np.maximum(diff, 0.0).sum(axis=1))
        self.previous = mag[-1:]
        self.buffer = data[count * HOP :]

    def envelope(self) -> np.ndarray:
        self.feed(np.zeros(N_FFT // 2, dtype=np.float32))  # flush the last half window
        if not self.values:
            return np.zeros(0)
        # A light smoothing (3 taps) so the comb tolerates the 1-frame jitter of spiky onsets.
        env: np.ndarray = np.convolve(np.concatenate(self.values), [0.25, 0.5, 0.25], mode="same")
        return env


def onset_envelope(samples: np.ndarray) -> np.ndarray:
    """Onset envelope of mono samples at ``RATE`` Hz (one value per ``HOP`` samples; frame ``t`` at ``t*HOP``)."""
    flux = _Flux()
    flux.feed(np.asarray(samples, dtype=np.float32))
    return flux.envelope()


def _acf(env: np.ndarray) -> np.ndarray:
    x = env - env.mean()
    n = x.size
    spec = np.fft.rfft(x, 2 * n)
    acf: np.ndarray = np.fft.irfft(spec * np.conj(spec))[:n]
    return acf / acf[0] if acf[0] > 0 else np.zeros(n)


def _interp(env: np.ndarray, positions: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.interp(positions, np.arange(env.size), env, left=0.0, right=0.0)
    return out


def _comb(env: np.ndarray, lag: float, step: float = 0.5) -> tuple[float, float]:
    """``(best mean envelope on a grid of period lag, its phase)`` over every phase of one period."""
    count = max(1, int((env.size - 1) / lag))
    phases = np.arange(0.0, lag, step)
    positions = phases[:, None] + lag * np.arange(count)[None, :]
    means = _interp(env, positions).mean(axis=1)
    best = int(np.argmax(means))
    return float(means[best]), float(phases[best])


def _comb_near(env: np.ndarray, lag: float, rel: float = 0.03) -> tuple[float, float]:
    """``(strength, lag)`` of the best comb within ``rel`` of ``lag``: over a whole track a period off by a
    tenth of a frame walks the grid off the onsets, so each candidate is searched finely."""
    lags = np.arange(lag * (1 - rel), lag * (1 + rel), max(0.01, lag * rel / 40))
    scores = [_comb(env, float(x))[0] for x in lags]
    best = int(np.argmax(scores))
    return float(scores[best]), float(lags[best])


# A pulse twice (or three times) as fast as the current one is the beat when its grid keeps at least this share
# of the current grid's onset strength above the mean. Accented downbeats make the bar the strongest grid (beat
# over bar and over half bar: 0.68-0.9 measured); the half beat keeps 0.46-0.53 without off-beats and 0.56-0.66
# with eighth-note hats between the beats (bench/assembly.py's synthetic tracks).
FASTER_SHARE = 0.72
TEMPO_WINDOW_S = 60.0  # tempo from the first minute (constant tempo); phase and period refined on the whole


def _tempo_lag(env: np.ndarray, fr: float) -> float:
    """The beat period in envelope frames (0.0 when there is none): see the module docstring."""
    n = env.size
    acf = _acf(env)
    lo, hi = int(fr * 60 / BPM_MAX), min(n // 2, math.ceil(fr * 60 / BPM_MIN))
    if hi <= lo + 2 or not acf.any():
        return 0.0
    # Candidate periods: the autocorrelation's local peaks, refined by parabolic interpolation.
    peaks = [j for j in range(max(lo, 1), hi) if acf[j] >= acf[j - 1] and acf[j] >= acf[j + 1] and acf[j] > 0]
    if not peaks:
        return 0.0
    peaks = sorted(peaks, key=lambda j: -acf[j])[:8]
    base = float(env.mean())

    def refine(j: int) -> float:
        a, b, c = acf[j - 1], acf[j], acf[j + 1]
        denom = a - 2 * b + c
        return j + float(np.clip(0.5 * (a - c) / denom, -0.5, 0.5)) if denom < 0 else float(j)

    scored = []
    for j in peaks:
        strength, lag = _comb_near(env, refine(j))
        scored.append((lag, strength - base))
    strongest, strength = max(scored, key=lambda item: item[1])
    if strength <= 0:
        return 0.0
    current, current_strength = strongest, strength
    moved = True
    while moved:
        moved = False
        for m in (2, 3):
            if current / m < lo:
                continue
            faster, lag = _comb_near(env, current / m, rel=0.01)
            if faster - base >= FASTER_SHARE * current_strength:
                current, current_strength, moved = lag, faster - base, True
                break
    return current


# The flux of a centred window rises before the onset it sees (the window's leading edge reaches it first):
# measured on synthetic tracks with onsets at known samples (kicks, clicks), and added back to every beat time.
LATENCY_FRAMES = -1.0
# Measured (bench/assembly.py): 3.6-30 on beat tracks (3.6 under noise at -20 dB), 0.5-1.2 on a sine pad, a
# slowly beating chord and white noise.
MIN_SUPPORT = 2.0
FIRST_SLACK_S = 0.02


def beat_grid(env: np.ndarray, *, duration_s: float, peak: float = 1.0) -> BeatGrid:
    """The constant-tempo grid that best explains an onset envelope (see the module docstring)."""
    fr = RATE / HOP
    lag = _tempo_lag(env[: int(TEMPO_WINDOW_S * fr)], fr)
    if lag <= 0:
        return BeatGrid(0.0, 0.0, 0.0, [], duration_s, 0.0, _db(peak))
    count = int(env.size / lag)
    strength, phase = _comb(env, lag, step=0.25)
    base = float(env.mean())
    confidence = float(max(0.0, strength - base) / (strength + 1e-12))
    # Refine period and phase: local peaks near each predicted beat, then a least-squares line.
    half = max(1, int(lag / 6))
    k_idx, peaks, weights = [], [], []
    for k in range(count + 1):
        centre = phase + k * lag
        lo, hi = round(centre) - half, round(centre) + half + 1
        if lo < 1 or hi >= env.size - 1:
            continue
        j = lo + int(np.argmax(env[lo:hi]))
        a, b, c = env[j - 1], env[j], env[j + 1]
        denom = a - 2 * b + c
        off = 0.5 * (a - c) / denom if denom < 0 else 0.0
        k_idx.append(k)
        peaks.append(j + float(np.clip(off, -0.5, 0.5)))
        weights.append(b)
    if len(k_idx) >= 4:
        w = np.sqrt(np.maximum(np.asarray(weights), 1e-9))
        design = np.vstack([np.asarray(k_idx, float), np.ones(len(k_idx))]).T
        slope, intercept = np.linalg.lstsq(design * w[:, None], np.asarray(peaks) * w, rcond=None)[0]
        if abs(slope - lag) < 0.05 * lag:
            lag, phase = float(slope), float(intercept)
    period = lag / fr
    # A grid needs onsets on most of its beats, not one loud transient (a pad's first chord) that every
    # comb phase can be laid through: the median onset on the beats must stand well over the mean.
    on_beats = [
        float(env[max(0, round(phase + k * lag) - 1) : round(phase + k * lag) + 2].max())
        for k in range(count + 1)
        if 0 <= round(phase + k * lag) < env.size
    ]
    support = float(np.median(on_beats) / (base + 1e-12)) if on_beats else 0.0
    if support < MIN_SUPPORT:
        return BeatGrid(0.0, 0.0, 0.0, [], duration_s, confidence, _db(peak), support)
    first = (phase - LATENCY_FRAMES) / fr
    # The first beat may sit a hair before 0 (a kick on the very first sample): it counts as a beat at 0.
    while first - period >= -FIRST_SLACK_S:
        first -= period
    while first < -FIRST_SLACK_S:
        first += period
    beats = [
        max(0.0, first + k * period)
        for k in range(int((duration_s - first) / period) + 1)
        if first + k * period < duration_s
    ]
    return BeatGrid(60.0 / period, period, max(0.0, first), beats, duration_s, confidence, _db(peak), support)


def _db(amplitude: float) -> float:
    return 20 * math.log10(amplitude) if amplitude > 0 else -math.inf


def analyse_music(path: Path | str) -> BeatGrid:
    """Decode ``path`` (streamed) and find its beat grid; refuses silent music and music shorter than a beat.

    Music without a steady pulse (a pad, a drone) gets an empty grid (``bpm`` 0, no beats): it can be used as a
    bed, but not for snapping cuts to beats (``inspect_inputs`` refuses that combination, naming the file).
    """
    flux = _Flux()
    for chunk in decode_mono(path):
        flux.feed(chunk)
    env = flux.envelope()
    duration = flux.samples / RATE
    peak_db = _db(flux.peak)
    if flux.samples == 0:
        raise SilentAudio("holds no audio samples (zero length)", path=path, duration_s=0.0, peak_db=None)
    if peak_db < SILENT_PEAK_DB:
        raise SilentAudio(f"is silent (peak {peak_db:.1f} dBFS)", path=path, duration_s=duration, peak_db=peak_db)
    if duration < 60.0 / BPM_MAX:
        raise MusicTooShort(
            f"lasts {duration * 1000:.0f} ms, shorter than one beat at the fastest tempo we detect "
            f"({BPM_MAX:g} BPM: {60000 / BPM_MAX:.0f} ms)",
            path=path, duration_s=duration, beat_s=60.0 / BPM_MAX,
        )  # fmt: skip
    grid = beat_grid(env, duration_s=duration, peak=flux.peak)
    if grid.period_s > duration:
        beat = grid.period_s
        raise MusicTooShort(
            f"lasts {duration:.3f} s, shorter than one beat ({beat:.3f} s): no beat grid can be found",
            path=path, duration_s=duration, beat_s=beat,
        )  # fmt: skip
    return grid


def timeline_beats(grid: BeatGrid, *, offset_s: float, loop: bool, duration_s: float) -> list[float]:
    """Beat times on the video's timeline for music placed from ``offset_s`` (restarting at 0 when looped)."""
    out: list[float] = []
    start = -offset_s
    while start < duration_s:
        # 1 ms of slack: a beat the float arithmetic puts a hair before 0 is the beat at 0.
        out += [max(0.0, start + b) for b in grid.beats if -1e-3 <= start + b < duration_s]
        if not loop or grid.duration_s <= 0:
            break
        start += grid.duration_s
    # At a loop point the grid's last beat (extrapolated to the track's end) can sit just before the next pass's
    # first: of two beats closer than a quarter period, the later one (the pass that holds it) stays.
    merged: list[float] = []
    for beat in sorted(out):
        if merged and beat - merged[-1] < grid.period_s / 4:
            merged[-1] = beat
        else:
            merged.append(beat)
    return merged


@dataclass(frozen=True)
class SnapResult:
    """Boundaries (timeline frames) after snapping, and how far each one sits from its beat (seconds)."""

    boundaries: list[int]
    snapped: list[bool]
    errors_s: list[float | None]  # distance to the beat it was snapped to (None: left where it was)


def snap_boundaries(
    boundaries: Sequence[int],
    beats: Sequence[float],
    *,
    fps: float,
    total: int,
    tolerance_s: float,
    min_gaps: Sequence[int],
    max_gaps: Sequence[int] | None = None,
) -> SnapResult:
    """Move each boundary (timeline frame, strictly increasing, inside ``0..total``) to a frame nearest a beat.

    Candidates per boundary: where it is, and the frame nearest each beat within ``tolerance_s``. Gap ``i``
    (between boundary ``i-1`` and ``i``, with 0 before the first and ``total`` after the last: ``n+1`` gaps) must
    stay within ``[min_gaps[i], max_gaps[i]]`` (a minimum scene length; how many frames its clip has). Dynamic
    programming picks the candidates that snap the most boundaries, then the smallest distance to their beats;
    0 and ``total`` never move. When no arrangement fits, every boundary stays where it was.
    """
    n = len(boundaries)
    if n == 0:
        return SnapResult([], [], [])
    max_l = list(max_gaps) if max_gaps is not None else [total] * (n + 1)
    beats_arr = np.asarray(sorted(beats), dtype=float)
    unsnapped = 1.0 + tolerance_s  # more than any snapped candidate costs: snapping more boundaries wins first
    candidates: list[list[tuple[int, float, float | None]]] = []
    for b in boundaries:
        options: dict[int, tuple[float, float | None]] = {int(b): (unsnapped, None)}
        t = b / fps
        for beat in beats_arr[(beats_arr >= t - tolerance_s) & (beats_arr <= t + tolerance_s)]:
            frame = round(beat * fps)
            if 0 < frame < total:
                cost = abs(frame / fps - beat) + abs(frame - b) / fps * 1e-3  # ties: the beat nearest the cut
                if frame not in options or options[frame][0] > cost:
                    options[frame] = (cost, frame / fps - beat)
        candidates.append([(f, c, e) for f, (c, e) in sorted(options.items())])

    def fits(gap: int, i: int) -> bool:
        return min_gaps[i] <= gap <= max_l[i]

    inf = math.inf
    best: list[list[float]] = []
    back: list[list[int]] = []
    for i, row_options in enumerate(candidates):
        row, brow = [], []
        for frame, cost, _ in row_options:
            if i == 0:
                row.append(cost if fits(frame, 0) else inf)
                brow.append(-1)
                continue
            choice, value = -1, inf
            for k, (pframe, _, _) in enumerate(candidates[i - 1]):
                if fits(frame - pframe, i) and best[i - 1][k] + cost < value:
                    choice, value = k, best[i - 1][k] + cost
            row.append(value)
            brow.append(choice)
        best.append(row)
        back.append(brow)
    last = [v if fits(total - candidates[-1][j][0], n) else inf for j, v in enumerate(best[-1])]
    j = int(np.argmin(last))
    if not math.isfinite(last[j]):
        return SnapResult([int(b) for b in boundaries], [False] * n, [None] * n)
    chosen: list[tuple[int, float, float | None]] = []
    for i in range(n - 1, -1, -1):
        chosen.append(candidates[i][j])
        j = back[i][j]
    chosen.reverse()
    return SnapResult(
        boundaries=[c[0] for c in chosen],
        snapped=[c[2] is not None for c in chosen],
        errors_s=[abs(c[2]) if c[2] is not None else None for c in chosen],
    )


def describe(grid: BeatGrid) -> dict[str, Any]:
    """A small JSON record of a grid (no beat list)."""
    return {"bpm": round(grid.bpm, 3), "first_s": round(grid.first_s, 4), "beats": len(grid.beats),
            "confidence": round(grid.confidence, 3), "duration_s": round(grid.duration_s, 3)}  # fmt: skip
