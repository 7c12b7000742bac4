"""Video, music and speech graphs on a real preview worker: files of the right length, frames and tracks."""

from __future__ import annotations

import asyncio
import time
import wave
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from PIL import Image

from reelforge.media.ffmpeg import decode_audio, run_ffmpeg
from reelforge.media.probe import probe
from reelforge.preview.render.video import audio_envelope
from reelforge.preview.server import PreviewWorker

Json = dict[str, Any]

MODELS = {
    "checkpoints": ["ace_step_v1_3.5b.safetensors"],
    "diffusion_models": [
        "wan2.2_ti2v_5B_fp16.safetensors",
        "wan2.1_flf2v_720p_14B_fp16.safetensors",
        "wan2.2_s2v_14B_fp8_scaled.safetensors",
    ],
    "text_encoders": ["umt5_xxl_fp8_e4m3fn_scaled.safetensors"],
    "vae": ["wan2.2_vae.safetensors", "wan_2.1_vae.safetensors"],
    "clip_vision": ["clip_vision_h.safetensors"],
    "audio_encoders": ["wav2vec2_large_english_fp16.safetensors"],
}


@pytest.fixture
async def worker(preview_worker: PreviewWorker) -> PreviewWorker:
    """The preview worker with (empty) model files on disk and two input images."""
    for folder, names in MODELS.items():
        for name in names:
            path = preview_worker.dirs.models / folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"")
    rng = np.random.default_rng(0)
    texture = (rng.uniform(0, 1, (48, 80, 3)) * 80).astype(np.uint8)
    red = texture.copy()
    red[..., 0] += 170
    blue = texture.copy()
    blue[..., 2] += 170
    Image.fromarray(red).save(preview_worker.dirs.input / "start.png")
    Image.fromarray(blue).save(preview_worker.dirs.input / "end.png")
    return preview_worker


async def run_graph(worker: PreviewWorker, graph: Json, within: float = 60) -> Json:
    """Queue ``graph`` and return its history entry once it finished successfully."""
    async with aiohttp.ClientSession() as http:
        async with http.post(worker.url + "/prompt", json={"prompt": graph}) as r:
            body = await r.json()
            assert r.status == 200, body
        prompt_id = body["prompt_id"]
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            async with http.get(f"{worker.url}/history/{prompt_id}") as r:
                history = await r.json()
            entry = history.get(prompt_id)
            if entry and entry["status"]["completed"]:
                return dict(entry)
            if entry and entry["status"]["status_str"] == "error":
                raise AssertionError(entry["status"]["messages"])
            await asyncio.sleep(0.05)
    raise AssertionError("prompt did not finish")


def output_file(worker: PreviewWorker, entry: Json, node_id: str, key: str) -> Path:
    item = entry["outputs"][node_id][key][0]
    return worker.dirs.output / item["subfolder"] / item["filename"]


def video_frames(path: Path, width: int, height: int) -> np.ndarray:
    proc = run_ffmpeg(["-i", path, "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"])
    return np.frombuffer(proc.stdout, dtype=np.uint8).reshape(-1, height, width, 3).astype(np.float32) / 255


