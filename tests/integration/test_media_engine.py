"""The media engine against the real ffmpeg (imageio-ffmpeg's static binary) and PyAV, on clips of a few seconds
at 320x180: runner, probing, normalization, music fitting, assembly (copy and encode), loudness, ducking,
subtitles that really render, exact last frames, and bad input named before any encode."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import av
import numpy as np
import pytest

from reelforge.media import (
    AudioTarget,
    BeatSnap,
    Clip,
    Cue,
    CueOutOfRange,
    DialogueLine,
    FFmpegError,
    FFmpegTimeout,
    FontUnavailable,
    FpsMismatch,
    InvalidInputs,
    MediaCheckFailed,
    MediaInputError,
    MediaProbeError,
    MissingStream,
    MusicBed,
    MusicTooShort,
    Progress,
    SilentAudio,
    SubtitleStyle,
    Timeline,
    Transition,
    VideoTarget,
    assemble,
    fit_music,
    last_frame,
    measure_loudness,
    moov_before_mdat,
    normalize_clip,
    probe,
    run_ffmpeg,
    run_job,
)
from reelforge.media.frames import rgb
from reelforge.media.synth import beat_track, sample_clip, tone, write_wav

SIZE = (320, 180)
SMALL = VideoTarget(width=SIZE[0], height=SIZE[1])


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("engine")
    sample_clip(d / "a.mp4", seconds=2.5, source="testsrc2", audio_hz=330)
    sample_clip(d / "b.mp4", seconds=2.5, source="smptebars", audio_hz=None)  # no audio stream
    sample_clip(d / "c.mp4", seconds=2.5, source="mandelbrot", audio_hz=550)
    sample_clip(d / "black.mp4", seconds=3.0, source="color=c=black", audio_hz=None)
    sample_clip(d / "odd.mp4", seconds=1.0, size=(200, 200), fps="30", audio_hz=None,
                extra=["-vf", "setsar=4/3"])  # fmt: skip
    sample_clip(d / "fast.mp4", seconds=2.0, fps="30", audio_hz=440)
    x, _ = beat_track(120, 4.0, rate=48000, hats=True, bed=True)
    write_wav(d / "music.wav", x * 0.5, 48000)
    write_wav(d / "voice.wav", tone(300, 2.0, level_db=-6), 48000)
    write_wav(d / "silent.wav", np.zeros(48000, dtype=np.float32), 48000)
    write_wav(d / "empty.wav", np.zeros(0, dtype=np.float32), 48000)
    write_wav(d / "blip.wav", beat_track(120, 0.2, rate=48000)[0], 48000)  # shorter than one beat at 240 BPM
    (d / "garbage.mp4").write_bytes(np.random.default_rng(0).bytes(20000))
    data = (d / "a.mp4").read_bytes()
    (d / "truncated.mp4").write_bytes(data[: len(data) // 2])
    return d


def _frame(path: Path, index: int) -> np.ndarray:
    with av.open(str(path)) as container:
        for k, frame in enumerate(container.decode(video=0)):
            if k == index:
                return np.asarray(rgb(frame), dtype=np.int16)
    raise AssertionError(f"{path} has no frame {index}")


def _band_rms(path: Path, lo_s: float, hi_s: float, freq: float) -> float:
    """RMS (dB) of the output's sound near ``freq`` Hz between two times (an FFT band, +-15%)."""
    with av.open(str(path)) as container:
        chunks = [f.to_ndarray().mean(axis=0) for f in container.decode(audio=0)]
        rate = container.streams.audio[0].rate
    x = np.concatenate(chunks)[int(lo_s * rate) : int(hi_s * rate)]
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size))) ** 2
    freqs = np.fft.rfftfreq(x.size, 1 / rate)
    band = spec[(freqs > freq * 0.85) & (freqs < freq * 1.15)].sum()
    return float(10 * np.log10(band + 1e-20))


# ------------------------------------------------------------------------------------------------------- runner


