"""Pure builders of the media engine: plans and ffmpeg argument lists, checked without running anything."""

from __future__ import annotations

from fractions import Fraction

import pytest

from reelforge.media.errors import CueOutOfRange, FpsMismatch, InvalidInputs, MissingStream, TimelineInvalid
from reelforge.media.graph import (
    alimiter_limit,
    audio_final_args,
    concat_copy_args,
    concat_list,
    loudness_args,
    mix_args,
    music_fit_args,
    mux_args,
    video_encode_args,
)
from reelforge.media.loudness import Loudness, limiter_plan, parse_ebur128, parse_loudnorm_json
from reelforge.media.plan import make_plan
from reelforge.media.probe_types import AudioStream, MediaInfo, VideoStream
from reelforge.media.timeline import (
    Clip,
    Cue,
    DialogueLine,
    Ducking,
    MusicBed,
    SubtitleStyle,
    Timeline,
    Transition,
    VideoTarget,
    parse_fps,
)


def clip_info(path: str, *, frames: int = 120, fps: str = "24/1", size: tuple[int, int] = (1280, 720),
              audio: bool = True, tagged: bool = True, extradata: str = "x") -> MediaInfo:  # fmt: skip
    rate = Fraction(fps)
    video = VideoStream(
        index=0, codec="h264", width=size[0], height=size[1], fps=float(rate), fps_rational=fps, pix_fmt="yuv420p",
        frame_count=frames, duration_s=float(frames / rate), sar="1:1", color_space="bt709" if tagged else None,
        extradata_sha256=extradata,
    )  # fmt: skip
    streams = [AudioStream(index=1, codec="aac", sample_rate=48000, channels=2, duration_s=float(frames / rate))]
    seconds = float(frames / rate)
    return MediaInfo(path=path, format="mp4", duration_s=seconds, video=[video], audio=streams if audio else [])


def audio_info(path: str, seconds: float) -> MediaInfo:
    a = AudioStream(index=0, codec="pcm_s16le", sample_rate=24000, channels=1, duration_s=seconds)
    return MediaInfo(path=path, format="wav", duration_s=seconds, audio=[a])


INFOS = {f"c{i}.mp4": clip_info(f"c{i}.mp4") for i in range(3)} | {
    "line.wav": audio_info("line.wav", 2.0),
    "music.wav": audio_info("music.wav", 12.0),
}


def timeline(**kw: object) -> Timeline:
    base: dict[str, object] = {"clips": [Clip(path=f"c{i}.mp4") for i in range(3)]}
    base.update(kw)
    return Timeline.model_validate(base)


def test_fps_parsing_is_exact() -> None:
    assert parse_fps(24) == 24 and parse_fps("30000/1001") == Fraction(30000, 1001)
    assert parse_fps(29.97) == Fraction(30000, 1001) and parse_fps("25") == 25
    with pytest.raises(ValueError):
        parse_fps(0)


def test_plan_counts_whole_frames_and_samples() -> None:
    t = timeline(clips=[Clip(path="c0.mp4", in_s=0.5, out_s=3.0), Clip(path="c1.mp4"), Clip(path="c2.mp4", out_s=2)],
                 transitions=[Transition(kind="xfade", duration_s=0.5), Transition()])  # fmt: skip
    plan = make_plan(t, INFOS)
    assert [(s.in_frame, s.frames, s.start) for s in plan.scenes] == [(12, 60, 0), (0, 120, 48), (0, 48, 168)]
    assert plan.overlaps == [12, 0] and plan.total_frames == 216
    assert plan.duration_s == 9.0 and plan.samples == 9 * 48000
    assert plan.video_mode == "encode" and "transitions" in plan.copy_reason
    assert plan.boundary_frames() == [54.0, 168.0]


def test_matching_whole_clips_are_joined_by_copy_and_anything_else_is_encoded() -> None:
    assert make_plan(timeline(), INFOS).video_mode == "copy"
    reasons = {
        "burn": make_plan(timeline(subtitles=SubtitleStyle(burn=True)), INFOS).copy_reason,
        "xfade": make_plan(
            timeline(transitions=[Transition(kind="xfade", duration_s=0.5), Transition()]), INFOS
        ).copy_reason,
        "size": make_plan(timeline(video=VideoTarget(width=640, height=360)), INFOS).copy_reason,
    }
    untagged = INFOS | {"c1.mp4": clip_info("c1.mp4", tagged=False)}
    other_encoder = INFOS | {"c2.mp4": clip_info("c2.mp4", extradata="y")}
    reasons["untagged"] = make_plan(timeline(), untagged).copy_reason
    reasons["encoder"] = make_plan(timeline(), other_encoder).copy_reason
    assert "burned" in reasons["burn"] and "transitions" in reasons["xfade"] and "640x360" in reasons["size"]
    assert "c1.mp4 is not tagged BT.709" in reasons["untagged"] and "SPS/PPS" in reasons["encoder"]


