"""TTS pack nodes (ComfyUI-Qwen-TTS, flybirdxx): voice design and voice cloning.

The schemas are the pack's own (``catalogue/custom_qwen_tts.json``); the speech comes from
``render.audio.render_speech`` (espeak-ng when installed, else a syllable-shaped tone) as 24 kHz mono, the
rate Qwen3-TTS produces. Voice design maps the ``instruct`` description to voice parameters; voice cloning
takes the reference clip's pitch and, when ``ref_text`` is given, its pace. The pack's own input errors are
kept (empty text / instruction, VoiceDesign on the 0.6B model, cloning without a reference).
"""

from __future__ import annotations

from typing import Any

from reelforge.preview.registry import ExecContext, NodeResult, node
from reelforge.preview.render.audio import render_speech, voice_from_description, voice_from_reference


@node("FB_Qwen3TTSVoiceDesign")
def qwen3_tts_voice_design(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    text, instruct = str(inputs.get("text", "")), str(inputs.get("instruct", ""))
    if not text or not instruct:
        raise RuntimeError("Text and instruction description are required")
    if str(inputs.get("model_choice", "1.7B")) == "0.6B":
        raise RuntimeError("❌ VoiceDesign only supports 1.7B models!")
    voice = voice_from_description(instruct, str(inputs.get("language", "Auto")))
    ctx.progress(1, 3)
    audio = render_speech(text, voice, seed=int(inputs.get("seed", 0)))
    ctx.progress(3, 3)
    return NodeResult(outputs=(audio,))


@node("FB_Qwen3TTSVoiceClone")
def qwen3_tts_voice_clone(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    ref_audio = inputs.get("ref_audio")
    if ref_audio is None and inputs.get("voice_clone_prompt") is None:
        raise RuntimeError("Either reference audio or voice clone prompt is required")
    language = str(inputs.get("language", "Auto"))
    voice = voice_from_reference(ref_audio, str(inputs.get("ref_text", "")), language)
    ctx.progress(1, 3)
    audio = render_speech(str(inputs.get("target_text", "")), voice, seed=int(inputs.get("seed", 0)))
    ctx.progress(3, 3)
    return NodeResult(outputs=(audio,))
