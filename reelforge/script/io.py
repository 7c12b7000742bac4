"""Scripts as JSON: the stored, editable artifact.

``dump_script`` gives canonical bytes (UTF-8, names as written, two-space indent, a final newline), the same
for the same script, so a store names them by content. ``parse_script`` reads bytes or text back and
validates them: JSON syntax, shape (pydantic) and limits, every problem naming its scene and field.
``save_script`` writes a file atomically (temporary file + rename) and refuses to replace one unless told.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from pydantic import ValidationError

from reelforge.script.errors import ScriptProblem, ScriptValidationError
from reelforge.script.models import Script
from reelforge.script.validate import problems_from_pydantic, validate_script
from reelforge.settings import ScriptLimits


def dump_script(script: Script) -> bytes:
    """The script as canonical JSON bytes."""
    data = script.model_dump(mode="json")
    return (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def parse_script(data: bytes | str, limits: ScriptLimits, *, source: str | None = None) -> Script:
    """A validated script from JSON; ``ScriptValidationError`` (naming ``source``) lists what is wrong."""
    try:
        raw = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ScriptValidationError([ScriptProblem(message=f"not JSON: {exc}")], source=source) from None
    if not isinstance(raw, dict):
        raise ScriptValidationError(
            [ScriptProblem(message=f"expected a JSON object, got {type(raw).__name__}")], source=source
        )
    try:
        script = Script.model_validate(raw)
    except ValidationError as exc:
        raise ScriptValidationError(problems_from_pydantic(exc), source=source) from None
    return validate_script(script, limits, source=source)


def load_script(path: str | os.PathLike[str], limits: ScriptLimits) -> Script:
    """The validated script in the file at ``path`` (for example a person's edited copy)."""
    file = Path(path)
    try:
        data = file.read_bytes()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        problem = ScriptProblem(message=f"cannot read the file: {reason}")
        raise ScriptValidationError([problem], source=str(file)) from None
    return parse_script(data, limits, source=str(file))


def save_script(script: Script, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write ``script`` to ``path`` atomically; an existing file is kept (``FileExistsError``) unless
    ``overwrite``. Returns the path."""
    target = Path(path)
    data = dump_script(script)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(temp, target)
        else:
            try:
                os.link(temp, target)  # fails if the target exists: nothing stored is replaced
            except FileExistsError:
                raise
            except OSError:  # no hard links on this filesystem: check, then rename
                if target.exists():
                    raise FileExistsError(f"{target} exists") from None
                os.replace(temp, target)
            else:
                os.unlink(temp)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return target
