"""The production plan (pure) and the production's own media steps (real ffmpeg): frame rules, chains, lip-sync
windows, speech cut without losing a sample, lip-sync windows rejoined to the exact frame count."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from reelforge.media import probe, run_ffmpeg
from reelforge.media.synth import write_wav
from reelforge.script import DialogueLine, Scene, Script
from reelforge.video import (
    four_n_plus_one,
    lipsync_join_stage,
    lipsync_plan,
    lipsync_windows,
    place_lines,
    plan_scenes,
    scene_frames,
    speech_stage,
)
from reelforge.video.media import decode_mono
from reelforge.video.plan import keyframe_identities, placement_text, speaker_prompt


def _script(durations: list[float], chained: list[bool]) -> Script:
    pairs = enumerate(zip(durations, chained, strict=True))
    scenes = [Scene(number=i + 1, description="d", shot_type="wide", camera="static", motion_prompt="m",
                    duration_s=d, continues_previous=c) for i, (d, c) in pairs]
    return Script(title="t", audio_mood="calm", scenes=scenes, target_duration_s=sum(durations), style="s")


def test_frame_rules() -> None:
    assert [four_n_plus_one(n) for n in (1, 2, 5, 6, 80, 81)] == [1, 5, 5, 9, 81, 81]
    spans = scene_frames([3.3, 3.2, 3.5], 16)
    assert sum(n for _, n in spans) == 160 and spans[1][0] == spans[0][1]


def test_segments_chain_and_fresh_keyframe_after_max_chain() -> None:
    plans = plan_scenes(_script([12.0, 5.0, 5.0, 5.0], [False, True, True, True]), fps=16, segment_frames=81,
                        max_chain=3)
    first = plans[0].segments
    assert len(first) == 3 and sum(s.shown for s in first) == 192
    assert [s.start for s in first] == ["keyframe", "chain", "chain"]
    for s in first:
        assert s.length % 4 == 1 and s.length <= 81 and s.length >= s.shown + int(s.skip_first)
    # scene 2 continues the chain (position 3 = max), scene 3 must start fresh, scene 4 continues from it
    assert plans[1].segments[0].start == "chain" and plans[1].segments[0].chain_position == 3
    assert plans[2].segments[0].start == "keyframe" and plans[2].keyframe
    assert plans[3].segments[0].start == "chain" and not plans[3].keyframe


def test_lines_and_windows() -> None:
    assert place_lines(3.0, [1.0, 1.0]) == [0.3, 1.5]
    starts = place_lines(2.0, [1.0, 0.9])  # too long for lead and gap: squeezed, still inside the scene
    assert starts[0] >= 0 and starts[1] + 0.9 <= 2.0
    assert lipsync_windows(84, 77) == ([42, 42], [45, 45])
    windows, lengths = lipsync_windows(200, 77)
    assert sum(windows) == 200 and max(windows) <= 77 and all(n % 4 == 1 for n in lengths)


def test_two_speakers_alternating_get_windows_of_one_speaker_each() -> None:
    """Mina, Jun, Mina, then a narrator line, then Jun: a window never spans two speakers' lines, each cut lies in
    the gap between the two lines, no window is over the model's, and the windows sum to the lip-synced frames."""
    speakers = ["Mina", "Jun", "Mina", "narrator", "Jun"]
    scene = Scene(number=1, description="d", shot_type="two_shot", camera="static", motion_prompt="m",
                  duration_s=14.0, characters=["Mina", "Jun"],
                  dialogue=[DialogueLine(speaker=s, text="t") for s in speakers])
    plan = plan_scenes(Script(title="t", audio_mood="calm", scenes=[scene], target_duration_s=14.0, style="s",
                              characters=["Mina", "Jun"]), fps=16, segment_frames=81, max_chain=6)[0]
    durations = [2.0, 6.0, 1.0, 1.5, 1.0]
    starts = place_lines(14.0, durations)  # 0.3, 2.5, 8.7, 9.9, 11.6
    lip = lipsync_plan(scene, plan, starts, durations, 16, 77)
    assert lip is not None and lip.start == 4
    assert sum(lip.windows) == plan.frames - lip.start == 224 - 4
    assert max(lip.windows) <= 77 and all(n % 4 == 1 and n >= w for n, w in zip(lip.lengths, lip.windows, strict=True))
    assert lip.speakers == ["Mina", "Jun", "Jun", "Mina", "Jun"]  # Jun's 6 s line takes two windows
    edges = [lip.start + sum(lip.windows[:i]) for i in range(len(lip.windows) + 1)]
    for (first, end), who in zip(itertools.pairwise(edges), lip.speakers, strict=True):
        for line, at, duration in zip(speakers, starts, durations, strict=True):
            if line in scene.characters and line != who:  # no other speaker's line inside this window
                assert at + duration <= first / 16 or at >= end / 16, (who, first, end, line, at)
    cuts = [edges[i] for i in range(1, len(edges) - 1) if lip.speakers[i] != lip.speakers[i - 1]]
    assert cuts == [round(16 * (2.3 + 2.5) / 2), round(16 * (8.5 + 8.7) / 2), round(16 * (9.7 + 11.6) / 2)]
    # one speaker alone: the windows are those of the whole tail, as before
    alone = scene.model_copy(update={"characters": ["Mina"]})
    solo = lipsync_plan(alone, plan, starts, durations, 16, 77)
    assert solo is not None and solo.speakers == ["Mina"] * len(solo.windows)
    assert (solo.windows, solo.lengths) == lipsync_windows(220, 77)


