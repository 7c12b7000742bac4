"""The CPU stages: each one line on the stage mechanism (its engine call, its version, its kind).

Bump a stage's ``version`` when its engine function changes what it returns for the same inputs: its cached
results are then computed again.
"""

from __future__ import annotations

from reelforge.identity import identity_stage
from reelforge.lora import external_train_stage, lora_check_stage
from reelforge.media import assemble_stage, audio_stage, beats_stage, phash_stage, video_stage
from reelforge.script import script_stage
from reelforge.training import dataset_stage
from reelforge.video import frame_stage, lipsync_join_stage, speech_stage
from tasks.stage import Stage

__all__ = [
    "ASSEMBLE", "AUDIO_CHECK", "BEATS", "DATASET", "FRAME", "IDENTITY", "LIPSYNC_JOIN", "LORA_CHECK",
    "LORA_TRAIN_EXTERNAL", "PHASH", "SCRIPT", "SPEECH", "VIDEO_CHECK",
]

# version 2: the reduced-before-DCT hash (bench/phash.py), up to 2 bits from version 1 on images of 256 px and more.
PHASH = Stage.cpu("phash", version="2", fn=phash_stage, process=True)
"""64-bit perceptual hash of one stored image (``inputs["image"]``): record ``{"phash", "width", "height"}``."""

DATASET = Stage.cpu("dataset", version="1", fn=dataset_stage)
"""A training set (deterministic zip of images + captions) from ``inputs`` (in name order) and
``params {"trigger", "captions"}``: record ``{"images", "trigger", "index"}``."""

AUDIO_CHECK = Stage.cpu("audio_check", version="1", fn=audio_stage, process=True)
"""Facts of a stored audio file (``inputs["audio"]``), refusing non-audio: record ``{"duration_s", ...}``."""

BEATS = Stage.cpu("beats", version="1", fn=beats_stage, process=True)
"""The beat grid of a stored music file (``inputs["music"]``): record ``{"bpm", "first_s", "beats_s", ...}``; a
track without a steady pulse gets ``bpm`` 0 and no beats."""

VIDEO_CHECK = Stage.cpu("video_check", version="1", fn=video_stage, process=True)
"""A stored video has video and audio streams and the expected duration: record ``{"duration_s", "frames", ...}``."""

IDENTITY = Stage.cpu("identity", version="1", fn=identity_stage, process=True)
"""Test images (``test*`` inputs) scored against references (``ref*``): record = ``IdentityScores`` (by input name)."""

LORA_CHECK = Stage.cpu("lora_check", version="1", fn=lora_check_stage, process=True)
"""A produced LoRA (``inputs["lora"]``) validated: layout, rank, family, dtypes, no NaN/inf; record = the report."""

LORA_TRAIN_EXTERNAL = Stage.cpu(
    "lora_train_external", version="1", fn=external_train_stage, process=True, timeout="lora"
)
"""A LoRA trained by an external command (REELFORGE_LORA_TRAINER_CMD) on a stored training set; bounded by the
``lora`` timeout."""

FRAME = Stage.cpu("frame", version="1", fn=frame_stage, process=True)
"""The exact frame ``params["index"]`` of a stored clip (``inputs["video"]``) as PNG: a chain seed, a lip-sync face."""

SPEECH = Stage.cpu("speech", version="1", fn=speech_stage, process=True)
"""A scene's on-screen speech (``line<i>`` at ``offsets_s``) as one exact-length WAV plus its lip-sync windows."""

LIPSYNC_JOIN = Stage.cpu("lipsync_join", version="1", fn=lipsync_join_stage, process=True)
"""Lip-sync windows (``chunk<i>``) joined to exactly ``sum(windows)`` frames with the speech (``speech``) muxed."""

ASSEMBLE = Stage.cpu("assemble", version="1", fn=assemble_stage, process=True)
"""A ``Timeline`` (``params["timeline"]``, paths naming inputs) assembled and verified: video, SRT, poster, timeline
picture, last frame (reelforge.media.assemble)."""

SCRIPT = Stage.cpu("script", version="1", fn=script_stage)
"""A video's script written from ``params`` (brief, limits, writer identity; reelforge.script.stage) as JSON: the
same brief and writer give back the stored script. A thread stage: it calls the LLM API from this process."""