def test_plan_reports_every_problem_naming_its_file() -> None:
    infos = INFOS | {"c1.mp4": clip_info("c1.mp4", frames=24)}
    t = timeline(
        clips=[Clip(path="c0.mp4"), Clip(path="c1.mp4", out_s=3.0), Clip(path="c2.mp4")],
        dialogue=[DialogueLine(path="line.wav", start_s=13.5)],
        cues=[Cue(start_s=1, end_s=2, text="ok"), Cue(start_s=12.5, end_s=14, text="late")],
    )
    with pytest.raises(TimelineInvalid, match=r"c1\.mp4: scene 1 needs frames 0\.\.72"):
        make_plan(t, infos)
    t = timeline(dialogue=[DialogueLine(path="line.wav", start_s=13.5)],
                 cues=[Cue(start_s=1, end_s=2, text="ok"), Cue(start_s=14.5, end_s=15.5, text="late")])  # fmt: skip
    with pytest.raises(InvalidInputs) as several:
        make_plan(t, INFOS)
    kinds = {type(p): p for p in several.value.problems}
    assert kinds[CueOutOfRange].path == "line.wav" or "cue 1" in str(several.value)
    cue = next(p for p in several.value.problems if isinstance(p, CueOutOfRange) and p.path == "cue 1")
    assert (cue.index, cue.start_s, cue.video_s) == (1, 14.5, 15.0)
    assert "past the end of the video at 15.000 s" in str(several.value)


def test_mismatched_fps_is_refused_unless_a_target_rate_converts() -> None:
    infos = INFOS | {"c2.mp4": clip_info("c2.mp4", fps="30/1", frames=150)}
    with pytest.raises(FpsMismatch, match=r"c2\.mp4: runs at 30\.000 fps while c0\.mp4 runs at 24\.000") as err:
        make_plan(timeline(), infos)
    assert (err.value.fps, err.value.expected) == (30.0, 24.0)
    plan = make_plan(timeline(video=VideoTarget(fps=24)), infos)
    assert plan.scenes[2].convert_fps and plan.scenes[2].frames == 120 and plan.video_mode == "encode"


def test_no_video_stream_and_transitions_longer_than_scenes() -> None:
    infos = INFOS | {"c1.mp4": audio_info("c1.mp4", 5.0)}
    with pytest.raises(MissingStream, match=r"c1\.mp4: has no video stream") as err:
        make_plan(timeline(), infos)
    assert err.value.stream == "video"
    t = timeline(clips=[Clip(path="c0.mp4", out_s=1), Clip(path="c1.mp4")],
                 transitions=[Transition(kind="xfade", duration_s=2)])  # fmt: skip
    with pytest.raises(TimelineInvalid, match="longer than the scenes"):
        make_plan(t, INFOS)


def test_video_graph_trims_exact_frames_and_crossfades_at_frame_offsets() -> None:
    t = timeline(
        clips=[Clip(path="c0.mp4", in_s=0.5, out_s=3.0), Clip(path="c1.mp4"), Clip(path="c2.mp4", out_s=2)],
        transitions=[Transition(kind="xfade", duration_s=0.5, style="wipeleft"), Transition()],
        video=VideoTarget(width=640, height=360, fit="crop"),
    )
    args = video_encode_args(make_plan(t, INFOS), t.video, "out.mp4", subtitles="burn.ass", fonts_dir="fonts")
    graph = args[args.index("-filter_complex") + 1]
    assert "trim=end_frame=72:start_frame=12" in graph and "trim=end_frame=48:start_frame=0" in graph
    assert "xfade=duration=0.500000:offset=2.000000:transition=wipeleft" in graph
    assert "concat=a=0:n=2:v=1" in graph and "crop=640:360" in graph and "force_original_aspect_ratio=increase" in graph
    assert "subtitles=filename=burn.ass:fontsdir=fonts" in graph and "out_color_matrix=bt709" in graph
    assert args[:1] == ["-y"] and args[-1] == "out.mp4" and "-an" in args
    assert args[args.index("-colorspace") + 1] == "bt709" and args[args.index("-pix_fmt") + 1] == "yuv420p"
    assert args.count("-i") == 3  # one input per file