def test_runner_reports_progress_and_names_the_input_in_errors(media: Path, tmp_path: Path) -> None:
    seen: list[Progress] = []
    out = tmp_path / "x.mp4"
    args = ["-y", "-i", media / "a.mp4", "-c:v", "libx264", "-preset", "ultrafast", "-an", out]
    result = run_job(args, input_path=media / "a.mp4", total_s=2.5, progress=seen.append)
    assert seen and seen[-1].done and seen[-1].fraction == 1.0 and result.last is not None
    assert seen[-1].frame == 60 and result.wall_s > 0
    with pytest.raises(FFmpegError) as err:
        run_job(["-i", media / "garbage.mp4", "-f", "null", "-"], input_path=media / "garbage.mp4")
    assert err.value.path == str(media / "garbage.mp4") and err.value.returncode != 0
    assert "Invalid data" in err.value.ffmpeg_message and "garbage.mp4" in str(err.value)


def test_runner_kills_at_the_deadline_and_when_the_callback_raises(tmp_path: Path) -> None:
    endless = ["-re", "-f", "lavfi", "-i", "sine", "-f", "null", "-"]
    started = time.monotonic()
    with pytest.raises(FFmpegTimeout) as slow:
        run_job(endless, input_path="lavfi:sine", timeout=0.6)
    assert slow.value.timeout == 0.6 and time.monotonic() - started < 5 and "lavfi:sine" in str(slow.value)

    class Stop(Exception):
        pass

    def stop(p: Progress) -> None:
        raise Stop

    started = time.monotonic()
    with pytest.raises(Stop):
        run_job(endless, progress=stop)
    assert time.monotonic() - started < 5


# ------------------------------------------------------------------------------------------------------ probing


def test_pyav_probe_reads_exact_frames_tags_and_refuses_what_is_not_media(media: Path) -> None:
    info = probe(media / "a.mp4")
    v, a = info.video[0], info.audio[0]
    assert (v.frame_count, v.fps_rational, v.pix_fmt, v.width) == (60, "24/1", "yuv420p", 320)
    assert (a.codec, a.sample_rate, a.channels) == ("aac", 44100, 2)
    assert probe(media / "odd.mp4").video[0].sar == "4:3"
    (media / "zero.mp4").write_bytes(b"")
    for name, words in (("garbage.mp4", "not recognise"), ("nope.mp4", "no such file"), ("zero.mp4", "empty file")):
        with pytest.raises(MediaProbeError, match=f"{name}: .*{words}"):
            probe(media / name)


# ------------------------------------------------------------------------------------------ normalize and fit


def test_normalize_makes_clips_that_join_by_stream_copy(media: Path, tmp_path: Path) -> None:
    # 200x200 at 30 fps, SAR 4:3, no audio -> 320x180, 24 fps, yuv420p, SAR 1:1, BT.709, 48 kHz stereo silence
    target = VideoTarget(width=320, height=180, fps=24)
    one = normalize_clip(media / "odd.mp4", tmp_path / "n1.mp4", video=target)
    v, a = one.video[0], one.audio[0]
    assert (v.width, v.height, v.fps_rational, v.pix_fmt, v.sar, v.color_space) == (
        320, 180, "24/1", "yuv420p", "1:1", "bt709",
    )  # fmt: skip
    assert v.frame_count == 24 and (a.sample_rate, a.channels) == (48000, 2)
    assert not list(tmp_path.glob(".*tmp*"))  # the temporary file was moved into place
    normalize_clip(media / "c.mp4", tmp_path / "n2.mp4", video=target, in_s=0.5, out_s=2.0)
    assert probe(tmp_path / "n2.mp4").frame_count == 36
    result = assemble(
        Timeline(clips=[Clip(path=str(tmp_path / "n1.mp4")), Clip(path=str(tmp_path / "n2.mp4"))], video=SMALL),
        tmp_path / "out",
    )
    assert result.video_mode == "copy" and result.frames == 60 and result.report.frames == 60
    # the padded picture: black bars left and right of the square clip, the picture in the middle
    frame = _frame(result.video, 10)
    assert frame[:, :36].max() < 30 and frame[:, -36:].max() < 30 and frame[:, 100:220].std() > 20


