"""Media tools: ffmpeg location and runners, probing, perceptual hashes, and the media engine (timelines,
assembly, music fitting, beat grid, loudness, subtitles, frames), with their exception tree.

See docs/media.md for what each part does and the figures measured.
"""

from reelforge.media.assembly import AssemblyResult, SnapReport, assemble, assemble_stage, snap_to_beats
from reelforge.media.beats import BeatGrid, analyse_music, beat_grid, onset_envelope, snap_boundaries, timeline_beats
from reelforge.media.clips import beats_stage, fit_music, last_frame_stage, normalize_clip, normalize_stage
from reelforge.media.errors import (
    CueOutOfRange,
    FFmpegError,
    FFmpegNotFound,
    FFmpegTimeout,
    FontUnavailable,
    FpsMismatch,
    InvalidInputs,
    MediaError,
    MediaInputError,
    MediaProbeError,
    MissingStream,
    MusicTooShort,
    SilentAudio,
    TimelineInvalid,
)
from reelforge.media.ffmpeg import ffmpeg_exe, run_ffmpeg
from reelforge.media.frames import FrameGrab, frame_at, last_frame
from reelforge.media.inputs import inspect_inputs
from reelforge.media.loudness import Loudness
from reelforge.media.phash import hamming, phash_file, phash_image, phash_stage
from reelforge.media.plan import Plan, make_plan
from reelforge.media.probe import probe
from reelforge.media.probe_types import AudioStream, MediaInfo, VideoStream
from reelforge.media.runner import Progress, run_job
from reelforge.media.subtitles import shipped_font, write_srt
from reelforge.media.timeline import (
    AudioTarget,
    BeatSnap,
    Clip,
    Cue,
    DialogueLine,
    Ducking,
    MusicBed,
    SubtitleStyle,
    Timeline,
    Transition,
    VideoTarget,
)
from reelforge.media.verify import (
    MediaCheckFailed,
    audio_stage,
    frames_for,
    measure_loudness,
    moov_before_mdat,
    verify_output,
    video_stage,
)

__all__ = [
    "AssemblyResult",
    "AudioStream",
    "AudioTarget",
    "BeatGrid",
    "BeatSnap",
    "Clip",
    "Cue",
    "CueOutOfRange",
    "DialogueLine",
    "Ducking",
    "FFmpegError",
    "FFmpegNotFound",
    "FFmpegTimeout",
    "FontUnavailable",
    "FpsMismatch",
    "FrameGrab",
    "InvalidInputs",
    "Loudness",
    "MediaCheckFailed",
    "MediaError",
    "MediaInfo",
    "MediaInputError",
    "MediaProbeError",
    "MissingStream",
    "MusicBed",
    "MusicTooShort",
    "Plan",
    "Progress",
    "SilentAudio",
    "SnapReport",
    "SubtitleStyle",
    "Timeline",
    "TimelineInvalid",
    "Transition",
    "VideoStream",
    "VideoTarget",
    "analyse_music",
    "assemble",
    "assemble_stage",
    "audio_stage",
    "beat_grid",
    "beats_stage",
    "ffmpeg_exe",
    "fit_music",
    "frame_at",
    "frames_for",
    "hamming",
    "inspect_inputs",
    "last_frame",
    "last_frame_stage",
    "make_plan",
    "measure_loudness",
    "moov_before_mdat",
    "normalize_clip",
    "normalize_stage",
    "onset_envelope",
    "phash_file",
    "phash_image",
    "phash_stage",
    "probe",
    "run_ffmpeg",
    "run_job",
    "shipped_font",
    "snap_boundaries",
    "snap_to_beats",
    "timeline_beats",
    "verify_output",
    "video_stage",
    "write_srt",
]