def test_placement_is_the_scene_order_left_to_right() -> None:
    assert placement_text(["Mina", "Jun"]) == "Mina on the left, Jun on the right"
    assert placement_text(["Mina"]) == ""
    assert speaker_prompt("Jun", ["Mina", "Jun"]) == "Jun (on the right) speaks to Mina (on the left); Mina listens"
    assert speaker_prompt("Mina", ["Mina"]) == "Mina speaks"
    assert speaker_prompt("Ari", ["Mina", "Ari", "Jun"]) == (
        "Ari (in the middle) speaks to Mina (on the left) and Jun (on the right); Mina and Jun listen")


def test_keyframe_identities_are_the_first_two_on_screen_left_first() -> None:
    lora = {"Mina", "Ari", "Jun"}  # the cast members with a LoRA
    assert keyframe_identities(["Mina", "Ari"], lora) == ["Mina", "Ari"]  # Mina on the left half, Ari on the right
    assert keyframe_identities(["Ari", "Mina"], lora) == ["Ari", "Mina"]  # the scene's order, as the prompt places
    assert keyframe_identities(["Mina", "Ari", "Jun"], lora) == ["Mina", "Ari"]  # a third from the prompt only
    assert keyframe_identities(["Extra", "Jun", "Mina"], lora) == ["Jun", "Mina"]  # nobody without a LoRA
    assert keyframe_identities(["Mina"], lora) == ["Mina"]
    assert keyframe_identities(["Extra"], lora) == keyframe_identities([], lora) == []
    assert keyframe_identities(["Mina", "Ari"], lora, posed=True) == ["Mina"]  # the pose template holds one


def _clip(path: Path, frames: int, size: int = 64) -> Path:
    run_ffmpeg(["-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc=size={size}x{size}:rate=16",
                "-frames:v", str(frames), "-pix_fmt", "yuv420p", str(path)])
    return path


def test_speech_cut_into_windows_loses_no_sample_and_join_reconciles_frames(tmp_path: Path) -> None:
    rate = 24000
    t = np.arange(int(1.2 * rate)) / rate
    line = write_wav(tmp_path / "line.wav", 0.5 * np.sin(2 * np.pi * 440 * t), rate)
    out = speech_stage({"line0": line}, {"offsets_s": [0.5], "windows": [42, 42], "fps": 16}, tmp_path / "sp")
    full = decode_mono(out.products[0].path, rate)
    parts = [decode_mono(p.path, rate) for p in out.products[1:]]
    assert full.size == round(84 / 16 * rate) and sum(p.size for p in parts) == full.size
    assert np.allclose(np.concatenate(parts), full, atol=1e-4)  # window seams lose nothing
    assert abs(full[round(0.5 * rate) + 100]) > 0 or abs(full[round(0.5 * rate) + 200]) > 0
    # two speakers, Mina's line running past the cut: each window's chunk holds only its speaker, the track both
    other = write_wav(tmp_path / "other.wav", 0.5 * np.sin(2 * np.pi * 220 * t[:rate]), rate)
    two = speech_stage({"line0": line, "line1": other},
                       {"offsets_s": [1.8, 3.0], "line_speakers": ["Mina", "Jun"], "windows": [40, 44],
                        "speakers": ["Mina", "Jun"], "fps": 16}, tmp_path / "two")
    whole, mina, jun = (decode_mono(p.path, rate) for p in two.products)
    assert mina.size + jun.size == whole.size and mina.size == round(2.5 * rate)
    assert np.abs(mina[round(1.9 * rate):]).max() > 0.4  # Mina speaks in her window
    assert np.abs(whole[round(2.5 * rate):round(3.0 * rate)]).max() > 0.4  # and on past the cut, in the track
    assert np.abs(jun[:round(0.5 * rate)]).max() < 1e-3  # but not in Jun's window
    assert np.abs(jun[round(0.6 * rate):round(1.4 * rate)]).max() > 0.4
    # a lip-sync model that drops tail frames (LatentSync #64): 45 asked, 40 and 45 returned
    chunks = {"chunk0": _clip(tmp_path / "c0.mp4", 40), "chunk1": _clip(tmp_path / "c1.mp4", 45)}
    joined = lipsync_join_stage({**chunks, "speech": out.products[0].path}, {"windows": [42, 42], "fps": 16},
                                tmp_path / "join")
    info = probe(joined.products[0].path)
    assert info.frame_count == 84 and joined.record["held"] == [2, 0] and joined.record["trimmed"] == [0, 3]
    assert info.audio and abs((info.audio[0].duration_s or 0) - 84 / 16) < 0.03


@pytest.mark.parametrize("frames", [0])
def test_no_lipsync_of_nothing(frames: int) -> None:
    with pytest.raises(ValueError):
        lipsync_windows(frames, 77)


def test_snap_spans_moves_cuts_to_beats_keeping_total_and_minimum() -> None:
    from reelforge.video import snap_spans

    spans = scene_frames([2.3, 5.4, 2.3], 16)  # cuts at frames 37 and 123; beats every 0.5 s from 0.1 s
    beats = [0.1 + 0.5 * k for k in range(20)]
    result = snap_spans(spans, beats, fps=16, tolerance_s=0.35, min_frames=16, max_frames=240)
    assert [first for first, _ in result.spans] == [0, 34, 122]  # 2.1 s and 7.6 s, nearest frames
    assert sum(n for _, n in result.spans) == 160 and result.snapped == [True, True]
    assert all(abs(e or 1) <= 0.5 / 16 for e in result.errors_s)
    # a beat only past the minimum scene: that cut stays where it is
    short = snap_spans(scene_frames([1.1, 3.0], 16), [0.5], fps=16, tolerance_s=0.7, min_frames=16, max_frames=240)
    assert short.spans == scene_frames([1.1, 3.0], 16) and short.snapped == [False]
