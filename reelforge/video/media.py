"""The production's own media steps, as stage functions (``inputs``, ``params``, ``out_dir`` -> ``StageOutput``).

* ``frame_stage``: the exact frame ``index`` of a clip as PNG (decoded, lossless): the seed of a chained segment
  and the face of a lip-sync window.
* ``speech_stage``: a scene's speech from ``start`` to its end as one WAV of exactly ``frames / fps`` seconds (the
  on-screen speakers' lines at their offsets, silence between), and the same cut into the lip-sync windows, sample
  for sample (window ``i`` + window ``i+1`` = the track: no syllable is lost at a seam). With speakers given, a
  window's chunk holds only its speaker's lines (the others silent), so the lip-sync model animates that one face.
* ``lipsync_join_stage``: the lip-sync windows joined into one clip of exactly ``sum(windows)`` frames: a window
  that came back short (lip-sync models drop tail frames) holds its last frame, a long one is trimmed; the speech
  is muxed whole. The record says what each window asked for and got, and whom it lip-syncs.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from reelforge.media import MediaCheckFailed, frame_at, probe, run_ffmpeg
from reelforge.media.synth import write_wav
from reelforge.records import Product, StageOutput

__all__ = ["decode_mono", "frame_stage", "lipsync_join_stage", "speech_stage"]

SPEECH_RATE = 24000  # Qwen3-TTS's rate


def decode_mono(path: Path, rate: int) -> np.ndarray:
    """The audio of ``path`` as mono float32 at ``rate``."""
    done = run_ffmpeg(["-v", "error", "-i", str(path), "-map", "0:a:0", "-ac", "1", "-ar", str(rate),
                       "-f", "f32le", "-"])
    return np.frombuffer(done.stdout, dtype="<f4").astype(np.float32)


def frame_stage(inputs: Mapping[str, Path], params: Mapping[str, Any], out_dir: Path) -> StageOutput:
    """Frame ``params["index"]`` (0-based; negative counts from the end) of ``inputs["video"]`` at ``params["fps"]``."""
    fps = float(params["fps"])
    index = int(params["index"])
    if index < 0:
        count = probe(inputs["video"]).frame_count or 0
        index = count + index
    out_dir.mkdir(parents=True, exist_ok=True)
    grab = frame_at(inputs["video"], (index + 0.25) / fps, out_dir / "frame.png")
    record = {"index": index, "time_s": grab.time_s, "width": grab.width, "height": grab.height}
    return StageOutput(products=[Product(path=grab.path, kind="image", node_id="frame")], record=record)


def speech_stage(inputs: Mapping[str, Path], params: Mapping[str, Any], out_dir: Path) -> StageOutput:
    """``params``: ``offsets_s`` (per input ``line<i>``, from the track's start), ``windows`` (frames), ``fps``;
    optionally ``line_speakers`` (per line) and ``speakers`` (per window): a window's chunk then mixes only the
    lines of its speaker."""
    fps = float(params["fps"])
    windows = [int(w) for w in params["windows"]]
    rate = int(params.get("sample_rate", SPEECH_RATE))
    offsets = [float(o) for o in params["offsets_s"]]
    line_speakers = [str(s) for s in params.get("line_speakers") or [""] * len(offsets)]
    speakers = [str(s) for s in params.get("speakers") or [""] * len(windows)]
    total = round(sum(windows) * rate / fps)
    track = np.zeros(total, dtype=np.float32)
    alone = {s: np.zeros(total, dtype=np.float32) for s in set(line_speakers)}  # each speaker's lines only
    for i, offset in enumerate(offsets):
        samples = decode_mono(inputs[f"line{i}"], rate)
        at = max(0, round(offset * rate))
        piece = samples[: max(0, total - at)]
        track[at : at + piece.size] += piece
        alone[line_speakers[i]][at : at + piece.size] += piece
    out_dir.mkdir(parents=True, exist_ok=True)
    products = [Product(path=write_wav(out_dir / "speech.wav", track, rate), kind="audio", node_id="speech")]
    bounds = np.cumsum([0, *windows])
    silent = np.zeros(total, dtype=np.float32)
    for i, speaker in enumerate(speakers):
        lo, hi = round(bounds[i] * rate / fps), round(bounds[i + 1] * rate / fps)
        path = write_wav(out_dir / f"window{i:02d}.wav", alone.get(speaker, silent)[lo:hi], rate)
        products.append(Product(path=path, kind="audio", node_id=f"window{i}"))
    peak = float(np.max(np.abs(track))) if track.size else 0.0
    return StageOutput(products=products, record={"samples": total, "sample_rate": rate, "peak": round(peak, 4)})


def lipsync_join_stage(inputs: Mapping[str, Path], params: Mapping[str, Any], out_dir: Path) -> StageOutput:
    """``inputs``: ``chunk<i>`` (the windows' clips), ``speech`` (the whole track); ``params``: ``windows``, ``fps``,
    and ``speakers`` (whom each window lip-syncs, for the record)."""
    fps = float(params["fps"])
    windows = [int(w) for w in params["windows"]]
    got = []
    for i in range(len(windows)):
        info = probe(inputs[f"chunk{i}"])
        got.append(int(info.frame_count or 0))
        if not got[-1]:
            raise MediaCheckFailed("a lip-sync window has no frames", path=inputs[f"chunk{i}"])
    total = sum(windows)
    rate = int(params.get("sample_rate", 48000))
    samples = round(total * rate / fps)
    args: list[str] = ["-v", "error", "-y"]
    for i in range(len(windows)):
        args += ["-i", str(inputs[f"chunk{i}"])]
    args += ["-i", str(inputs["speech"])]
    parts = []
    for i, want in enumerate(windows):
        hold = max(0, want - got[i])
        parts.append(f"[{i}:v]fps={fps:g},setpts=PTS-STARTPTS,tpad=stop_mode=clone:stop={hold},"
                     f"trim=end_frame={want},setpts=PTS-STARTPTS,format=yuv420p[v{i}]")
    joined = "".join(f"[v{i}]" for i in range(len(windows)))
    parts.append(f"{joined}concat=n={len(windows)}:v=1:a=0[v]")
    parts.append(f"[{len(windows)}:a]aresample={rate},apad=whole_len={samples},atrim=end_sample={samples}[a]")
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / "lipsync.mp4"
    args += ["-filter_complex", ";".join(parts), "-map", "[v]", "-map", "[a]", "-r", f"{fps:g}",
             "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p",
             "-c:a", "aac", "-b:a", "160k", str(out)]
    run_ffmpeg(args)
    made = probe(out)
    if made.frame_count != total:
        raise MediaCheckFailed(f"joined lip sync has {made.frame_count} frames, not {total}", path=out)
    record = {"frames": total, "asked": windows, "got": got, "speakers": list(params.get("speakers") or []),
              "held": [max(0, w - g) for w, g in zip(windows, got, strict=True)],
              "trimmed": [max(0, g - w) for w, g in zip(windows, got, strict=True)]}
    return StageOutput(products=[Product(path=out, kind="video", node_id="clip")], record=record)