def onsets(mono: np.ndarray, sample_rate: int) -> np.ndarray:
    """Times (s) where the 1 ms envelope first rises above half its peak after 100 ms of quiet."""
    hop = sample_rate // 1000
    env = np.abs(mono[: len(mono) // hop * hop]).reshape(-1, hop).max(axis=1)
    above = env > 0.5 * env.max()
    times: list[float] = []
    last = -1000
    for i in np.flatnonzero(above):
        if i - last > 100:
            times.append(i * hop / sample_rate)
        last = i
    return np.array(times)


def text_encode(clip: str, text: str) -> Json:
    return {"class_type": "CLIPTextEncode", "inputs": {"clip": [clip, 0], "text": text}}


def sampler(model: str, positive: list[Any], negative: list[Any], latent: list[Any]) -> Json:
    return {
        "class_type": "KSampler",
        "inputs": {
            "model": [model, 0],
            "seed": 7,
            "steps": 2,
            "cfg": 5.0,
            "sampler_name": "euler",
            "scheduler": "simple",
            "positive": positive,
            "negative": negative,
            "latent_image": latent,
            "denoise": 1.0,
        },
    }


async def test_music_graph_writes_flac_of_the_requested_length_with_beats(worker: PreviewWorker) -> None:
    seconds = 3.0
    graph: Json = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "ace_step_v1_3.5b.safetensors"}},
        "2": {
            "class_type": "TextEncodeAceStepAudio",
            "inputs": {
                "clip": ["1", 1],
                "tags": "electronic, 100 bpm",
                "lyrics": "[verse] la la",
                "lyrics_strength": 1,
            },
        },
        "3": {
            "class_type": "TextEncodeAceStepAudio",
            "inputs": {"clip": ["1", 1], "tags": "", "lyrics": "", "lyrics_strength": 1},
        },
        "4": {"class_type": "EmptyAceStepLatentAudio", "inputs": {"seconds": seconds, "batch_size": 1}},
        "5": sampler("1", ["2", 0], ["3", 0], ["4", 0]),
        "6": {"class_type": "VAEDecodeAudio", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveAudio", "inputs": {"audio": ["6", 0], "filename_prefix": "audio/music"}},
    }
    entry = await run_graph(worker, graph)
    path = output_file(worker, entry, "7", "audio")
    assert path.suffix == ".flac"
    info = probe(path, count=False)
    assert info.audio[0].sample_rate == 44100 and info.audio[0].channels == 2
    expected = int(seconds * 44100 / 4096) * 4096 / 44100  # ACE-Step decodes 4096 samples per latent step
    assert info.duration_s == pytest.approx(expected, abs=0.01)
    assert abs(expected - seconds) < 4096 / 44100
    samples = decode_audio(path, sample_rate=44100, channels=1)[0]
    assert samples.size == round(expected * 44100)
    beats = onsets(samples, 44100)
    assert len(beats) == 5  # 0, 0.6, 1.2, 1.8, 2.4 s at 100 bpm
    assert beats == pytest.approx(np.arange(5) * 0.6, abs=0.003)