def test_pad_policy_and_a_clip_used_twice_reads_its_file_once() -> None:
    infos = INFOS | {"wide.mp4": clip_info("wide.mp4", size=(1920, 800))}
    t = timeline(clips=[Clip(path="wide.mp4", out_s=1), Clip(path="wide.mp4", in_s=2, out_s=3)])
    args = video_encode_args(make_plan(t, infos), t.video, "o.mp4")
    graph = args[args.index("-filter_complex") + 1]
    assert args.count("-i") == 1 and "[0:v]split=2" in graph and "pad=1280:720:(ow-iw)/2:(oh-ih)/2" in graph
    assert "force_original_aspect_ratio=decrease" in graph


def test_concat_list_escapes_quotes_and_copies_the_picture_only() -> None:
    text = concat_list(["/media/it's.mp4", "/media/b.mp4"])
    assert text == "file '/media/it'\\''s.mp4'\nfile '/media/b.mp4'\n"
    args = concat_copy_args("list.txt", "out.mp4")
    assert args[args.index("-f") + 1] == "concat" and args[args.index("-c") + 1] == "copy" and "-an" in args


def test_sound_graph_places_lines_by_sample_fits_music_exactly_and_ducks() -> None:
    t = timeline(dialogue=[DialogueLine(path="line.wav", start_s=2.5, gain_db=-3)], music=MusicBed(path="music.wav"))
    plan = make_plan(t, INFOS)
    assert plan.music is not None and plan.music.loop  # 12 s of music under 15 s of video
    args = mix_args(plan, "mix.wav", ducking=Ducking(), music_level="level.wav")
    graph = args[args.index("-filter_complex") + 1]
    assert "adelay=all=1:delays=120000S" in graph and "volume=-3.0dB" in graph
    assert "sidechaincompress=attack=20.0:makeup=1:ratio=8.0:release=400.0:threshold=0.02" in graph
    assert f"apad=whole_len={15 * 48000}" in graph and f"atrim=end_sample={15 * 48000}" in graph
    assert "afade=d=1.500000:st=13.500000:t=out" in graph and "ebur128=framelog=verbose:peak=true" in graph
    assert args[args.index("music.wav") - 2 : args.index("music.wav")] == ["-1", "-i"]  # -stream_loop -1
    assert "-shortest" not in args and "amix=duration=longest:inputs=3:normalize=0" in graph
    assert args[-1] == "level.wav" and args[args.index("level.wav") - 1] == "pcm_s16le"


def test_clips_without_sound_get_exact_silence() -> None:
    infos = INFOS | {"c1.mp4": clip_info("c1.mp4", audio=False)}
    graph = mix_args(make_plan(timeline(), infos), "m.wav", ducking=Ducking())
    assert "anullsrc=r=48000:cl=stereo" in " ".join(graph) and "atrim=end_sample=240000" in " ".join(graph)


def test_music_fit_is_exact_and_never_uses_shortest() -> None:
    args = music_fit_args("m.wav", "o.wav", samples=480000, sample_rate=48000, channels=2, loop=True, offset_s=1.0,
                          fade_in_s=0.5, fade_out_s=2.0)  # fmt: skip
    chain = args[args.index("-af") + 1]
    assert args[1:3] == ["-stream_loop", "-1"] and "-shortest" not in args
    assert "atrim=start_sample=48000" in chain and "apad=whole_len=480000,atrim=end_sample=480000" in chain
    assert "afade=t=out:st=8.000000:d=2.000000" in chain


def test_loudness_plan_adds_a_limiter_only_when_peaks_would_not_fit() -> None:
    quiet = Loudness(integrated=-24.0, threshold=-34.0, lra=5.0, true_peak=-12.0)
    plan = limiter_plan(quiet, target_lufs=-14, true_peak_db=-1)
    assert plan.gain_db == 10 and plan.limit_db is None and plan.ceiling_db == -1.5
    assert plan.fits(quiet.shifted(plan.gain_db), -14)
    peaky = Loudness(integrated=-24.0, threshold=-34.0, lra=9.0, true_peak=-3.0)
    plan = limiter_plan(peaky, target_lufs=-14, true_peak_db=-1)
    assert plan.limit_db == pytest.approx(-2.3) and not plan.fits(peaky.shifted(plan.gain_db), -14)
    assert alimiter_limit(-2.3) == pytest.approx(0.767, abs=1e-3) and alimiter_limit(-40) == 0.0625
    chain = loudness_args("mix.wav", gain_db=10, limit_db=-2.3)
    assert "volume=10.000dB,alimiter=limit=0.767361:attack=5:release=50:level=disabled:latency=1" in chain[5]


