"""Media tools: ffmpeg location and runners, probing, perceptual hashes, and their exception tree."""

from reelforge.media.errors import FFmpegError, FFmpegNotFound, FFmpegTimeout, MediaError
from reelforge.media.ffmpeg import ffmpeg_exe, run_ffmpeg
from reelforge.media.phash import hamming, phash_file, phash_image, phash_stage
from reelforge.media.verify import MediaCheckFailed, audio_stage, frames_for, video_stage

__all__ = [
    "FFmpegError",
    "FFmpegNotFound",
    "FFmpegTimeout",
    "MediaCheckFailed",
    "MediaError",
    "audio_stage",
    "ffmpeg_exe",
    "frames_for",
    "hamming",
    "phash_file",
    "phash_image",
    "phash_stage",
    "run_ffmpeg",
    "video_stage",
]