async def test_image_to_video_graph_writes_mp4_with_requested_frames_and_fps(worker: PreviewWorker) -> None:
    graph: Json = {
        "1": {
            "class_type": "UNETLoader",
            "inputs": {"unet_name": "wan2.2_ti2v_5B_fp16.safetensors", "weight_dtype": "default"},
        },
        "2": {
            "class_type": "CLIPLoader",
            "inputs": {"clip_name": "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "type": "wan", "device": "default"},
        },
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": "wan2.2_vae.safetensors"}},
        "4": {"class_type": "LoadImage", "inputs": {"image": "start.png"}},
        "5": text_encode("2", "a red fox walks through snow"),
        "6": text_encode("2", "blurry"),
        "7": {
            "class_type": "Wan22ImageToVideoLatent",
            "inputs": {
                "vae": ["3", 0],
                "width": 64,
                "height": 64,
                "length": 17,
                "batch_size": 1,
                "start_image": ["4", 0],
            },
        },
        "8": {"class_type": "ModelSamplingSD3", "inputs": {"model": ["1", 0], "shift": 8.0}},
        "9": sampler("8", ["5", 0], ["6", 0], ["7", 0]),
        "10": {"class_type": "VAEDecode", "inputs": {"samples": ["9", 0], "vae": ["3", 0]}},
        "11": {"class_type": "CreateVideo", "inputs": {"images": ["10", 0], "fps": 24.0}},
        "12": {
            "class_type": "SaveVideo",
            "inputs": {"video": ["11", 0], "filename_prefix": "video/i2v", "format": "auto", "codec": "auto"},
        },
    }
    entry = await run_graph(worker, graph)
    path = output_file(worker, entry, "12", "images")
    info = probe(path)
    assert (info.frame_count, info.fps, info.width, info.height) == (17, 24.0, 64, 64)
    assert not info.has_audio
    frames = video_frames(path, 64, 64)
    assert frames.shape[0] == 17
    assert np.abs(frames[-1] - frames[0]).mean() > 0.02  # visible motion
    assert frames[0][..., 0].mean() > frames[0][..., 2].mean() + 0.3  # frame 0 shows the (red) start image


async def test_first_last_frame_graph_goes_from_start_to_end_image(worker: PreviewWorker) -> None:
    graph: Json = {
        "1": {
            "class_type": "UNETLoader",
            "inputs": {"unet_name": "wan2.1_flf2v_720p_14B_fp16.safetensors", "weight_dtype": "default"},
        },
        "2": {
            "class_type": "CLIPLoader",
            "inputs": {"clip_name": "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "type": "wan", "device": "default"},
        },
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": "wan_2.1_vae.safetensors"}},
        "4": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": "clip_vision_h.safetensors"}},
        "5": {"class_type": "LoadImage", "inputs": {"image": "start.png"}},
        "6": {"class_type": "LoadImage", "inputs": {"image": "end.png"}},
        "7": {"class_type": "CLIPVisionEncode", "inputs": {"clip_vision": ["4", 0], "image": ["5", 0], "crop": "none"}},
        "8": {"class_type": "CLIPVisionEncode", "inputs": {"clip_vision": ["4", 0], "image": ["6", 0], "crop": "none"}},
        "9": text_encode("2", "the fox turns blue"),
        "10": text_encode("2", ""),
        "11": {
            "class_type": "WanFirstLastFrameToVideo",
            "inputs": {
                "positive": ["9", 0],
                "negative": ["10", 0],
                "vae": ["3", 0],
                "width": 64,
                "height": 48,
                "length": 13,
                "batch_size": 1,
                "clip_vision_start_image": ["7", 0],
                "clip_vision_end_image": ["8", 0],
                "start_image": ["5", 0],
                "end_image": ["6", 0],
            },
        },
        "12": sampler("1", ["11", 0], ["11", 1], ["11", 2]),
        "13": {"class_type": "VAEDecode", "inputs": {"samples": ["12", 0], "vae": ["3", 0]}},
        "14": {"class_type": "CreateVideo", "inputs": {"images": ["13", 0], "fps": 16.0}},
        "15": {
            "class_type": "SaveVideo",
            "inputs": {"video": ["14", 0], "filename_prefix": "video/flf", "format": "auto", "codec": "auto"},
        },
    }
    entry = await run_graph(worker, graph)
    path = output_file(worker, entry, "15", "images")
    info = probe(path)
    assert (info.frame_count, info.fps, info.width, info.height) == (13, 16.0, 64, 48)
    frames = video_frames(path, 64, 48)
    redness = frames[..., 0].mean(axis=(1, 2)) - frames[..., 2].mean(axis=(1, 2))
    assert redness[0] > 0.4 and redness[-1] < -0.4  # red start image -> blue end image
    assert np.all(np.diff(redness) < 0.02)  # a steady transition, no jump back


def write_wav(path: Path, samples: np.ndarray, sample_rate: int) -> None:
    data = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(data.tobytes())


async def test_talking_video_has_the_audio_track_and_its_length(worker: PreviewWorker) -> None:
    fps, length = 16.0, 17  # 4n+1 frames; the speech is padded to length / fps = 1.0625 s
    rate = 16000
    t = np.arange(int(length / fps * rate)) / rate
    speech = 0.4 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 3 * t) > 0)  # syllable-like bursts
    write_wav(worker.dirs.input / "speech.wav", speech, rate)
    graph: Json = {
        "1": {
            "class_type": "UNETLoader",
            "inputs": {"unet_name": "wan2.2_s2v_14B_fp8_scaled.safetensors", "weight_dtype": "default"},
        },
        "2": {
            "class_type": "CLIPLoader",
            "inputs": {"clip_name": "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "type": "wan", "device": "default"},
        },
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": "wan_2.1_vae.safetensors"}},
        "4": {
            "class_type": "AudioEncoderLoader",
            "inputs": {"audio_encoder_name": "wav2vec2_large_english_fp16.safetensors"},
        },
        "5": {"class_type": "LoadAudio", "inputs": {"audio": "speech.wav"}},
        "6": {"class_type": "AudioEncoderEncode", "inputs": {"audio_encoder": ["4", 0], "audio": ["5", 0]}},
        "7": {"class_type": "LoadImage", "inputs": {"image": "start.png"}},
        "8": text_encode("2", "a woman talking"),
        "9": text_encode("2", ""),
        "10": {
            "class_type": "WanSoundImageToVideo",
            "inputs": {
                "positive": ["8", 0],
                "negative": ["9", 0],
                "vae": ["3", 0],
                "width": 64,
                "height": 64,
                "length": length,
                "batch_size": 1,
                "audio_encoder_output": ["6", 0],
                "ref_image": ["7", 0],
            },
        },
        "11": {"class_type": "ModelSamplingSD3", "inputs": {"model": ["1", 0], "shift": 8.0}},
        "12": sampler("11", ["10", 0], ["10", 1], ["10", 2]),
        "13": {"class_type": "VAEDecode", "inputs": {"samples": ["12", 0], "vae": ["3", 0]}},
        "14": {"class_type": "CreateVideo", "inputs": {"images": ["13", 0], "fps": fps, "audio": ["5", 0]}},
        "15": {
            "class_type": "SaveVideo",
            "inputs": {"video": ["14", 0], "filename_prefix": "video/talk", "format": "auto", "codec": "auto"},
        },
    }
    entry = await run_graph(worker, graph)
    path = output_file(worker, entry, "15", "images")
    info = probe(path)
    assert info.has_audio and info.frame_count == length and info.fps == fps
    audio_seconds = speech.size / rate
    assert info.duration_s == pytest.approx(audio_seconds, abs=0.03)
    decoded = decode_audio(path, sample_rate=rate, channels=1)
    assert decoded.shape[1] / rate == pytest.approx(audio_seconds, abs=0.03)
    # The mouth opens with the audio: more dark-red mouth pixels in loud frames than in quiet ones.
    frames = video_frames(path, 64, 64)
    envelope = audio_envelope({"waveform": speech[None, None, :], "sample_rate": rate}, length, fps)
    mouth = frames[:, 32:56, 20:44]
    dark_red = ((mouth[..., 0] > 0.3) & (mouth[..., 1] < 0.2) & (mouth[..., 0] < 0.65)).sum(axis=(1, 2))
    loud, quiet = dark_red[envelope > 0.8], dark_red[envelope < 0.2]
    assert len(loud) and len(quiet) and loud.min() > quiet.max()


async def test_tts_pack_voice_design_and_clone_write_speech(worker: PreviewWorker) -> None:
    text = "The quick brown fox jumps over the lazy dog."
    design: Json = {
        "1": {
            "class_type": "FB_Qwen3TTSVoiceDesign",
            "inputs": {
                "text": text,
                "instruct": "A calm, deep male narrator.",
                "model_choice": "1.7B",
                "device": "auto",
                "precision": "bf16",
                "language": "English",
                "seed": 3,
            },
        },
        "2": {"class_type": "SaveAudio", "inputs": {"audio": ["1", 0], "filename_prefix": "audio/voice"}},
    }
    entry = await run_graph(worker, design)
    designed = output_file(worker, entry, "2", "audio")
    info = probe(designed, count=False)
    assert info.audio[0].sample_rate == 24000 and info.audio[0].channels == 1
    assert info.duration_s is not None and 1.5 < info.duration_s < 6.0  # 9 words: 150 wpm is ~3.6 s

    (worker.dirs.input / "reference.flac").write_bytes(designed.read_bytes())
    clone: Json = {
        "1": {"class_type": "LoadAudio", "inputs": {"audio": "reference.flac"}},
        "2": {
            "class_type": "FB_Qwen3TTSVoiceClone",
            "inputs": {
                "target_text": "Hello again.",
                "model_choice": "1.7B",
                "device": "auto",
                "precision": "bf16",
                "language": "English",
                "ref_audio": ["1", 0],
                "ref_text": text,
            },
        },
        "3": {"class_type": "SaveAudio", "inputs": {"audio": ["2", 0], "filename_prefix": "audio/clone"}},
    }
    entry = await run_graph(worker, clone)
    cloned = probe(output_file(worker, entry, "3", "audio"), count=False)
    assert cloned.duration_s is not None and 0.4 < cloned.duration_s < 2.5