def test_second_pass_is_linear_loudnorm_then_exact_length_aac() -> None:
    plan = make_plan(timeline(), INFOS)
    measured = {"I": -14.2, "LRA": 6.0, "TP": -2.0, "thresh": -24.3}
    args = audio_final_args("mix.wav", "a.m4a", plan=plan, target_lufs=-14, target_tp=-1.5, measured=measured,
                            gain_db=3.0, limit_db=-2.3)  # fmt: skip
    chain = args[args.index("-af") + 1]
    assert "loudnorm=I=-14:TP=-1.5:LRA=50:measured_I=-14.20:measured_LRA=6.00:measured_TP=-2.00" in chain
    assert "linear=true" in chain and chain.endswith("aresample=48000,apad=whole_len=720000,atrim=end_sample=720000")
    assert args[args.index("-profile:a") + 1] == "aac_low" and args[args.index("-c:a") + 1] == "aac"
    silent = audio_final_args("mix.wav", "a.m4a", plan=plan, target_lufs=-14, target_tp=-1, measured=None)
    assert "loudnorm" not in " ".join(silent)


def test_mux_copies_streams_adds_soft_subtitles_and_moves_moov_first() -> None:
    args = mux_args("v.mp4", "a.m4a", "out.mp4", srt="s.srt", language="kor")
    assert args[args.index("-movflags") + 1] == "+faststart" and args.count("-i") == 3
    assert "mov_text" in args and "language=kor" in args and args[args.index("-c:v") + 1] == "copy"


EBUR128 = """[Parsed_ebur128_0 @ 0x1] Summary:

  Integrated loudness:
    I:         -20.5 LUFS
    Threshold: -30.5 LUFS

  Loudness range:
    LRA:         0.5 LU
    Threshold: -40.5 LUFS
    LRA low:   -20.8 LUFS
    LRA high:  -20.2 LUFS

  True peak:
    Peak:       -9.5 dBFS
"""


def test_parse_ebur128_and_loudnorm_reports() -> None:
    loud = parse_ebur128("noise\n" + EBUR128)
    assert (loud.integrated, loud.threshold, loud.lra, loud.true_peak) == (-20.5, -30.5, 0.5, -9.5)
    silent = parse_ebur128(EBUR128.replace("-20.5 LUFS", "-70.0 LUFS").replace("-9.5 dBFS", "-inf dBFS"))
    assert silent.silent and silent.true_peak == float("-inf")
    with pytest.raises(ValueError):
        parse_ebur128("no summary here")
    log = '[Parsed_loudnorm_0 @ 0x1]\n{\n\t"input_i" : "-20.50",\n\t"normalization_type" : "linear"\n}'
    report = parse_loudnorm_json(log)
    assert report["normalization_type"] == "linear"


def test_refining_the_limiter_steps_the_gain_by_the_measured_slope_and_lowers_a_limit_that_overshoots() -> None:
    from reelforge.media.loudness import LoudnessPlan, refine_plan

    start = LoudnessPlan(gain_db=11.2, limit_db=-2.3, ceiling_db=-1.5)
    # peaks 1 dB over the limit (inter-sample overshoot) and over the ceiling: the limit comes down by the excess
    first = refine_plan(start, Loudness(-15.4, -25.4, 8.2, -1.3), target_lufs=-14)
    assert first is not None and first.limit_db == pytest.approx(-2.3 - (-1.3 - (-1.55 - 0.2)) - 0.1)
    assert first.gain_db == pytest.approx(12.6)  # the limit changed: a plain step of what is missing
    # same limit, 1.4 dB more gain gave 0.5 LU more: the next step is what is missing over that slope
    second_measure = Loudness(-14.9, -24.9, 7.0, -1.9)
    earlier = (LoudnessPlan(11.2, first.limit_db, -1.5), Loudness(-15.4, -25.4, 8.2, -1.9))
    again = refine_plan(first, second_measure, target_lufs=-14, previous=earlier)
    assert again is not None and again.limit_db == first.limit_db
    assert again.gain_db == pytest.approx(12.6 + 0.9 / (0.5 / 1.4))
    # within 0.2 LU and the peak still under the ceiling after loudnorm's last bit of gain: done
    assert refine_plan(again, Loudness(-14.1, -24.1, 6.0, -1.9), target_lufs=-14) is None
    assert refine_plan(again, Loudness(-14.1, -24.1, 6.0, -1.5), target_lufs=-14) is not None