def test_music_is_fitted_to_the_exact_sample_count(media: Path, tmp_path: Path) -> None:
    looped = fit_music(media / "music.wav", tmp_path / "long.wav", duration_s=9.37)
    trimmed = fit_music(media / "music.wav", tmp_path / "short.wav", duration_s=1.234, offset_s=0.5)
    assert (looped, trimmed) == (round(9.37 * 48000), round(1.234 * 48000))
    info = probe(tmp_path / "long.wav")
    assert info.audio[0].duration_s == pytest.approx(9.37, abs=1e-6)  # 0 ms of error
    with pytest.raises(SilentAudio, match=r"silent\.wav: is silent"):
        fit_music(media / "silent.wav", tmp_path / "x.wav", duration_s=2)


# -------------------------------------------------------------------------------------------------- assembly


def test_assembly_with_transitions_dialogue_music_loudness_and_burned_subtitles(media: Path, tmp_path: Path) -> None:
    cues = [Cue(start_s=0.5, end_s=2.0, text="안녕하세요 김민아"), Cue(start_s=3.0, end_s=5.5, text="Hello")]
    t = Timeline(
        clips=[Clip(path=str(media / "black.mp4"), out_s=2.5), Clip(path=str(media / "a.mp4")),
               Clip(path=str(media / "b.mp4"))],
        transitions=[Transition(kind="xfade", duration_s=0.5), Transition()],
        dialogue=[DialogueLine(path=str(media / "voice.wav"), start_s=2.5, text="line")],
        music=MusicBed(path=str(media / "music.wav"), gain_db=-6, fade_in_s=0.2, fade_out_s=0.5),
        cues=cues, video=SMALL, subtitles=SubtitleStyle(burn=True),
    )  # fmt: skip
    stages: list[str] = []
    result = assemble(t, tmp_path, name="film", progress=lambda stage, _f: stages.append(stage))
    # 2.5 + 2.5 - 0.5 + 2.5 s = 7.0 s: 168 frames, exactly, picture and sound
    assert (result.frames, result.duration_s, result.video_mode) == (168, 7.0, "encode")
    r = result.report
    assert r.frames == 168 and abs(r.video_duration_s - 7.0) < 1 / 24 and abs(r.audio_duration_s - 7.0) < 1 / 24
    assert r.faststart and moov_before_mdat(result.video)
    # loudness measured again here, with ebur128 on the file (not loudnorm's report)
    loud = measure_loudness(result.video)
    assert abs(loud.integrated + 14.0) <= 0.5 and loud.true_peak <= -1.0 and result.normalization == "linear"
    info = probe(result.video)
    assert (info.video[0].codec, info.video[0].color_space, info.audio[0].profile) == ("h264", "bt709", "LC")
    assert (info.audio[0].sample_rate, info.audio[0].channels, info.subtitles) == (48000, 2, 1)
    # the burned cue shows on the black scene while it is on, and nothing is there before it
    lower = slice(int(SIZE[1] * 0.6), SIZE[1])
    assert (_frame(result.video, 24)[lower].mean(axis=2) > 100).sum() > 40  # 1.0 s: "안녕하세요 김민아"
    assert (_frame(result.video, 2)[lower].mean(axis=2) > 100).sum() == 0  # 0.08 s: no cue yet
    # the files beside it: SRT, poster, exact last frame, timeline picture; no work folder is left
    assert "안녕하세요 김민아" in result.srt.read_text(encoding="utf-8") and "00:00:03,000 --> 00:00:05,500" in (
        result.srt.read_text(encoding="utf-8")
    )
    assert np.abs(np.asarray(_png(result.last_frame), np.int16) - _frame(result.video, 167)).max() <= 2
    assert _png(result.timeline_png).size[0] == 1600 and _png(result.poster).size == SIZE
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert stages[0] == "inspect" and stages[-1] == "done" and "verify" in stages


def _png(path: Path):  # type: ignore[no-untyped-def]
    from PIL import Image

    return Image.open(path).convert("RGB")


