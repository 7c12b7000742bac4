"""The preview worker's node implementations, run directly with an ExecContext over temporary folders."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from reelforge.media.errors import FFmpegError
from reelforge.media.ffmpeg import run_ffmpeg
from reelforge.media.probe import probe
from reelforge.preview.registry import (
    ExecContext,
    NodeInterrupted,
    NodeRegistry,
    NodeResult,
    Video,
    WorkerDirs,
    default_registry,
)

PROMPT = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 64}},
    "3": {"class_type": "SaveImage", "inputs": {}},
}
PNGINFO = {"workflow": {"nodes": [], "links": [], "version": 0.4}}


@pytest.fixture
def dirs(tmp_path: Path) -> WorkerDirs:
    d = WorkerDirs(tmp_path / "worker")
    d.create()
    return d


@pytest.fixture
def reg() -> NodeRegistry:
    return default_registry()


def ctx_for(dirs: WorkerDirs, **kw: Any) -> ExecContext:
    return ExecContext(prompt_id="p1", node_id="3", prompt=PROMPT, extra_pnginfo=PNGINFO, dirs=dirs, **kw)


def call(
    reg: NodeRegistry, name: str, dirs: WorkerDirs, ctx: ExecContext | None = None, **inputs: Any
) -> NodeResult:
    cls = reg.get(name)
    assert cls is not None, name
    return cls.run(ctx or ctx_for(dirs), inputs)


def empty(
    reg: NodeRegistry, dirs: WorkerDirs, w: int = 64, h: int = 48, color: int = 0, batch: int = 1
) -> np.ndarray:
    out: np.ndarray = call(reg, "EmptyImage", dirs, width=w, height=h, batch_size=batch, color=color).outputs[
        0
    ]
    return out


# -- image ------------------------------------------------------------------------------------------------


def test_empty_image_color_and_batch(reg: NodeRegistry, dirs: WorkerDirs) -> None:
    img = empty(reg, dirs, w=5, h=3, color=0x336699, batch=2)
    assert img.shape == (2, 3, 5, 3) and img.dtype == np.float32
    assert np.allclose(img[1, 2, 4], [51 / 255, 102 / 255, 153 / 255])


def test_invert_then_save_png_pixels_and_text_chunks(reg: NodeRegistry, dirs: WorkerDirs) -> None:
    inverted = call(reg, "ImageInvert", dirs, image=empty(reg, dirs, color=0x336699)).outputs[0]
    res = call(reg, "SaveImage", dirs, images=inverted, filename_prefix="probeA")
    assert res.outputs == ()
    assert res.ui == {"images": [{"filename": "probeA_00001_.png", "subfolder": "", "type": "output"}]}
    with Image.open(dirs.output / "probeA_00001_.png") as png:
        assert png.size == (64, 48)
        assert png.getpixel((10, 10)) == (204, 153, 101)  # ComfyUI truncates 255*x, it does not round
        assert json.loads(png.info["prompt"]) == PROMPT
        assert json.loads(png.info["workflow"]) == PNGINFO["workflow"]
    again = call(reg, "SaveImage", dirs, images=inverted, filename_prefix="probeA")
    assert again.ui is not None and again.ui["images"][0]["filename"] == "probeA_00002_.png"


def test_save_image_batch_subfolder_and_no_metadata_without_prompt(
    reg: NodeRegistry, dirs: WorkerDirs
) -> None:
    ctx = ExecContext(prompt_id="p", node_id="3", prompt={}, extra_pnginfo=None, dirs=dirs)
    res = call(reg, "SaveImage", dirs, ctx, images=empty(reg, dirs, batch=2), filename_prefix="shots/take")
    assert res.ui == {
        "images": [
            {"filename": "take_00001_.png", "subfolder": "shots", "type": "output"},
            {"filename": "take_00002_.png", "subfolder": "shots", "type": "output"},
        ]
    }
    with Image.open(dirs.output / "shots" / "take_00002_.png") as png:
        assert "workflow" not in png.info
    with pytest.raises(ValueError, match="outside the output folder"):
        call(reg, "SaveImage", dirs, images=empty(reg, dirs), filename_prefix="../escape")


def test_preview_image_goes_to_temp(reg: NodeRegistry, dirs: WorkerDirs) -> None:
    res = call(reg, "PreviewImage", dirs, images=empty(reg, dirs))
    assert res.ui is not None
    (entry,) = res.ui["images"]
    assert re.fullmatch(r"ComfyUI_temp_[a-z]{5}_00001_\.png", entry["filename"])
    assert entry["type"] == "temp" and entry["subfolder"] == ""
    assert (dirs.temp / entry["filename"]).is_file()


def test_load_image_rgba_mask_and_fingerprint(reg: NodeRegistry, dirs: WorkerDirs) -> None:
    rgba = np.zeros((6, 8, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[..., 3] = 51  # alpha 0.2 -> mask 0.8
    Image.fromarray(rgba, "RGBA").save(dirs.input / "a.png")
    image, mask = call(reg, "LoadImage", dirs, image="a.png").outputs
    assert image.shape == (1, 6, 8, 3) and np.allclose(image[0, 0, 0], [1, 0, 0])
    assert mask.shape == (1, 6, 8) and np.allclose(mask, 0.8)
    cls = reg.classes["LoadImage"]
    assert cls.fingerprint is not None
    before = cls.fingerprint(dirs, {"image": "a.png"})
    Image.fromarray(rgba[..., :3], "RGB").save(dirs.input / "a.png")
    after = cls.fingerprint(dirs, {"image": "a.png"})
    assert isinstance(before, str) and len(before) == 64 and before != after
    image, mask = call(reg, "LoadImage", dirs, image="a.png").outputs
    assert mask.shape == (1, 64, 64) and not mask.any()  # no alpha: ComfyUI's 64x64 zero mask


def test_load_image_subfolder_output_annotation_gif_and_combos(reg: NodeRegistry, dirs: WorkerDirs) -> None:
    (dirs.input / "sub").mkdir()
    Image.new("RGB", (3, 2), (0, 255, 0)).save(dirs.input / "sub" / "g.png")
    Image.new("RGB", (4, 4), (0, 0, 255)).save(dirs.output / "o.png")
    frames = [Image.new("RGB", (5, 5), (100 * i, 0, 0)) for i in range(3)]
    frames[0].save(dirs.input / "anim.gif", save_all=True, append_images=frames[1:])
    (dirs.input / "notes.txt").write_text("x")
    assert call(reg, "LoadImage", dirs, image="sub/g.png").outputs[0].shape == (1, 2, 3, 3)
    out = call(reg, "LoadImage", dirs, image="o.png [output]").outputs[0]
    assert np.allclose(out[0, 0, 0], [0, 0, 1])
    gif = call(reg, "LoadImage", dirs, image="anim.gif").outputs[0]
    assert gif.shape[0] == 3
    combos = reg.classes["LoadImage"].object_info(dirs)["input"]["required"]["image"][0]
    assert combos == ["anim.gif"]  # top-level image files only


@pytest.mark.parametrize("method", ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"])
def test_image_scale_methods(reg: NodeRegistry, dirs: WorkerDirs, method: str) -> None:
    img = empty(reg, dirs, w=8, h=4, color=0x808080)
    out = call(reg, "ImageScale", dirs, image=img, upscale_method=method, width=16, height=6, crop="disabled")
    scaled = out.outputs[0]
    assert scaled.shape == (1, 6, 16, 3)
    assert np.allclose(scaled, 128 / 255, atol=1 / 255)  # a flat colour stays flat


def test_image_scale_nearest_keeps_blocks_zero_side_and_center_crop(
    reg: NodeRegistry, dirs: WorkerDirs
) -> None:
    checker = np.zeros((1, 2, 2, 3), dtype=np.float32)
    checker[0, 0, 0] = checker[0, 1, 1] = 1.0
    up = call(
        reg,
        "ImageScale",
        dirs,
        image=checker,
        upscale_method="nearest-exact",
        width=4,
        height=4,
        crop="disabled",
    )
    assert np.array_equal(up.outputs[0][0, :, :, 0], np.kron([[1, 0], [0, 1]], np.ones((2, 2))))
    img = empty(reg, dirs, w=40, h=20)
    auto = call(
        reg, "ImageScale", dirs, image=img, upscale_method="bilinear", width=10, height=0, crop="disabled"
    )
    assert auto.outputs[0].shape == (1, 5, 10, 3)
    same = call(
        reg, "ImageScale", dirs, image=img, upscale_method="bilinear", width=0, height=0, crop="disabled"
    )
    assert same.outputs[0] is img
    stripes = np.zeros((1, 2, 4, 3), dtype=np.float32)
    stripes[:, :, 1:3] = 1.0  # the centre half is white
    cropped = call(
        reg,
        "ImageScale",
        dirs,
        image=stripes,
        upscale_method="nearest-exact",
        width=2,
        height=2,
        crop="center",
    )
    assert np.allclose(cropped.outputs[0], 1.0)  # the black edges were cropped away


def test_image_to_mask_channels_and_alpha_error(reg: NodeRegistry, dirs: WorkerDirs) -> None:
    img = empty(reg, dirs, w=4, h=2, color=0xFF0080)
    red = call(reg, "ImageToMask", dirs, image=img, channel="red").outputs[0]
    assert red.shape == (1, 2, 4) and np.allclose(red, 1.0)
    blue = call(reg, "ImageToMask", dirs, image=img, channel="blue").outputs[0]
    assert np.allclose(blue, 128 / 255)
    with pytest.raises(IndexError) as info:
        call(reg, "ImageToMask", dirs, image=img, channel="alpha")
    assert str(info.value) == "index 3 is out of bounds for dimension 3 with size 3"


def test_solid_mask_and_mask_to_image(reg: NodeRegistry, dirs: WorkerDirs) -> None:
    mask = call(reg, "SolidMask", dirs, value=0.25, width=7, height=3).outputs[0]
    assert mask.shape == (1, 3, 7) and np.allclose(mask, 0.25)
    image = call(reg, "MaskToImage", dirs, mask=mask).outputs[0]
    assert image.shape == (1, 3, 7, 3) and np.allclose(image, 0.25)
    flat = call(reg, "MaskToImage", dirs, mask=mask[0]).outputs[0]  # a 2-D mask gains a batch axis
    assert flat.shape == (1, 3, 7, 3)


# -- audio ------------------------------------------------------------------------------------------------


def make_tone(path: Path, seconds: float = 0.5, rate: int = 22050, channels: int = 2) -> None:
    run_ffmpeg(
        [
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency=440:sample_rate={rate}",
            "-t",
            str(seconds),
            "-ac",
            str(channels),
            str(path),
        ]
    )


def test_load_audio_decodes_wav_and_fingerprints(reg: NodeRegistry, dirs: WorkerDirs) -> None:
    make_tone(dirs.input / "tone.wav")
    (audio,) = call(reg, "LoadAudio", dirs, audio="tone.wav").outputs
    assert audio["sample_rate"] == 22050
    wave = audio["waveform"]
    assert wave.dtype == np.float32 and wave.shape == (1, 2, 11025)
    assert 0.05 < float(np.abs(wave).max()) <= 1.0
    cls = reg.classes["LoadAudio"]
    assert cls.fingerprint is not None and len(cls.fingerprint(dirs, {"audio": "tone.wav"})) == 64
    assert cls.object_info(dirs)["input"]["required"]["audio"][0] == ["tone.wav"]
    assert cls.validate_inputs is not None
    assert cls.validate_inputs(dirs, {"audio": "nope.wav"}) == "Invalid audio file: nope.wav"


def test_load_audio_from_video_file_and_without_audio_stream(reg: NodeRegistry, dirs: WorkerDirs) -> None:
    src = ["-f", "lavfi", "-i", "testsrc=size=32x32:rate=4", "-f", "lavfi", "-i", "sine=sample_rate=16000"]
    codecs = ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-ac", "1"]
    run_ffmpeg(["-y", *src, "-t", "1", *codecs, str(dirs.input / "c.mp4")])
    (audio,) = call(reg, "LoadAudio", dirs, audio="c.mp4").outputs
    assert audio["sample_rate"] == 16000 and audio["waveform"].shape[1] == 1
    assert abs(audio["waveform"].shape[2] - 16000) < 1600
    Image.new("RGB", (4, 4)).save(dirs.input / "still.png")
    with pytest.raises(ValueError, match="No audio stream"):
        call(reg, "LoadAudio", dirs, audio="still.png")


def test_save_audio_flac_duration_metadata_and_ui(reg: NodeRegistry, dirs: WorkerDirs) -> None:
    t = np.arange(24000, dtype=np.float32) / 24000
    wave = np.stack([np.sin(2 * np.pi * 220 * t), np.sin(2 * np.pi * 330 * t)])[None] * 0.5
    res = call(
        reg,
        "SaveAudio",
        dirs,
        audio={"waveform": wave, "sample_rate": 24000},
        filename_prefix="audio/ComfyUI",
    )
    assert res.ui == {"audio": [{"filename": "ComfyUI_00001_.flac", "subfolder": "audio", "type": "output"}]}
    info = probe(dirs.output / "audio" / "ComfyUI_00001_.flac")
    assert info.duration_s == pytest.approx(1.0, abs=0.01)
    assert info.audio[0].sample_rate == 24000 and info.audio[0].channels == 2
    assert json.loads(info.tags["prompt"]) == PROMPT
    back = call(reg, "LoadAudio", dirs, audio="audio/ComfyUI_00001_.flac [output]")
    assert np.allclose(back.outputs[0]["waveform"], wave, atol=1e-3)  # lossless round trip


# -- video ------------------------------------------------------------------------------------------------


def test_create_and_save_video_with_audio(reg: NodeRegistry, dirs: WorkerDirs) -> None:
    frames = np.random.default_rng(0).random((8, 48, 64, 3), dtype=np.float32)
    wave = np.zeros((1, 2, 44100 * 2), dtype=np.float32)  # 2 s of audio: cut to the 1 s of video
    audio = {"waveform": wave, "sample_rate": 44100}
    (video,) = call(reg, "CreateVideo", dirs, images=frames, fps=8.0, audio=audio).outputs
    assert isinstance(video, Video) and video.fps == 8.0 and video.audio is audio
    seen: list[tuple[float, float]] = []
    ctx = ctx_for(dirs, progress=lambda v, m: seen.append((v, m)))
    res = call(
        reg, "SaveVideo", dirs, ctx, video=video, filename_prefix="video/ComfyUI", format="auto", codec="auto"
    )
    assert res.ui == {
        "images": [{"filename": "ComfyUI_00001_.mp4", "subfolder": "video", "type": "output"}],
        "animated": [True],
    }
    info = probe(dirs.output / "video" / "ComfyUI_00001_.mp4")
    assert info.video[0].codec == "h264" and info.video[0].pix_fmt == "yuv420p"
    assert (info.width, info.height, info.fps, info.frame_count) == (64, 48, 8.0, 8)
    assert info.audio and info.audio[0].codec == "aac" and info.audio[0].sample_rate == 44100
    assert info.duration_s is not None and info.duration_s < 1.2
    assert json.loads(info.tags["prompt"]) == PROMPT
    assert json.loads(info.tags["workflow"]) == PNGINFO["workflow"]
    assert len(seen) == 8 and seen[-1] == (7, 8)


def test_save_video_without_audio_and_interrupt(reg: NodeRegistry, dirs: WorkerDirs) -> None:
    frames = np.zeros((5, 16, 16, 3), dtype=np.float32)
    (video,) = call(reg, "CreateVideo", dirs, images=frames, fps=5.0).outputs
    call(reg, "SaveVideo", dirs, video=video, filename_prefix="clip", format="mp4", codec="h264")
    info = probe(dirs.output / "clip_00001_.mp4")
    assert info.frame_count == 5 and not info.audio

    def interrupt(value: float, total: float) -> None:
        if value >= 2:
            raise NodeInterrupted()

    with pytest.raises(NodeInterrupted):
        call(reg, "SaveVideo", dirs, ctx_for(dirs, progress=interrupt), video=video, filename_prefix="clip")
    assert not (dirs.output / "clip_00002_.mp4").exists()
    odd = Video(frames=np.zeros((2, 15, 15, 3), dtype=np.float32), fps=5.0)
    with pytest.raises(FFmpegError):  # libx264 refuses odd sizes (yuv420p), as in ComfyUI
        call(reg, "SaveVideo", dirs, video=odd, filename_prefix="clip")
    assert sorted(p.name for p in dirs.output.iterdir()) == ["clip_00001_.mp4"]


# -- details where the preview follows ComfyUI 0.3.64's own encoders and progress bars ---------------------


def audio_stream_line(path: Path) -> str:
    """ffmpeg's summary of the file's audio stream (codec, rate, layout, sample format, bit rate)."""
    stderr = run_ffmpeg(["-i", str(path)], check=False).stderr.decode()
    (line,) = [line.strip() for line in stderr.splitlines() if "Audio:" in line]
    return line


def test_save_nodes_emit_no_progress(reg: NodeRegistry, dirs: WorkerDirs) -> None:
    seen: list[tuple[float, float]] = []
    ctx = ctx_for(dirs, progress=lambda v, m: seen.append((v, m)))
    call(reg, "SaveImage", dirs, ctx, images=empty(reg, dirs, batch=3), filename_prefix="batch")
    wave = np.zeros((2, 1, 2400), dtype=np.float32)
    call(reg, "SaveAudio", dirs, ctx, audio={"waveform": wave, "sample_rate": 24000}, filename_prefix="a")
    assert seen == []  # ComfyUI's SaveImage / SaveAudio have no progress bar
    assert len(list(dirs.output.glob("batch_*.png"))) == 3 and len(list(dirs.output.glob("a_*.flac"))) == 2


def test_save_audio_writes_16_bit_flac(reg: NodeRegistry, dirs: WorkerDirs) -> None:
    t = np.arange(4800, dtype=np.float32) / 48000
    wave = (0.5 * np.sin(2 * np.pi * 440 * t))[None, None]
    call(reg, "SaveAudio", dirs, audio={"waveform": wave, "sample_rate": 48000}, filename_prefix="bits")
    line = audio_stream_line(dirs.output / "bits_00001_.flac")
    assert re.search(r"flac, 48000 Hz, mono, s16\b", line), line
    back = call(reg, "LoadAudio", dirs, audio="bits_00001_.flac [output]").outputs[0]["waveform"]
    assert np.allclose(back, wave, atol=1 / 32767)  # 16-bit quantisation, nothing worse


def test_save_video_aac_track_is_stereo_at_pyav_default_rate(reg: NodeRegistry, dirs: WorkerDirs) -> None:
    rate = 24000
    t = np.arange(rate * 2, dtype=np.float32) / rate
    rng = np.random.default_rng(1)
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)
    speechy = np.sin(2 * np.pi * 180 * t) * envelope + 0.05 * rng.standard_normal(t.size)
    audio = {"waveform": (0.4 * speechy).astype(np.float32)[None, None], "sample_rate": rate}  # mono in
    frames = np.zeros((16, 32, 32, 3), dtype=np.float32)
    (video,) = call(reg, "CreateVideo", dirs, images=frames, fps=8.0, audio=audio).outputs
    call(reg, "SaveVideo", dirs, video=video, filename_prefix="talk", format="mp4", codec="h264")
    line = audio_stream_line(dirs.output / "talk_00001_.mp4")
    assert re.search(r"aac \(LC\).*, 24000 Hz, stereo, fltp, \d+ kb/s", line), line
    rate_match = re.search(r"(\d+) kb/s", line)
    assert rate_match is not None
    # ComfyUI measured ~80 kb/s (stereo, 128k nominal); the old mono track at 69k nominal gave ~51-67 kb/s.
    assert 70 <= int(rate_match.group(1)) <= 130, line
    back = call(reg, "LoadAudio", dirs, audio="talk_00001_.mp4 [output]").outputs[0]["waveform"]
    assert back.shape[1] == 2 and np.corrcoef(back[0, 0], back[0, 1])[0, 1] > 0.99  # mono duplicated


def test_upscale_with_model_reports_one_progress_step_per_tile(reg: NodeRegistry, dirs: WorkerDirs) -> None:
    from reelforge.preview.nodes.upscale import tiled_scale_steps
    from reelforge.preview.values import UpscaleModel

    assert tiled_scale_steps(512, 512) == 1
    assert tiled_scale_steps(1024, 600) == 3 * 2  # ceil((1024-32)/480) columns, ceil((600-32)/480) rows
    seen: list[tuple[float, float]] = []
    ctx = ctx_for(dirs, progress=lambda v, m: seen.append((v, m)))
    image = np.zeros((2, 600, 1024, 3), dtype=np.float32)
    model = UpscaleModel("x2.pth", 2)
    (out,) = call(reg, "ImageUpscaleWithModel", dirs, ctx, upscale_model=model, image=image).outputs
    assert out.shape == (2, 1200, 2048, 3)
    assert seen == [(float(i), 12.0) for i in range(1, 13)]

    def interrupt(value: float, total: float) -> None:
        raise NodeInterrupted()

    with pytest.raises(NodeInterrupted):  # the progress hook is where an interrupt lands, mid-node
        call(
            reg,
            "ImageUpscaleWithModel",
            dirs,
            ctx_for(dirs, progress=interrupt),
            upscale_model=UpscaleModel("x4.pth"),
            image=image[:1, :64, :64],
        )
