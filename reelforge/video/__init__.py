"""Video production engine (no Prefect): the plan from a script to frames, segments, chains, lip-sync windows and
line times (``plan``), the cast from the character records (``cast``), takes of shots (``takes``), the production's
own media steps as stage functions (``media``) and its bad-input errors (``errors``). The flow is flows/video.py.
"""

from reelforge.video.cast import CastMember, resolve_cast
from reelforge.video.errors import (
    CastMismatch,
    CharacterIncomplete,
    DurationRejected,
    MusicRejected,
    PoseRejected,
    ScriptRejected,
    UnknownCharacter,
    VideoInputError,
)
from reelforge.video.media import decode_mono, frame_stage, lipsync_join_stage, speech_stage
from reelforge.video.plan import (
    LipSyncPlan,
    ScenePlan,
    SegmentPlan,
    SnappedSpans,
    four_n_plus_one,
    keyframe_identities,
    lipsync_plan,
    lipsync_windows,
    place_lines,
    placement_text,
    plan_scenes,
    scene_frames,
    shot_identity,
    snap_spans,
    speaker_prompt,
)
from reelforge.video.takes import take_for

__all__ = [
    "CastMember",
    "CastMismatch",
    "CharacterIncomplete",
    "DurationRejected",
    "LipSyncPlan",
    "MusicRejected",
    "PoseRejected",
    "ScenePlan",
    "ScriptRejected",
    "SegmentPlan",
    "SnappedSpans",
    "UnknownCharacter",
    "VideoInputError",
    "decode_mono",
    "four_n_plus_one",
    "frame_stage",
    "keyframe_identities",
    "lipsync_join_stage",
    "lipsync_plan",
    "lipsync_windows",
    "place_lines",
    "placement_text",
    "plan_scenes",
    "resolve_cast",
    "scene_frames",
    "shot_identity",
    "snap_spans",
    "speaker_prompt",
    "speech_stage",
    "take_for",
]