def test_music_is_ducked_under_the_voice(media: Path, tmp_path: Path) -> None:
    x, _ = beat_track(120, 6.0, rate=48000)
    t6 = np.arange(x.size) / 48000
    music = x * 0.3 + 0.3 * np.sin(2 * np.pi * 2000 * t6)  # a steady 2 kHz line to measure the music by
    write_wav(tmp_path / "m.wav", music, 48000)
    t = Timeline(
        clips=[Clip(path=str(media / "black.mp4")), Clip(path=str(media / "b.mp4"), out_s=2.0)],
        dialogue=[DialogueLine(path=str(media / "voice.wav"), start_s=2.0)],
        music=MusicBed(path=str(tmp_path / "m.wav"), gain_db=-6, fade_in_s=0, fade_out_s=0),
        video=SMALL, audio=AudioTarget(loudness_lufs=-23),  # broadcast (EBU R128)
    )  # fmt: skip
    result = assemble(t, tmp_path / "out")
    loud = measure_loudness(result.video)
    assert abs(loud.integrated + 23.0) <= 0.5 and loud.true_peak <= -1.0
    under = _band_rms(result.video, 2.3, 3.8, 2000)  # the voice (300 Hz) speaks from 2.0 to 4.0 s
    free = _band_rms(result.video, 0.3, 1.8, 2000)
    assert free - under > 6.0  # the music is at least 6 dB lower while the voice speaks
    assert _band_rms(result.video, 2.3, 3.8, 300) - _band_rms(result.video, 0.3, 1.8, 300) > 20


def test_cuts_snap_to_beats_and_the_total_stays_exact(media: Path, tmp_path: Path) -> None:
    x, _ = beat_track(100, 8.0, rate=48000, accent=True)  # a beat every 0.6 s
    write_wav(tmp_path / "m.wav", x * 0.5, 48000)
    t = Timeline(
        clips=[Clip(path=str(media / "a.mp4"), out_s=1.9), Clip(path=str(media / "c.mp4"), out_s=1.9),
               Clip(path=str(media / "a.mp4"), in_s=0.3, out_s=2.2)],
        music=MusicBed(path=str(tmp_path / "m.wav")), video=SMALL,
        beat_snap=BeatSnap(enabled=True, tolerance_s=0.35, min_scene_s=1.0),
    )  # fmt: skip
    result = assemble(t, tmp_path / "out")
    assert result.frames == 3 * round(1.9 * 24) and result.report.frames == result.frames
    snap = result.snap
    assert snap is not None and all(snap.snapped) and result.bpm == pytest.approx(100, rel=0.005)
    for frame in snap.after:  # each cut within one frame of a beat (k * 0.6 s)
        assert min(abs(frame / 24 - k * 0.6) for k in range(14)) <= 1 / 24
    assert snap.after != snap.before and max(e or 0 for e in snap.errors_ms) <= 1000 / 24


