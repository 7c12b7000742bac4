"""``--set PARAM=VALUE`` and ``--input PARAM=FILE`` of ``reelforge run template``, typed by a template's manifest.

``parse_assignments(template, sets, inputs)`` turns the command line's strings into the values ``bind`` takes
(``int``, ``float``, ``bool`` as ``true/false/1/0/yes/no``, ``choice`` as one of the choices' spellings, strings
as given) and checks the input files (they exist, can be read; an image parameter's file is an image). Every
problem is found at once and raised as one :class:`InputRejected`, each line naming the parameter.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from reelforge.errors import InputRejected
from reelforge.templates.manifest import Parameter
from reelforge.templates.template import Template, check_value

__all__ = ["FILE_TYPES", "parse_assignments"]

FILE_TYPES = frozenset({"image", "audio", "video"})
_TRUE, _FALSE = frozenset({"true", "1", "yes", "on"}), frozenset({"false", "0", "no", "off"})


def _a(word: str) -> str:
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"


def _split(text: str, flag: str, what: str) -> tuple[str, str] | str:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        return f"{flag} {text!r}: expected PARAM={what}"
    return name.strip(), value


def typed(param: Parameter, text: str) -> Any:
    """The value ``text`` means for ``param``; ValueError saying why it means none."""
    kind = param.type
    if kind == "int":
        try:
            return int(text.strip())
        except ValueError:
            raise ValueError(f"expected an int, got {text!r}") from None
    if kind == "float":
        try:
            value = float(text.strip())
        except ValueError:
            raise ValueError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise ValueError(f"expected a finite number, got {text!r}")
        return value
    if kind == "bool":
        lowered = text.strip().lower()
        if lowered in _TRUE or lowered in _FALSE:
            return lowered in _TRUE
        raise ValueError(f"expected true or false, got {text!r}")
    if kind == "choice":
        for choice in param.choices or []:
            if str(choice) == text or (isinstance(choice, bool) and text.lower() == str(choice).lower()):
                return choice
        raise ValueError(f"{text!r} is not one of {[str(c) for c in param.choices or []]}")
    return text


def _file_problem(param: Parameter, path: Path) -> str | None:
    if not path.is_file():
        return "is not a file" if path.exists() else "does not exist"
    try:
        with path.open("rb") as handle:
            handle.read(1)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if param.type == "image":
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as image:
                image.verify()
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            return f"is not an image ({exc})"
    return None


def parse_assignments(
    template: Template, sets: Iterable[str], inputs: Iterable[str]
) -> tuple[dict[str, Any], dict[str, Path]]:
    """The parameters and input files of one run, or :class:`InputRejected` listing every problem."""
    known = template.parameters
    listed = ", ".join(known) or "none"
    problems: list[str] = []
    params: dict[str, Any] = {}
    files: dict[str, Path] = {}
    seen: set[str] = set()

    def lookup(flag: str, name: str, text: str) -> Parameter | None:
        param = known.get(name)
        if param is None:
            problems.append(
                f"{flag} {text}: template {template.name!r} has no parameter {name!r} (parameters: {listed})"
            )
        elif name in seen:
            problems.append(f"{flag} {text}: parameter {name!r} is given twice")
            return None
        seen.add(name)
        return param

    def entries(texts: Iterable[str], flag: str, what: str) -> Iterator[tuple[str, str, str, Parameter]]:
        for text in texts:
            split = _split(text, flag, what)
            if isinstance(split, str):
                problems.append(split)
                continue
            param = lookup(flag, split[0], text)
            if param is not None:
                yield text, split[0], split[1], param

    for text, name, raw, param in entries(sets, "--set", "VALUE"):
        if param.type in FILE_TYPES or param.type == "folder":
            problems.append(f"--set {text}: parameter {name!r} takes {_a(param.type)} file: --input {name}=FILE")
            continue
        try:
            value = typed(param, raw)
        except ValueError as exc:
            problems.append(f"--set {text}: parameter {name!r} ({param.type}): {exc}")
            continue
        errors = check_value(param, value)
        if errors:
            problems.append(f"--set {text}: parameter {name!r}: {'; '.join(errors)}")
            continue
        params[name] = value
    for text, name, raw, param in entries(inputs, "--input", "FILE"):
        if param.type not in FILE_TYPES:
            problems.append(f"--input {text}: parameter {name!r} is {_a(param.type)}, not a file: --set {name}=VALUE")
            continue
        path = Path(raw).expanduser()
        problem = _file_problem(param, path)
        if problem:
            problems.append(f"--input {text}: the {param.type} file for parameter {name!r} {problem}")
            continue
        files[name] = path
    for param in template.manifest.parameters:
        if param.required and param.name not in params and param.name not in files:
            how = f"--input {param.name}=FILE" if param.type in FILE_TYPES else f"--set {param.name}=VALUE"
            problems.append(f"parameter {param.name!r} of template {template.name!r} is required: {how}")
    if problems:
        raise InputRejected("; ".join(problems))
    return params, files
