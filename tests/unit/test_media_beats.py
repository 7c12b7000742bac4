"""Beat grid (tempo and phase from an onset envelope) and beat snapping, pure: numpy arrays in, numbers out."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import resample_poly

from reelforge.media.beats import RATE, beat_grid, onset_envelope, snap_boundaries, timeline_beats
from reelforge.media.synth import beat_track
from reelforge.preview.render.audio import render_music

# Tempos across the range, odd values, every style the estimator must hold: accents (the bar is the strongest
# pulse), hats between beats (the half beat is strong), a chord bed, noise.
TRACKS = [
    (61.3, {"accent": True}),
    (77.7, {"hats": True}),
    (96.2, {"bed": True, "noise_db": -40}),
    (118.4, {"accent": True, "hats": True}),
    (127.9, {}),
    (143.1, {"accent": True, "bed": True}),
    (161.6, {"hats": True, "noise_db": -45}),
    (178.2, {"accent": True, "hats": True, "bed": True}),
]


def _grid(samples: np.ndarray, rate: int, seconds: float):  # type: ignore[no-untyped-def]
    y = resample_poly(samples, RATE, rate) if rate != RATE else samples
    return beat_grid(onset_envelope(y), duration_s=seconds)


@pytest.mark.parametrize(("bpm", "style"), TRACKS)
def test_tempo_and_phase_of_synthetic_tracks(bpm: float, style: dict[str, object]) -> None:
    first = 0.137 * 60 / bpm * 3 % (60 / bpm)
    x, beats = beat_track(bpm, 12.0, rate=22050, first_s=first, seed=int(bpm), **style)  # type: ignore[arg-type]
    grid = _grid(x, 22050, 12.0)
    assert grid.bpm == pytest.approx(bpm, rel=0.005)  # not half or double, within 0.5%
    detected = np.asarray(grid.beats)
    worst = max(float(np.min(np.abs(detected - b))) for b in beats)
    assert worst < 0.010  # every true beat has a detected one within 10 ms
    assert grid.confidence > 0.3


def test_the_preview_workers_music_has_the_tempo_its_tags_name() -> None:
    for bpm in (90, 120, 140):
        value = render_music(10.0, f"pop, {bpm} bpm", seed=3)
        mono = value["waveform"][0].mean(axis=0)
        grid = _grid(mono, value["sample_rate"], 10.0)
        assert grid.bpm == pytest.approx(bpm, rel=0.005)
        assert min(abs(b - 0.0) for b in grid.beats) < 0.01  # the preview's first kick is at 0


def test_no_pulse_gives_an_empty_grid() -> None:
    t = np.arange(5 * RATE) / RATE
    pad = (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    grid = beat_grid(onset_envelope(pad), duration_s=5.0)
    assert grid.beats == [] and grid.bpm == 0.0


def test_beats_on_the_timeline_follow_offset_and_loop() -> None:
    x, _ = beat_track(120, 4.0, rate=22050)
    grid = _grid(x, 22050, 4.0)
    beats = timeline_beats(grid, offset_s=1.0, loop=True, duration_s=6.0)
    # the track's beats 1.0..3.5 s land at 0..2.5 s, then it starts again at 3.0 s: 3.0..5.5 s (6.0 at most)
    assert beats[:12] == pytest.approx([k * 0.5 for k in range(12)], abs=0.01) and len(beats) in (12, 13)
    assert timeline_beats(grid, offset_s=0, loop=False, duration_s=10)[-1] < 4.0


def test_snap_moves_cuts_to_the_nearest_beat_and_keeps_the_total() -> None:
    fps = 24.0
    beats = [k * 0.5 for k in range(40)]  # 120 BPM
    result = snap_boundaries([50, 110, 170], beats, fps=fps, total=240, tolerance_s=0.3, min_gaps=[24] * 4)
    assert result.boundaries == [48, 108, 168] and all(result.snapped)
    assert result.errors_s == [0.0, 0.0, 0.0]
    # off-grid beats: the frame nearest each one, within one frame
    beats = [0.27 + k * 0.61 for k in range(30)]
    result = snap_boundaries([40, 100], beats, fps=fps, total=200, tolerance_s=0.35, min_gaps=[12] * 3)
    for frame, err in zip(result.boundaries, result.errors_s, strict=True):
        assert err is not None and err <= 0.5 / fps
        assert min(abs(frame / fps - b) for b in beats) <= 0.5 / fps


def test_snap_respects_tolerance_minimum_scene_and_clip_length() -> None:
    beats = [k * 0.5 for k in range(40)]
    far = snap_boundaries([54], beats, fps=24, total=240, tolerance_s=0.1, min_gaps=[1, 1])
    assert far.boundaries == [54] and far.snapped == [False] and far.errors_s == [None]  # 0.25 s from any beat
    # scene 1 may not shrink under 61 frames: both cuts cannot move onto their nearest beats (60, 120)
    tight = snap_boundaries([62, 122], beats, fps=24, total=240, tolerance_s=0.3, min_gaps=[1, 61, 1])
    assert tight.boundaries[1] - tight.boundaries[0] >= 61
    # scene 0 cannot grow past its clip (max 50 frames): its cut stays at or before 50
    short = snap_boundaries([50], beats, fps=24, total=240, tolerance_s=0.3, min_gaps=[1, 1], max_gaps=[50, 240])
    assert short.boundaries == [48]
    # nothing fits: every cut stays
    stuck = snap_boundaries([50], beats, fps=24, total=100, tolerance_s=0.3, min_gaps=[50, 50], max_gaps=[50, 50])
    assert stuck.boundaries == [50] and stuck.snapped == [False]
