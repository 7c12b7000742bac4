"""Video nodes: CreateVideo (images + fps + optional audio -> VIDEO), SaveVideo (mp4, h264 yuv420p, stereo AAC)."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from reelforge.media.ffmpeg import encode_raw_video, raw_audio_input_args, write_raw_audio
from reelforge.preview.naming import next_output_path
from reelforge.preview.nodes._common import to_uint8
from reelforge.preview.nodes.audio import file_metadata
from reelforge.preview.registry import ExecContext, NodeResult, Video, node


@node("CreateVideo")
def create_video(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    images = np.asarray(inputs["images"], dtype=np.float32)
    fps = float(inputs["fps"])
    audio = inputs.get("audio")
    return NodeResult(outputs=(Video(frames=images, fps=fps, audio=audio),))


def save_video_file(ctx: ExecContext, video: Video, path: Path, metadata: dict[str, str]) -> None:
    """Write ``video`` as mp4 (libx264 yuv420p, stereo AAC audio if any) with container metadata tags.

    Audio is cut to ``ceil(sample_rate / fps * frames)`` samples, like ComfyUI's
    ``VideoFromComponents.save_to``.
    Odd frame sizes fail in libx264 (yuv420p), as they do in ComfyUI.
    """
    frames = np.asarray(video.frames)
    total, height, width = int(frames.shape[0]), int(frames.shape[1]), int(frames.shape[2])

    def frame_iter() -> Iterator[np.ndarray]:
        for i in range(total):
            ctx.progress(i, total)
            frame = to_uint8(frames[i])
            if frame.shape[-1] == 1:
                frame = np.repeat(frame, 3, axis=-1)
            elif frame.shape[-1] == 4:
                frame = frame[..., :3]
            yield frame

    meta_args: list[str] = ["-movflags", "use_metadata_tags"]
    for key, value in metadata.items():
        meta_args += ["-metadata", f"{key}={value}"]
    video_args = ["-c:v", "libx264", "-pix_fmt", "yuv420p"]

    with tempfile.TemporaryDirectory(prefix="reelforge-video-") as tmp:
        input_args: list[str] = []
        map_args = ["-map", "0:v:0"]
        audio_args: list[str] = []
        if video.audio is not None:
            sample_rate = int(video.audio["sample_rate"])
            waveform = np.asarray(video.audio["waveform"], dtype=np.float32)[0]
            keep = math.ceil((sample_rate / video.fps) * total)
            waveform = waveform[:, :keep]
            if waveform.shape[1] > 0:
                raw = Path(tmp) / "audio.f32"
                write_raw_audio(raw, waveform)
                input_args = raw_audio_input_args(
                    raw, sample_rate=sample_rate, channels=int(waveform.shape[0])
                )
                map_args += ["-map", "1:a:0"]
                # ComfyUI's add_stream("aac") takes PyAV's defaults: stereo (mono is duplicated), 128 kb/s.
                audio_args = ["-c:a", "aac", "-ac", "2", "-b:a", "128k"]
        encode_raw_video(
            frame_iter(),
            width=width,
            height=height,
            fps=video.fps,
            output=path,
            input_args=input_args,
            output_args=[*map_args, *video_args, *audio_args, *meta_args, "-f", "mp4"],
        )


@node("SaveVideo")
def save_video(ctx: ExecContext, inputs: dict[str, Any]) -> NodeResult:
    video = inputs["video"]
    if not isinstance(video, Video):
        raise TypeError(f"SaveVideo expects a VIDEO value, got {type(video).__name__}")
    prefix = str(inputs.get("filename_prefix", "video/ComfyUI"))
    frames = np.asarray(video.frames)
    height, width = int(frames.shape[1]), int(frames.shape[2])
    path, filename, subfolder = next_output_path(ctx.dirs.output, prefix, "mp4", width=width, height=height)
    try:
        save_video_file(ctx, video, path, file_metadata(ctx))
    except BaseException:
        path.unlink(missing_ok=True)  # no half-written file left behind (it would shift the counter)
        raise
    return NodeResult(
        outputs=(),
        ui={"images": [{"filename": filename, "subfolder": subfolder, "type": "output"}], "animated": [True]},
    )
