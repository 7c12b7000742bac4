"""reelforge.media.probe: facts parsed from ffmpeg's output (the bundled ffmpeg has no ffprobe)."""

from __future__ import annotations

from pathlib import Path

import pytest

from reelforge.media.errors import MediaError
from reelforge.media.ffmpeg import FFmpegError, FFmpegTimeout, ffmpeg_exe, run_ffmpeg
from reelforge.media.probe import MediaProbeError, count_frames, parse_ffmpeg_info, probe


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("media")
    src = ["-f", "lavfi", "-i", "testsrc=size=64x48:rate=12", "-f", "lavfi", "-i", "sine=sample_rate=32000"]
    codecs = ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-ac", "2"]
    meta = ["-movflags", "use_metadata_tags", "-metadata", 'prompt={"1": {"a": "b: c"}}']
    run_ffmpeg(["-y", *src, "-t", "1.5", *codecs, *meta, str(d / "av.mp4")])
    run_ffmpeg(
        ["-y", "-f", "lavfi", "-i", "sine=sample_rate=22050", "-t", "0.75", "-ac", "1", str(d / "mono.flac")]
    )
    run_ffmpeg(["-y", "-f", "lavfi", "-i", "testsrc=size=20x10", "-frames:v", "1", str(d / "still.png")])
    (d / "notes.txt").write_text("definitely not media\n")
    return d


def test_ffmpeg_exe_is_cached_and_runs() -> None:
    assert ffmpeg_exe() is ffmpeg_exe()
    proc = run_ffmpeg(["-version"])
    assert b"ffmpeg version" in proc.stdout
    with pytest.raises(FFmpegError, match="exit"):
        run_ffmpeg(["-i", "/nonexistent/input.wav", "-f", "null", "-"])


def test_ffmpeg_errors_name_the_input_and_a_timeout_is_a_media_error() -> None:
    with pytest.raises(FFmpegError) as failed:
        run_ffmpeg(["-i", "/nonexistent/input.wav", "-f", "null", "-"], input_path="/nonexistent/input.wav")
    assert failed.value.path == "/nonexistent/input.wav" and "No such file" in failed.value.stderr
    # An endless source: ffmpeg is killed at the timeout and the error is in the media tree, not subprocess's.
    with pytest.raises(FFmpegTimeout) as slow:
        run_ffmpeg(["-re", "-f", "lavfi", "-i", "sine", "-f", "null", "-"], timeout=0.5, input_path="lavfi:sine")
    assert isinstance(slow.value, MediaError) and slow.value.timeout == 0.5
    assert "0.5 s" in str(slow.value) and "lavfi:sine" in str(slow.value)


def test_probe_video_with_audio(media: Path) -> None:
    info = probe(media / "av.mp4")
    assert info.duration_s == pytest.approx(1.5, abs=0.05)
    (v,) = info.video
    assert (v.codec, v.width, v.height, v.fps, v.pix_fmt) == ("h264", 64, 48, 12.0, "yuv420p")
    assert v.frame_count == 18 == info.frame_count
    (a,) = info.audio
    assert (a.codec, a.sample_rate, a.channels, a.channel_layout) == ("aac", 32000, 2, "stereo")
    assert info.tags["prompt"] == '{"1": {"a": "b: c"}}'
    assert info.has_video and info.has_audio
    assert count_frames(media / "av.mp4") == 18


def test_probe_audio_only_and_still_image(media: Path) -> None:
    flac = probe(media / "mono.flac")
    assert flac.format == "flac" and not flac.video
    assert flac.duration_s == pytest.approx(0.75, abs=0.01)
    assert (flac.audio[0].sample_rate, flac.audio[0].channels) == (22050, 1)
    assert flac.frame_count is None
    png = probe(media / "still.png")
    assert (png.width, png.height, png.frame_count) == (20, 10, 1)
    assert png.duration_s is None and not png.audio


def test_probe_rejects_non_media_and_missing_files(media: Path) -> None:
    with pytest.raises(MediaProbeError, match=r"notes\.txt.*not recognise"):
        probe(media / "notes.txt")
    with pytest.raises(MediaProbeError, match=r"missing\.mp4: no such file"):
        probe(media / "missing.mp4")


def test_probe_without_counting(media: Path) -> None:
    assert probe(media / "av.mp4", count=False).frame_count is None


CANNED = """\
Input #0, matroska,webm, from 'clip.mkv':
  Metadata:
    title           : first line
                    : second line
    ENCODER         : Lavf60.3.100
  Duration: 00:01:02.50, start: 0.007000, bitrate: 1234 kb/s
{video_line}
    Metadata:
      DURATION        : 00:01:02.500000000
  Stream #0:1(eng): Audio: eac3, 48000 Hz, 5.1(side), fltp, 640 kb/s
  Stream #0:2: Audio: pcm_s16le, 8000 Hz, 3 channels, s16, 384 kb/s
  Stream #0:3(eng): Subtitle: subrip
At least one output file must be specified
""".format(
    video_line="  Stream #0:0(eng): Video: hevc (Main 10), yuv420p10le(tv, bt2020nc/bt2020/smpte2084), "
    "3840x2160 [SAR 1:1 DAR 16:9], 29.97 fps, 29.97 tbr, 1k tbn (default)"
)


def test_parse_canned_ffmpeg_output() -> None:
    info = parse_ffmpeg_info("clip.mkv", CANNED)
    assert info.format == "matroska,webm"
    assert info.duration_s == pytest.approx(62.5)
    assert info.bitrate_kbps == 1234
    assert info.tags == {"title": "first line\nsecond line", "ENCODER": "Lavf60.3.100"}
    (v,) = info.video
    assert (v.width, v.height, v.fps, v.pix_fmt, v.codec) == (3840, 2160, 29.97, "yuv420p10le", "hevc")
    assert [(a.codec, a.sample_rate, a.channels) for a in info.audio] == [
        ("eac3", 48000, 6),
        ("pcm_s16le", 8000, 3),
    ]
    assert info.audio[0].channel_layout == "5.1(side)"


def test_parse_rejects_output_without_input_section() -> None:
    with pytest.raises(MediaProbeError, match=r"x\.bin"):
        parse_ffmpeg_info("x.bin", "x.bin: Invalid data found when processing input\n")
