"""Placeholder video/audio renderers and the video, music and custom-pack node classes of the preview worker."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import call

from reelforge.preview import latency
from reelforge.preview.registry import (
    NodeRegistry,
    WorkerDirs,
    catalogue,
    default_registry,
)
from reelforge.preview.render import audio as render_audio
from reelforge.preview.render.audio import (
    VoiceParams,
    estimate_pitch,
    parse_bpm,
    render_music,
    render_speech,
    speech_seconds,
    voice_from_description,
    voice_from_reference,
)
from reelforge.preview.render.video import audio_envelope, render_video
from reelforge.preview.values import AudioEmbedding, AudioEncoder, Clip, Cond, Model, Recipe, Vae, latent

REFERENCE = Path("/work/shared/reference/comfyui-object-info-0.3.64.json")
CATALOGUE = Path(__file__).resolve().parents[2] / "reelforge" / "preview" / "catalogue"
CORE_CLASSES = [
    "Wan22ImageToVideoLatent",
    "WanFirstLastFrameToVideo",
    "WanSoundImageToVideo",
    "AudioEncoderLoader",
    "AudioEncoderEncode",
    "TextEncodeAceStepAudio",
    "EmptyAceStepLatentAudio",
    "VAEDecodeAudio",
]


@pytest.fixture
def dirs(tmp_path: Path) -> WorkerDirs:
    d = WorkerDirs(tmp_path / "worker")
    d.create()
    return d


@pytest.fixture
def reg() -> NodeRegistry:
    return default_registry()




def textured(h: int, w: int, channel: int, seed: int = 0) -> np.ndarray:
    """A noisy image dominated by one colour channel, [H,W,3] float32."""
    img = np.random.default_rng(seed).uniform(0, 0.3, (h, w, 3)).astype(np.float32)
    img[..., channel] += 0.65
    return img


def beat_onsets(mono: np.ndarray, sample_rate: int) -> np.ndarray:
    """Onset times (s): the 1 ms envelope rising above 30% of its peak after at least 100 ms of quiet."""
    hop = sample_rate // 1000
    env = np.abs(mono[: len(mono) // hop * hop]).reshape(-1, hop).max(axis=1)
    hits = np.flatnonzero(env > 0.3 * env.max())
    keep = np.concatenate([[True], np.diff(hits) > 100]) if hits.size else np.array([], dtype=bool)
    return hits[keep] * hop / sample_rate


# -- music ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seconds", [1.0, 2.5, 3.3333, 7.05])
def test_music_has_exactly_the_requested_length(seconds: float) -> None:
    audio = render_music(seconds, "ambient", seed=1)
    assert audio["sample_rate"] == 44100
    assert audio["waveform"].shape == (1, 2, round(seconds * 44100))
    assert audio["waveform"].dtype == np.float32
    assert np.abs(audio["waveform"]).max() <= 1.0


@pytest.mark.parametrize(("tags", "bpm"), [("pop, 120 bpm", 120), ("bpm: 90", 90), ("drum and bass, 174BPM", 174)])
def test_music_beats_follow_the_tempo_in_the_tags(tags: str, bpm: float) -> None:
    audio = render_music(6.0, tags, seed=3)
    onsets = beat_onsets(audio["waveform"][0].mean(axis=0), 44100)
    beat = 60.0 / bpm
    assert len(onsets) == int(6.0 / beat - 1e-9) + 1
    assert np.diff(onsets) == pytest.approx(beat, abs=0.003)
    assert onsets == pytest.approx(np.arange(len(onsets)) * beat, abs=0.003)


def test_parse_bpm() -> None:
    assert parse_bpm("pop, 128 bpm, female vocals") == 128
    assert parse_bpm("BPM = 95.5") == 95.5
    assert parse_bpm("lofi, chill") == 120
    assert parse_bpm("9999 bpm") == 300


def test_music_is_deterministic_and_seed_dependent() -> None:
    a, b, c = render_music(1.0, "jazz", 5), render_music(1.0, "jazz", 5), render_music(1.0, "jazz", 6)
    assert np.array_equal(a["waveform"], b["waveform"])
    assert not np.array_equal(a["waveform"], c["waveform"])


# -- speech -----------------------------------------------------------------------------------------------

SENTENCE = "The quick brown fox jumps over the lazy dog, then it runs away."


def test_fallback_speech_length_is_plausible() -> None:
    audio = render_speech(SENTENCE, seed=1, use_espeak=False)
    seconds = audio["waveform"].shape[-1] / audio["sample_rate"]
    assert audio["waveform"].shape[:2] == (1, 1) and audio["sample_rate"] == 24000
    words_per_minute = len(SENTENCE.split()) / seconds * 60
    assert 110 < words_per_minute < 190
    assert seconds == pytest.approx(speech_seconds(SENTENCE), abs=0.01)
    slow = render_speech(SENTENCE, VoiceParams(speed_wpm=100), use_espeak=False)
    assert slow["waveform"].shape[-1] > audio["waveform"].shape[-1] * 1.3


def test_fallback_speech_has_syllable_envelope() -> None:
    audio = render_speech("one two three four five six", use_espeak=False)
    mono = audio["waveform"][0, 0]
    frames = np.abs(mono[: mono.size // 240 * 240]).reshape(-1, 240).mean(axis=1)  # 10 ms frames
    loud = frames > 0.3 * frames.max()
    rises = int(np.sum(loud[1:] & ~loud[:-1])) + int(loud[0])
    assert 5 <= rises <= 9  # one pulse per syllable, not one continuous tone


@pytest.mark.skipif(not render_audio.espeak_available(), reason="espeak-ng not installed")
def test_espeak_speech_length_and_voice() -> None:
    male = render_speech(SENTENCE, voice_from_description("a deep male voice"))
    female = render_speech(SENTENCE, voice_from_description("a young woman"))
    seconds = male["waveform"].shape[-1] / 24000
    assert 80 < len(SENTENCE.split()) / seconds * 60 < 260
    male_f0 = estimate_pitch(male["waveform"][0], 24000)
    female_f0 = estimate_pitch(female["waveform"][0], 24000)
    assert male_f0 is not None and female_f0 is not None and female_f0 > male_f0 * 1.4


def test_voice_description_and_reference_map_to_parameters() -> None:
    deep = voice_from_description("A deep, slow male narrator", "German")
    bright = voice_from_description("an energetic young woman")
    assert deep.gender == "male" and bright.gender == "female"
    assert deep.pitch_hz < 110 < 230 < bright.pitch_hz
    assert deep.speed_wpm < 150 < bright.speed_wpm
    assert deep.language == "de"
    t = np.arange(48000) / 24000
    tone = {"waveform": (0.3 * np.sin(2 * np.pi * 220 * t))[None, None, :].astype(np.float32), "sample_rate": 24000}
    cloned = voice_from_reference(tone, "one two three four five")  # 5 words in 2 s: 150 wpm
    assert cloned.pitch_hz == pytest.approx(220, rel=0.03) and cloned.gender == "female"
    assert cloned.speed_wpm == pytest.approx(150, rel=0.01)


def test_fallback_speech_follows_the_voice_pitch() -> None:
    low = render_speech("hello there my friend", VoiceParams(pitch_hz=100), use_espeak=False)
    high = render_speech("hello there my friend", VoiceParams(pitch_hz=220), use_espeak=False)
    f_low, f_high = estimate_pitch(low["waveform"][0], 24000), estimate_pitch(high["waveform"][0], 24000)
    assert f_low is not None and f_high is not None
    assert f_low == pytest.approx(95, rel=0.15) and f_high == pytest.approx(210, rel=0.15)


# -- video ------------------------------------------------------------------------------------------------


def test_image_to_video_frames_motion_and_first_frame() -> None:
    start = textured(48, 80, 0)
    recipe = Recipe(kind="video", width=64, height=48, frames=17, prompt="a fox", seed=2, start_image=start)
    frames = render_video(recipe)
    assert frames.shape == (17, 48, 64, 3) and frames.dtype == np.float32
    assert 0.0 <= frames.min() and frames.max() <= 1.0
    diffs = np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2, 3))
    assert diffs.min() > 0.005  # every frame moves
    assert np.array_equal(frames, render_video(recipe))  # deterministic
    # Frame 0 is the start image (center-cropped to 64x48) apart from the small overlays.
    assert np.median(np.abs(frames[0] - start[:, 8:72])) < 0.02


def test_first_last_frame_transition() -> None:
    start, end = textured(64, 64, 0), textured(64, 64, 2, seed=1)
    frames = render_video(Recipe(kind="video", width=64, height=64, frames=9, start_image=start, end_image=end))
    assert frames.shape[0] == 9
    assert np.abs(frames[0] - start).mean() < 0.05 and np.abs(frames[0] - end).mean() > 0.3
    assert np.abs(frames[-1] - end).mean() < 0.05 and np.abs(frames[-1] - start).mean() > 0.3
    redness = frames[..., 0].mean(axis=(1, 2)) - frames[..., 2].mean(axis=(1, 2))
    assert np.all(np.diff(redness) < 0)


def test_talking_video_mouth_follows_audio() -> None:
    rate, fps, n = 16000, 16.0, 17
    t = np.arange(int(n / fps * rate)) / rate
    on = (t % 0.5) < 0.25  # 0.25 s of sound, 0.25 s of silence
    wave = (0.5 * np.sin(2 * np.pi * 200 * t) * on).astype(np.float32)[None, None, :]
    embedding = AudioEmbedding(waveform=wave, sample_rate=rate)
    envelope = audio_envelope(embedding, n, fps)
    assert envelope[0] == pytest.approx(1.0, abs=0.05) and envelope[5] == pytest.approx(0.0, abs=0.01)
    recipe = Recipe(
        kind="video",
        width=64,
        height=64,
        frames=n,
        start_image=textured(64, 64, 1),
        audio=embedding,
        extras={"fps": fps},
    )
    frames = render_video(recipe)
    mouth = frames[:, 38:50, 24:40]
    dark = ((mouth[..., 0] > 0.35) & (mouth[..., 1] < 0.2)).sum(axis=(1, 2))
    assert dark[envelope > 0.8].min() > dark[envelope < 0.2].max() + 20


def test_video_without_start_image_depends_on_prompt_and_seed() -> None:
    base = Recipe(kind="video", width=32, height=32, frames=5, prompt="a castle", seed=1)
    a = render_video(base)
    b = render_video(Recipe(kind="video", width=32, height=32, frames=5, prompt="a castle", seed=2))
    assert a.shape == (5, 32, 32, 3)
    assert np.abs(a - b).mean() > 0.02


# -- node classes -----------------------------------------------------------------------------------------


def test_core_schemas_are_the_real_ones() -> None:
    reference = json.loads(REFERENCE.read_text(encoding="utf-8"))
    ours = catalogue()
    for name in CORE_CLASSES:
        assert ours[name] == reference[name], name


def test_custom_pack_files_name_their_pack_and_commit(reg: NodeRegistry) -> None:
    files = sorted(CATALOGUE.glob("custom_*.json"))
    assert {f.name for f in files} >= {"custom_ipadapter_plus.json", "custom_qwen_tts.json"}
    for path in files:
        data = json.loads(path.read_text(encoding="utf-8"))
        pack = data["__pack__"]
        assert pack["repo"].startswith("https://github.com/") and len(pack["commit"]) == 40
        int(pack["commit"], 16)
        for name, entry in data.items():
            if name.startswith("__"):
                continue
            assert entry["name"] == name and entry["python_module"].startswith("custom_nodes.")
            assert set(entry["input_order"]) == set(entry["input"])
            assert len(entry["output"]) == len(entry["output_is_list"]) == len(entry["output_name"])
            assert name in reg, name
    assert "__pack__" not in catalogue()


def test_wan22_latent_shape_frames_and_start_image(reg: NodeRegistry, dirs: WorkerDirs) -> None:
    start = textured(40, 40, 0)[None]
    out = call(
        reg,
        "Wan22ImageToVideoLatent",
        dirs,
        vae=Vae("v"),
        width=96,
        height=64,
        length=17,
        batch_size=2,
        start_image=start,
    ).outputs[0]
    assert out["samples"].shape == (2, 48, 5, 4, 6)
    assert out["noise_mask"].shape == (2, 1, 5, 4, 6)
    recipe = out["recipe"]
    assert (recipe.kind, recipe.frames, recipe.width, recipe.height) == ("video", 17, 96, 64)
    assert recipe.start_image.shape == (64, 96, 3)
    plain = call(reg, "Wan22ImageToVideoLatent", dirs, vae=Vae("v"), width=64, height=64, length=10, batch_size=1)
    assert plain.outputs[0]["recipe"].frames == 9  # (10-1)//4+1 = 3 latent steps decode to 9 frames
    assert "noise_mask" not in plain.outputs[0]


def test_flf_and_s2v_latents_and_conditioning(reg: NodeRegistry, dirs: WorkerDirs) -> None:
    pos, neg = [Cond("a fox")], [Cond("blurry")]
    start, end = textured(32, 32, 0)[None], np.concatenate([textured(32, 32, 1)[None], textured(32, 32, 2)[None]])
    p, n, lat = call(
        reg,
        "WanFirstLastFrameToVideo",
        dirs,
        positive=pos,
        negative=neg,
        vae=Vae("v"),
        width=48,
        height=32,
        length=21,
        batch_size=1,
        start_image=start,
        end_image=end,
    ).outputs
    assert lat["samples"].shape == (1, 16, 6, 4, 6)
    assert lat["recipe"].frames == 21 and lat["recipe"].prompt == "a fox"
    assert np.allclose(lat["recipe"].end_image.mean(axis=(0, 1)), end[-1].mean(axis=(0, 1)), atol=0.02)  # last
    assert p[0].get("concat_latent_image") is not None and n[0].get("concat_latent_image") is not None

    wave = np.zeros((1, 1, 16000), dtype=np.float32)
    emb = call(
        reg, "AudioEncoderEncode", dirs, audio_encoder=AudioEncoder("w"), audio={"waveform": wave, "sample_rate": 16000}
    )
    embedding = emb.outputs[0]
    assert isinstance(embedding, AudioEmbedding) and embedding.waveform.shape == (1, 1, 16000)
    p, _n, lat = call(
        reg,
        "WanSoundImageToVideo",
        dirs,
        positive=pos,
        negative=neg,
        vae=Vae("v"),
        width=64,
        height=48,
        length=77,
        batch_size=1,
        audio_encoder_output=embedding,
        ref_image=start,
    ).outputs
    assert lat["samples"].shape == (1, 16, 20, 6, 8)
    assert lat["recipe"].audio is embedding and lat["recipe"].start_image.shape == (48, 64, 3)
    assert p[0].get("audio_embed") is embedding


def test_audio_encoder_loader_lists_and_resolves(reg: NodeRegistry, dirs: WorkerDirs) -> None:
    (dirs.models / "audio_encoders").mkdir()
    (dirs.models / "audio_encoders" / "wav2vec2.safetensors").write_bytes(b"")
    cls = reg.get("AudioEncoderLoader")
    assert cls is not None
    options = cls.object_info(dirs)["input"]["required"]["audio_encoder_name"][1]["options"]
    assert "wav2vec2.safetensors" in options
    out = call(reg, "AudioEncoderLoader", dirs, audio_encoder_name="wav2vec2.safetensors").outputs[0]
    assert out == AudioEncoder("wav2vec2.safetensors")
    with pytest.raises(FileNotFoundError):
        call(reg, "AudioEncoderLoader", dirs, audio_encoder_name="missing.safetensors")


def test_ace_step_latent_and_decode_length(reg: NodeRegistry, dirs: WorkerDirs) -> None:
    cond = call(
        reg, "TextEncodeAceStepAudio", dirs, clip=Clip(("ace",)), tags="rock, 100 bpm", lyrics="la", lyrics_strength=0.7
    ).outputs[0]
    assert cond[0].get("tags") == "rock, 100 bpm" and cond[0].get("lyrics") == "la"
    assert cond[0].get("lyrics_strength") == 0.7
    lat = call(reg, "EmptyAceStepLatentAudio", dirs, seconds=10.0, batch_size=2).outputs[0]
    assert lat["samples"].shape == (2, 8, 16, int(10.0 * 44100 / 512 / 8))
    assert lat["type"] == "audio" and lat["recipe"].kind == "audio"
    audio = call(reg, "VAEDecodeAudio", dirs, samples=lat, vae=Vae("ace")).outputs[0]
    assert audio["sample_rate"] == 44100
    assert audio["waveform"].shape == (2, 2, 107 * 4096)
    image_latent = latent(np.zeros((1, 4, 8, 8), np.float32), Recipe(kind="image", width=64, height=64))
    with pytest.raises(RuntimeError, match="audio latent"):
        call(reg, "VAEDecodeAudio", dirs, samples=image_latent, vae=Vae("ace"))


def test_ipadapter_attaches_reference_image(reg: NodeRegistry, dirs: WorkerDirs) -> None:
    model = Model("sd_xl_base_1.0.safetensors", family="sdxl")
    m, pipeline = call(reg, "IPAdapterUnifiedLoader", dirs, model=model, preset="PLUS (high strength)").outputs
    assert m is model and pipeline["ipadapter"]["file"] == "ip-adapter-plus_sdxl_vit-h.safetensors"
    ref = textured(16, 16, 0)[None]
    out = call(
        reg,
        "IPAdapterAdvanced",
        dirs,
        model=m,
        ipadapter=pipeline,
        image=ref,
        weight=0.8,
        weight_type="linear",
        combine_embeds="concat",
        start_at=0.0,
        end_at=1.0,
        embeds_scaling="V only",
    ).outputs[0]
    assert isinstance(out, Model) and len(out.ipadapter) == 1 and out.ipadapter[0][1] == 0.8
    fingerprint = out.ipadapter[0][0]
    assert np.array_equal(dict(out.patches)[f"ipadapter_image:{fingerprint}"], ref[0])
    with pytest.raises(Exception, match="light model is not supported for SDXL"):
        call(reg, "IPAdapterUnifiedLoader", dirs, model=model, preset="LIGHT - SD1.5 only (low strength)")


def test_tts_pack_nodes(reg: NodeRegistry, dirs: WorkerDirs) -> None:
    base = {"model_choice": "1.7B", "device": "auto", "precision": "bf16", "language": "English"}
    audio = call(
        reg,
        "FB_Qwen3TTSVoiceDesign",
        dirs,
        text="Hello world, nice to meet you.",
        instruct="a warm female voice",
        **base,
    ).outputs[0]
    assert audio["sample_rate"] == 24000 and audio["waveform"].shape[:2] == (1, 1)
    assert 1.0 < audio["waveform"].shape[-1] / 24000 < 4.0
    with pytest.raises(RuntimeError, match="instruction description"):
        call(reg, "FB_Qwen3TTSVoiceDesign", dirs, text="Hi", instruct="", **base)
    with pytest.raises(RuntimeError, match=r"only supports 1\.7B"):
        call(reg, "FB_Qwen3TTSVoiceDesign", dirs, text="Hi", instruct="calm", **{**base, "model_choice": "0.6B"})
    clone = call(reg, "FB_Qwen3TTSVoiceClone", dirs, target_text="Again, please.", ref_audio=audio, **base)
    assert clone.outputs[0]["waveform"].shape[-1] > 0
    with pytest.raises(RuntimeError, match="reference audio or voice clone prompt"):
        call(reg, "FB_Qwen3TTSVoiceClone", dirs, target_text="x", **base)


def test_latency_figures_for_media_classes(reg: NodeRegistry) -> None:
    profile = latency.parse_latency("gpu")

    def seconds(name: str, inputs: dict[str, Any]) -> float:
        cls = reg.get(name)
        assert cls is not None
        return profile.plan(cls, inputs, 1).seconds

    short = seconds("FB_Qwen3TTSVoiceDesign", {"text": "x" * 20})
    long = seconds("FB_Qwen3TTSVoiceDesign", {"text": "x" * 200})
    assert long > short and long == pytest.approx(0.3 + 0.3 * 0.07 * 200)  # ~0.3x realtime
    small = seconds("WanFirstLastFrameToVideo", {"width": 416, "height": 240, "length": 81})
    big = seconds("WanFirstLastFrameToVideo", {"width": 832, "height": 480, "length": 81})
    assert big == pytest.approx(4 * small) and big == pytest.approx(2.5)
    minute = {"samples": {"samples": np.zeros((1, 8, 16, int(60 * 44100 / 4096)))}}
    assert 0.4 < seconds("VAEDecodeAudio", minute) < 0.7
    assert seconds("IPAdapterUnifiedLoader", {"preset": "PLUS (high strength)"}) == 2.5
    assert seconds("IPAdapterUnifiedLoader", {"preset": "PLUS (high strength)"}) < 0.01  # loaded: reused
