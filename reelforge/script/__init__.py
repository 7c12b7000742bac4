"""Scripts: a brief becomes a typed, validated, stored script of scenes (the video production's first stage).

    from reelforge.script import Brief, ScriptLimits, make_writer, save_script, load_script

    limits = ScriptLimits()                             # or settings.script (REELFORGE_SCRIPT_...)
    brief = check_brief(Brief(text="...", target_duration_s=30, characters=["Mina"]), limits, known_names)
    script = await make_writer(settings.llm).write(brief, limits)   # LLM when configured, else offline
    data = dump_script(script)                          # canonical JSON bytes for the store
    edited = load_script("script.json", limits)         # ScriptValidationError naming scene and field

Writers: ``OfflineWriter`` (deterministic, no network) and ``LLMWriter`` (OpenAI-compatible API, structured
output, answers retried with their problems fed back). ``FakeLLM`` (``reelforge.script.fake_llm``) is a
chat-completions server on loopback for tests and demos. Design: docs/script.md.
"""

from reelforge.script.errors import (
    BriefError,
    LLMAnswerInvalid,
    LLMAuthError,
    LLMError,
    LLMRateLimited,
    LLMRequestRejected,
    LLMServerError,
    LLMTimeout,
    LLMUnavailable,
    PermanentLLMError,
    ScriptError,
    ScriptProblem,
    ScriptValidationError,
    TransientLLMError,
)
from reelforge.script.io import dump_script, load_script, parse_script, save_script
from reelforge.script.llm import LLMWriter
from reelforge.script.models import (
    CAMERA_MOVES,
    NARRATOR,
    SHOT_TYPES,
    Brief,
    CameraMove,
    DialogueLine,
    Scene,
    Script,
    ScriptDraft,
    ShotType,
)
from reelforge.script.offline import OFFLINE_WRITER, OfflineWriter
from reelforge.script.prompts import draft_schema
from reelforge.script.stage import script_stage, script_stage_params
from reelforge.script.validate import (
    brief_problems,
    check_brief,
    script_problems,
    speech_seconds,
    validate_script,
)
from reelforge.script.writer import ScriptWriter, make_writer
from reelforge.settings import ScriptLimits, ScriptSettings

__all__ = [
    "CAMERA_MOVES",
    "NARRATOR",
    "OFFLINE_WRITER",
    "SHOT_TYPES",
    "Brief",
    "BriefError",
    "CameraMove",
    "DialogueLine",
    "LLMAnswerInvalid",
    "LLMAuthError",
    "LLMError",
    "LLMRateLimited",
    "LLMRequestRejected",
    "LLMServerError",
    "LLMTimeout",
    "LLMUnavailable",
    "LLMWriter",
    "OfflineWriter",
    "PermanentLLMError",
    "Scene",
    "Script",
    "ScriptDraft",
    "ScriptError",
    "ScriptLimits",
    "ScriptProblem",
    "ScriptSettings",
    "ScriptValidationError",
    "ScriptWriter",
    "ShotType",
    "TransientLLMError",
    "brief_problems",
    "check_brief",
    "draft_schema",
    "dump_script",
    "load_script",
    "make_writer",
    "parse_script",
    "save_script",
    "script_problems",
    "script_stage",
    "script_stage_params",
    "speech_seconds",
    "validate_script",
]
