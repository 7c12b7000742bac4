"""Batches of characters: a CSV read into rows (every bad row its own error), or rows generated from a type.

``read_csv(text, source=..., seed=...)`` -> ``BatchPlan``: the good rows, filled in (missing names from the type's
name pool, missing genders from the type or a seeded choice, missing ages within the type's range), and a
``RowError`` per bad row naming its row, line, column, value and what is wrong. A file that is not a CSV, has no
header, an unknown column or is too big fails as a whole with ``BatchFileError`` before anything runs.
``generate(type, count, ...)`` makes rows from a type; for a K-pop group it assigns the roles (Leader, Main
Vocalist, Main Rapper, Main Dancer, Visual, Maknae: the youngest) and carries them into the prompts.

Names given in the file are taken as written (a second run of the same file makes new versions of the same
characters); names drawn from pools avoid the slugs in ``taken`` (the store's characters, names other batches
claimed), and the flow claims them in the store so that batches running at once never share one.
"""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from reelforge.characters.names import character_slug, has_name_characters, normalize_name
from reelforge.characters.pools import NameGenerator
from reelforge.characters.spec import Gender, StyleFamily
from reelforge.characters.types import TypeInfo, UnknownType, character_type
from reelforge.errors import InputRejected

__all__ = [
    "COLUMNS",
    "GROUP_ROLES",
    "OPTIONAL_COLUMNS",
    "BatchFileError",
    "BatchPlan",
    "BatchRow",
    "RowError",
    "generate",
    "read_csv",
]

COLUMNS = ("character_type", "character_name", "age", "gender", "custom_prompt")
OPTIONAL_COLUMNS = ("style", "voice_ref", "variations", "seed")
GROUP_ROLES = ("Leader", "Main Vocalist", "Main Rapper", "Main Dancer", "Visual", "Maknae")
_MORE_ROLES = ("Lead Vocalist", "Lead Dancer", "Lead Rapper", "Sub Vocalist", "Sub Rapper")
_GENDERS: dict[str, Gender] = {"female": "female", "f": "female", "male": "male", "m": "male",
                               "nonbinary": "nonbinary", "non-binary": "nonbinary", "nb": "nonbinary"}
Composition = Literal["female", "male", "mixed"]


class BatchFileError(InputRejected):
    """The file as a whole cannot be a batch (not a CSV, no header, unknown column, too big)."""

    def __init__(self, message: str, *, source: str) -> None:
        self.source = source
        self.reason = message
        super().__init__(f"{source}: {message}")

    def __reduce__(self) -> tuple[Any, ...]:  # results may be pickled: keep the keyword argument
        return (_batch_file_error, (self.reason, self.source))


def _batch_file_error(message: str, source: str) -> BatchFileError:
    return BatchFileError(message, source=source)


class RowError(BaseModel):
    """One bad row: where (row number from 1 after the header, the file's line), which column, what is wrong."""

    model_config = ConfigDict(frozen=True)

    row: int
    line: int
    column: str
    value: str
    message: str
    name: str = ""  # the row's character_name as written (to tell rows apart in a summary)

    def __str__(self) -> str:
        return f"row {self.row} (line {self.line}), column {self.column}: {self.value!r}: {self.message}"


class BatchRow(BaseModel):
    """One character to make, filled in; ``generated`` says which fields were not given."""

    model_config = ConfigDict(frozen=True)

    row: int
    name: str
    character_type: str  # the base type (fitness_athlete), the given word is in type_given
    type_given: str
    age: int
    gender: Gender
    custom_prompt: str = ""
    style: StyleFamily | None = None
    voice_ref: str | None = None
    variations: int | None = None
    seed: int = 0
    role: str | None = None
    group: str | None = None
    generated: list[str] = Field(default_factory=list)  # of name, age, gender
    renamed_from: str | None = None  # the name asked for, when another owner had it (a suffix made it unique)

    @property
    def slug(self) -> str:
        return character_slug(self.name)


class BatchPlan(BaseModel):
    """What a batch will make, what it refused, and the group when there is one."""

    rows: list[BatchRow] = Field(default_factory=list)
    errors: list[RowError] = Field(default_factory=list)
    group: str | None = None
    seed: int = 0