def test_nothing_is_moved_into_place_when_the_result_is_wrong(
    media: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import reelforge.media.assembly as assembly

    def wrong(path: Path, expect: object, **_: object) -> None:
        raise MediaCheckFailed("the output is not what was planned: has 1 frames, not 60", path=path)

    monkeypatch.setattr(assembly, "verify_output", wrong)
    with pytest.raises(MediaCheckFailed, match="not 60"):
        assemble(Timeline(clips=[Clip(path=str(media / "a.mp4"))], video=SMALL), tmp_path)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------ frames


def test_the_last_frame_is_exact_and_lossless(media: Path, tmp_path: Path) -> None:
    grab = last_frame(media / "a.mp4", tmp_path / "last.png")
    assert (grab.index, grab.width, grab.height) == (59, 320, 180)
    got = np.asarray(_png(grab.path), np.int16)
    assert np.abs(got - _frame(media / "a.mp4", 59)).max() == 0  # the decoded frame itself, no re-encode
    before = _frame(media / "a.mp4", 58)  # what ``-sseof -0.1 -frames:v 1`` returns (media-facts)
    assert np.abs(got - before).mean() > 1
    # ffmpeg's own last frame (-sseof -1 -update 1) is this one: its RGB conversion differs by a few levels
    # (swscale's chroma filter), far less than the previous frame does
    run_ffmpeg(["-y", "-sseof", "-1", "-i", media / "a.mp4", "-update", "1", tmp_path / "ff.png"])
    theirs = np.asarray(_png(tmp_path / "ff.png"), np.int16)
    assert np.abs(got - theirs).mean() < 0.5 * np.abs(before - theirs).mean()


# ------------------------------------------------------------------------------------------------ bad input


def test_every_bad_input_is_named_before_any_encode(media: Path, tmp_path: Path) -> None:
    t = Timeline(
        clips=[Clip(path=str(media / "garbage.mp4")), Clip(path=str(media / "truncated.mp4")),
               Clip(path=str(media / "voice.wav"))],
        dialogue=[DialogueLine(path=str(media / "silent.wav"), start_s=0), DialogueLine(path=str(media / "empty.wav"),
                                                                                     start_s=0)],
        music=MusicBed(path=str(media / "blip.wav")), video=SMALL,
    )  # fmt: skip
    started = time.monotonic()
    with pytest.raises(InvalidInputs) as err:
        assemble(t, tmp_path)
    assert time.monotonic() - started < 10 and list(tmp_path.iterdir()) == []
    by_file = {Path(p.path or "").name: p for p in err.value.problems}
    assert isinstance(by_file["garbage.mp4"], MediaProbeError)
    assert isinstance(by_file["truncated.mp4"], MediaProbeError) and "truncated" in str(by_file["truncated.mp4"])
    assert isinstance(by_file["voice.wav"], MissingStream) and by_file["voice.wav"].stream == "video"
    assert isinstance(by_file["silent.wav"], SilentAudio) and "silent" in str(by_file["silent.wav"])
    assert isinstance(by_file["empty.wav"], MediaInputError)
    assert isinstance(by_file["blip.wav"], MusicTooShort) and "one beat" in str(by_file["blip.wav"])
    for problem in err.value.problems:
        assert str(problem).startswith(str(media)), problem  # "<file>: <what is wrong>"


def test_fps_mismatch_cue_outside_and_fonts(media: Path, tmp_path: Path) -> None:
    clips = [Clip(path=str(media / "a.mp4")), Clip(path=str(media / "fast.mp4"))]
    with pytest.raises(FpsMismatch, match=r"fast\.mp4: runs at 30\.000 fps"):
        assemble(Timeline(clips=clips, video=SMALL), tmp_path)
    with pytest.raises(CueOutOfRange, match=r"cue 0 .* outside the video"):
        assemble(Timeline(clips=clips[:1], cues=[Cue(start_s=2, end_s=9, text="late")], video=SMALL), tmp_path)
    missing = tmp_path / "nope.ttf"
    style = SubtitleStyle(burn=True, font=str(missing))
    with pytest.raises(FontUnavailable, match=r"nope\.ttf: no such font file"):
        assemble(Timeline(clips=clips[:1], cues=[Cue(start_s=0, end_s=1, text="hi")], video=SMALL, subtitles=style),
                 tmp_path)  # fmt: skip
    # The Latin-only font of the same family cannot draw Hangul: named with the characters, before encoding
    from reelforge.media.subtitles import shipped_font

    latin = shipped_font().with_name("KurintoSans-Rg.ttf")
    style = SubtitleStyle(burn=True, font=str(latin))
    with pytest.raises(FontUnavailable) as err:
        assemble(Timeline(clips=clips[:1], cues=[Cue(start_s=0, end_s=1, text="김민아")], video=SMALL,
                          subtitles=style), tmp_path)  # fmt: skip
    assert set(err.value.missing) == set("김민아") and "cue 0" in str(err.value)
    # A file that is not a font at all
    shutil.copyfile(media / "voice.wav", tmp_path / "bad.ttf")
    with pytest.raises(FontUnavailable, match="not a readable"):
        assemble(Timeline(clips=clips[:1], cues=[Cue(start_s=0, end_s=1, text="hi")], video=SMALL,
                          subtitles=SubtitleStyle(burn=True, font=str(tmp_path / "bad.ttf"))), tmp_path)  # fmt: skip
    assert not list(tmp_path.glob("*.mp4"))
