"""Frame counts for speech, and the checks on stored audio and video (real ffmpeg files)."""

from __future__ import annotations

from pathlib import Path

import pytest

from reelforge.media.ffmpeg import run_ffmpeg
from reelforge.media.verify import MediaCheckFailed, audio_stage, frames_for, video_stage


@pytest.mark.parametrize(
    ("duration", "fps", "frames"),
    [(4.75, 16, 77), (4.8125, 16, 77), (4.82, 16, 81), (0.1, 16, 5), (2.0, 16, 33), (1.0, 24, 25)],
)
def test_frames_cover_the_speech_in_4n_plus_1(duration: float, fps: float, frames: int) -> None:
    got = frames_for(duration, fps)
    assert got == frames and (got - 1) % 4 == 0
    assert got / fps >= duration, "the clip lasts at least as long as the speech"


def test_speech_longer_than_the_clip_is_refused_with_a_hint() -> None:
    with pytest.raises(MediaCheckFailed, match="at most 161"):
        frames_for(12.0, 16, maximum=161)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("verify")
    run_ffmpeg(["-y", "-f", "lavfi", "-i", "sine=sample_rate=24000", "-t", "1.5", str(d / "line.flac")])
    run_ffmpeg(["-y", "-f", "lavfi", "-i", "sine", "-t", "0.1", str(d / "blip.wav")])
    src = ["-f", "lavfi", "-i", "testsrc=size=64x64:rate=16", "-f", "lavfi", "-i", "sine"]
    run_ffmpeg(["-y", *src, "-t", "2", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(d / "clip.mp4")])
    run_ffmpeg(["-y", "-f", "lavfi", "-i", "testsrc=size=64x64:rate=16", "-t", "2", str(d / "silent.mp4")])
    (d / "notes.txt").write_text("not audio")
    return d


def test_audio_facts_and_refusals(media: Path, tmp_path: Path) -> None:
    record = audio_stage({"audio": media / "line.flac"}, {}, tmp_path).record
    assert record["duration_s"] == pytest.approx(1.5, abs=0.05) and record["sample_rate"] == 24000
    with pytest.raises(MediaCheckFailed, match=r"shorter than 0\.5 s.*blip\.wav"):
        audio_stage({"audio": media / "blip.wav"}, {"min_s": 0.5}, tmp_path)
    with pytest.raises(MediaCheckFailed, match=r"notes\.txt"):
        audio_stage({"audio": media / "notes.txt"}, {}, tmp_path)
    with pytest.raises(MediaCheckFailed, match="no audio stream"):
        audio_stage({"audio": media / "silent.mp4"}, {}, tmp_path)


def test_video_streams_and_duration(media: Path, tmp_path: Path) -> None:
    record = video_stage({"video": media / "clip.mp4"}, {"duration_s": 2.0}, tmp_path).record
    assert record["fps"] == 16 and record["audio"] and record["frames"] == 32
    with pytest.raises(MediaCheckFailed, match=r"not 3\.000 s"):
        video_stage({"video": media / "clip.mp4"}, {"duration_s": 3.0}, tmp_path)
    with pytest.raises(MediaCheckFailed, match="no audio stream"):
        video_stage({"video": media / "silent.mp4"}, {}, tmp_path)