def _fill(kind: TypeInfo, rng: random.Random, gender: Gender | None, age: int | None) -> tuple[Gender, int]:
    chosen: Gender = gender if gender is not None else kind.gender if kind.gender is not None else rng.choice(
        kind.genders)
    return chosen, age if age is not None else rng.randint(kind.age_min, kind.age_max)


def read_csv(
    text: str | bytes,
    *,
    source: str,
    seed: int = 0,
    taken: set[str] | None = None,
    max_bytes: int = 1 << 20,
    max_variations: int = 50,
    base_dir: Path | None = None,
) -> BatchPlan:
    """Read a batch CSV (UTF-8, with or without BOM); see the module docstring."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    if len(data) > max_bytes:
        raise BatchFileError(f"{len(data)} bytes, over the limit of {max_bytes} (REELFORGE_BATCH_MAX_BYTES)",
                             source=source)
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise BatchFileError("UTF-16 text (Excel's 'Unicode Text'): save it as 'CSV UTF-8'", source=source)
    if b"\x00" in data:
        raise BatchFileError("not a CSV (binary data)", source=source)
    try:
        decoded = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BatchFileError(f"not UTF-8 text (byte {exc.start})", source=source) from exc
    reader = csv.DictReader(io.StringIO(decoded, newline=""))
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise BatchFileError(
            f"no header row with {','.join(COLUMNS)} (missing: {', '.join(missing)}); the first line must name the "
            "columns", source=source)
    unknown = [h for h in header if h not in COLUMNS + OPTIONAL_COLUMNS]
    if unknown:
        raise BatchFileError(f"unknown column(s) {', '.join(unknown)}; the optional ones are "
                             f"{', '.join(OPTIONAL_COLUMNS)}", source=source)
    reader.fieldnames = header
    names = NameGenerator(seed, taken or set())
    plan = BatchPlan(seed=seed)
    seen: dict[str, int] = {}
    try:
        records = list(enumerate(reader, start=1))
    except csv.Error as exc:
        raise BatchFileError(f"not a CSV: {exc}", source=source) from exc
    line_ends = _line_ends(decoded)
    for number, record in records:
        line = line_ends[number - 1] if number - 1 < len(line_ends) else 0
        errors, row = _row(record, number, line, names, seed, seen, max_variations, base_dir)
        plan.errors += errors
        if row is not None:
            plan.rows.append(row)
            seen[row.slug] = number
    return plan


def _line_ends(text: str) -> list[int]:
    """The line each data record starts on (quoted newlines make records span lines)."""
    reader = csv.reader(io.StringIO(text, newline=""))
    starts, previous = [], 1
    for _ in reader:
        starts.append(previous)
        previous = reader.line_num + 1
    return starts[1:]


def _row(
    record: dict[str | None, str | list[str] | None], number: int, line: int, names: NameGenerator, seed: int,
    seen: dict[str, int], max_variations: int, base_dir: Path | None,
) -> tuple[list[RowError], BatchRow | None]:
    def value(column: str) -> str:
        raw = record.get(column)
        return raw.strip() if isinstance(raw, str) else ""

    errors: list[RowError] = []

    def bad(column: str, message: str) -> None:
        errors.append(RowError(row=number, line=line, column=column, value=value(column), message=message,
                               name=value("character_name")))

    if record.get(None):
        bad("character_type", f"{len(record[None] or [])} more field(s) than the header has columns")
    kind: TypeInfo | None = None
    if not value("character_type"):
        bad("character_type", "missing (every row needs a type)")
    else:
        try:
            kind = character_type(value("character_type"))
        except UnknownType as exc:
            bad("character_type", str(exc))
    gender: Gender | None = None
    if value("gender"):
        gender = _GENDERS.get(value("gender").lower())
        if gender is None:
            bad("gender", "not one of female, male, nonbinary")
        elif kind is not None and kind.gender is not None and gender != kind.gender:
            bad("gender", f"{value('character_type')} characters are {kind.gender}")
    age: int | None = None
    if value("age"):
        try:
            age = int(value("age"))
        except ValueError:
            bad("age", "not a whole number")
        else:
            if kind is not None and not kind.age_min <= age <= kind.age_max:
                bad("age", f"out of range for {kind.name} ({kind.age_min}-{kind.age_max})")
    name = normalize_name(value("character_name"))
    if value("character_name") and not has_name_characters(name):
        bad("character_name", "has no letter, digit or emoji (only spaces or punctuation)")
    elif name and character_slug(name) in seen:
        bad("character_name", f"duplicate of row {seen[character_slug(name)]}")
    style = value("style") or None
    if style is not None and style not in ("realistic", "stylized"):
        bad("style", "not one of realistic, stylized")
    variations: int | None = None
    if value("variations"):
        try:
            variations = int(value("variations"))
            if not 1 <= variations <= max_variations:
                raise ValueError
        except ValueError:
            bad("variations", f"not a whole number in 1..{max_variations} (REELFORGE_MAX_VARIATIONS)")
    row_seed = seed + number
    if value("seed"):
        try:
            row_seed = int(value("seed"))
            if row_seed < 0:
                raise ValueError
        except ValueError:
            bad("seed", "not a whole number >= 0")
    voice_ref = value("voice_ref") or None
    if voice_ref is not None:
        path = Path(voice_ref).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        if not path.is_file():
            bad("voice_ref", f"no readable file at {path}")
        else:
            voice_ref = str(path)
    if errors or kind is None:
        return errors, None
    rng = random.Random(f"{seed}|row|{number}")
    filled_gender, filled_age = _fill(kind, rng, gender, age)
    generated = [f for f, given in (("gender", gender), ("age", age)) if given is None]
    if not name:
        name = names.next(kind, filled_gender)
        generated.insert(0, "name")
    else:
        names.take(character_slug(name))
    row = BatchRow(
        row=number, name=name, character_type=kind.name, type_given=value("character_type"), age=filled_age,
        gender=filled_gender, custom_prompt=value("custom_prompt"), style=style,  # type: ignore[arg-type]
        voice_ref=voice_ref, variations=variations, seed=row_seed, generated=generated,
    )
    return errors, row


def generate(
    type_name: str,
    count: int,
    *,
    seed: int = 0,
    group: str | None = None,
    composition: Composition | None = None,
    taken: set[str] | None = None,
) -> BatchPlan:
    """``count`` characters of one type; with ``group``, a group with roles (the youngest is the Maknae)."""
    kind = character_type(type_name)
    if count < 1:
        raise ValueError("count must be at least 1")
    rng = random.Random(f"{seed}|generate|{type_name}|{group}")
    names = NameGenerator(seed, taken or set())
    genders: list[Gender] = []
    for i in range(count):
        if composition == "mixed":
            genders.append(("female", "male")[i % 2] if kind.gender is None else kind.gender)
        elif composition is not None:
            genders.append(composition)
        else:
            genders.append(kind.gender if kind.gender is not None else rng.choice(kind.genders))
    ages = [rng.randint(kind.age_min, kind.age_max) for _ in range(count)]
    roles: list[str | None] = [None] * count
    if group:
        wanted = [r for r in GROUP_ROLES if r != "Maknae"] + list(_MORE_ROLES)
        youngest = min(range(count), key=lambda i: (ages[i], i))
        others = [i for i in range(count) if i != youngest]
        if count > 1:
            roles[youngest] = "Maknae"
            ages[youngest] = min(ages[youngest], *(ages[i] for i in others))
            for i in others:  # the Maknae is strictly the youngest
                ages[i] = max(ages[i], ages[youngest] + 1) if ages[youngest] + 1 <= kind.age_max else ages[i]
        for n, i in enumerate(others if count > 1 else [youngest]):
            roles[i] = wanted[n] if n < len(wanted) else "Member"
    rows = []
    for i in range(count):
        name = names.next(kind, genders[i])
        prompt = f"member of the K-pop group {group}, {roles[i]}" if group and roles[i] else ""
        rows.append(BatchRow(
            row=i + 1, name=name, character_type=kind.name, type_given=type_name, age=ages[i], gender=genders[i],
            custom_prompt=prompt, seed=seed + i + 1, role=roles[i], group=group,
            generated=["name", "age", "gender"],
        ))
    return BatchPlan(rows=rows, group=group, seed=seed)
