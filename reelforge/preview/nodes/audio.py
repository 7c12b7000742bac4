"""Audio nodes: LoadAudio (any audio/video file, decoded with ffmpeg), SaveAudio (16-bit FLAC)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from reelforge.media.ffmpeg import decode_audio, run_ffmpeg
from reelforge.media.probe import MediaProbeError, probe
from reelforge.preview.naming import next_output_path
from reelforge.preview.nodes._common import (
    annotated_exists,
    annotated_filepath,
    file_fingerprint,
    list_input_files,
)
from reelforge.preview.registry import ExecContext, NodeResult, WorkerDirs, node


def _audio_combos(dirs: WorkerDirs) -> dict[str, list[str]]:
    return {"audio": list_input_files(dirs, ["audio", "video"])}


def _validate_audio(dirs: WorkerDirs, inputs: dict[str, Any]) -> str | bool:
    audio = inputs.get("audio")
    if not annotated_exists(dirs, audio):
        return f"Invalid audio file: {audio}"
    return True


@node(
    "LoadAudio",
    combos=_audio_combos,
    validate_inputs=_validate_audio,
    validated_inputs=frozenset({"audio"}),
    fingerprint=file_fingerprint("audio"),
)
def load_audio(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    path = annotated_filepath(ctx.dirs, str(inputs["audio"]))
    try:
        info = probe(path, count=False)
    except MediaProbeError as exc:
        raise ValueError(f"Failed to load audio: {exc}") from exc
    if not info.audio:
        raise ValueError("No audio stream found in the file.")
    stream = info.audio[0]
    waveform = decode_audio(path, sample_rate=stream.sample_rate, channels=stream.channels)
    return NodeResult(
        outputs=({"waveform": waveform[None].astype(np.float32), "sample_rate": stream.sample_rate},)
    )


def encode_audio_file(
    waveform: np.ndarray, sample_rate: int, output: Any, *, codec_args: list[str], metadata: dict[str, str]
) -> None:
    """Encode ``[C,T]`` float samples to ``output`` through ffmpeg (raw f32le on stdin)."""
    channels = int(waveform.shape[0])
    data = np.ascontiguousarray(np.asarray(waveform, dtype="<f4").T).tobytes()
    meta_args: list[str] = []
    for key, value in metadata.items():
        meta_args += ["-metadata", f"{key}={value}"]
    run_ffmpeg(
        [
            "-y",
            "-f",
            "f32le",
            "-ar",
            str(sample_rate),
            "-ac",
            str(channels),
            "-i",
            "pipe:0",
            *codec_args,
            *meta_args,
            str(output),
        ],
        input_bytes=data,
    )


def file_metadata(ctx: ExecContext) -> dict[str, str]:
    """``prompt`` plus one entry per ``extra_pnginfo`` key, JSON-encoded (ComfyUI's save nodes)."""
    metadata: dict[str, str] = {}
    if ctx.prompt is not None:
        metadata["prompt"] = json.dumps(ctx.prompt)
    if ctx.extra_pnginfo is not None:
        for key in ctx.extra_pnginfo:
            metadata[key] = json.dumps(ctx.extra_pnginfo[key])
    return metadata


@node("SaveAudio")
def save_audio(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    audio = inputs["audio"]
    prefix = str(inputs.get("filename_prefix", "audio/ComfyUI"))
    sample_rate = int(audio["sample_rate"])
    batch = np.asarray(audio["waveform"], dtype=np.float32)
    metadata = file_metadata(ctx)
    results: list[dict[str, Any]] = []
    for batch_number, waveform in enumerate(batch):  # no progress events: ComfyUI's SaveAudio has none
        path, filename, subfolder = next_output_path(ctx.dirs.output, prefix, "flac", batch_num=batch_number)
        # 16-bit like ComfyUI (PyAV's flac stream takes the encoder's first sample format, s16).
        codec_args = ["-c:a", "flac", "-sample_fmt", "s16"]
        encode_audio_file(waveform, sample_rate, path, codec_args=codec_args, metadata=metadata)
        results.append({"filename": filename, "subfolder": subfolder, "type": "output"})
    return NodeResult(outputs=(), ui={"audio": results})
