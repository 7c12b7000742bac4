"""Batch plans: the CSV read row by row (every bad row its own error), names filled from pools, generated groups."""

from __future__ import annotations

from pathlib import Path

import pytest

from reelforge.characters import character_slug
from reelforge.characters.batch import BatchFileError, generate, read_csv
from reelforge.characters.types import UnknownType, character_type

HEADER = "character_type,character_name,age,gender,custom_prompt\n"


def test_bom_quotes_newlines_and_names_in_any_script_are_kept() -> None:
    text = ("\ufeff" + HEADER + 'kpop_idol,김민지,20,female,"smiling, warm\nsecond line"\n'
            "jpop_idol,さくら,19,F,\nfitness_athlete,Zoë Müller,30,,\n")
    plan = read_csv(text.encode("utf-8"), source="a.csv")
    assert plan.errors == []
    assert [r.name for r in plan.rows] == ["김민지", "さくら", "Zoë Müller"]
    assert plan.rows[0].custom_prompt == "smiling, warm\nsecond line"
    assert plan.rows[1].gender == "female"
    assert [r.slug for r in plan.rows] == [character_slug(r.name) for r in plan.rows]
    assert all(r.slug.isascii() and "/" not in r.slug for r in plan.rows)
    assert plan.rows[2].row == 3


def test_every_bad_row_gets_its_own_error_and_good_rows_go_on(tmp_path: Path) -> None:
    (tmp_path / "voice.wav").write_bytes(b"RIFF")
    text = HEADER.rstrip("\n") + ",voice_ref\n" + "\n".join([
        "kpop_idol,Good One,20,female,,",              # 1 good
        "wizard,Merlin,40,male,,",                      # 2 unknown type
        "kpop_idol,Too Old,60,female,,",                # 3 age out of range
        "kpop_idol,Who,20,robot,,",                     # 4 gender
        "rapper,Voice,25,male,,missing.wav",            # 5 voice_ref unreadable
        "rapper,!!!,25,male,,",                         # 6 only punctuation
        "kpop_idol,good one,21,male,,",                 # 7 duplicate of row 1 (same slug)
        "rapper,Has Voice,25,male,,voice.wav",          # 8 good, relative voice_ref
        "fitness_athlete_female,Sam,30,male,,",         # 9 gender against the type
        "kpop_idol,Young,twenty,female,,",              # 10 age not a number
    ]) + "\n"
    plan = read_csv(text, source="b.csv", base_dir=tmp_path)
    assert [r.row for r in plan.rows] == [1, 8]
    assert plan.rows[1].voice_ref == str(tmp_path / "voice.wav")
    by_row = {e.row: e for e in plan.errors}
    assert sorted(by_row) == [2, 3, 4, 5, 6, 7, 9, 10]
    expect = {
        2: ("character_type", "wizard", "unknown character type"),
        3: ("age", "60", "out of range for kpop_idol (17-28)"),
        4: ("gender", "robot", "not one of female, male, nonbinary"),
        5: ("voice_ref", "missing.wav", "no readable file"),
        6: ("character_name", "!!!", "only spaces or punctuation"),
        7: ("character_name", "good one", "duplicate of row 1"),
        9: ("gender", "male", "fitness_athlete_female characters are female"),
        10: ("age", "twenty", "not a whole number"),
    }
    for row, (column, value, words) in expect.items():
        error = by_row[row]
        assert (error.column, error.value) == (column, value), error
        assert words in error.message, error
        assert f"row {row} (line {row + 1}), column {column}" in str(error)


def test_line_numbers_follow_quoted_newlines() -> None:
    text = HEADER + 'kpop_idol,A,20,female,"one\ntwo\nthree"\nkpop_idol,B,99,female,\n'
    plan = read_csv(text, source="c.csv")
    (error,) = plan.errors
    assert (error.row, error.line) == (2, 5)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00binary", "not a CSV (binary data)"),
        (b"Kim,20,female\n", "no header row"),
        (HEADER.rstrip("\n").encode() + b",colour\nkpop_idol,A,20,female,,red\n", "unknown column(s) colour"),
        (b"character_type,character_name\n", "missing: age, gender, custom_prompt"),
        (b"\xff\xfe" + "x".encode("utf-16-le"), "UTF-16 text"),
        ("a,b\n\xe9t\xe9\n".encode("latin-1"), "not UTF-8"),
    ],
)
def test_a_file_that_is_no_batch_fails_as_a_whole(data: bytes, words: str) -> None:
    with pytest.raises(BatchFileError, match=r"^bad\.csv: ") as info:
        read_csv(data, source="bad.csv")
    assert words in str(info.value)


def test_size_limit() -> None:
    with pytest.raises(BatchFileError, match=r"over the limit of 100 \(REELFORGE_BATCH_MAX_BYTES\)"):
        read_csv(HEADER + "kpop_idol,A,20,female,\n" * 10, source="big.csv", max_bytes=100)


def test_missing_fields_are_filled_from_the_type_deterministically() -> None:
    text = HEADER + "kpop_idol,,,,\nrapper,,,,\nfitness_athlete_female,,,,\nmascot,,,,\n"
    one, two = read_csv(text, source="d.csv", seed=5), read_csv(text, source="d.csv", seed=5)
    assert one == two
    other = read_csv(text, source="d.csv", seed=6)
    assert [r.name for r in other.rows] != [r.name for r in one.rows]
    kpop, rapper, athlete, mascot = one.rows
    assert kpop.generated == ["name", "gender", "age"] and 17 <= kpop.age <= 28
    family = kpop.name.split()[0]
    assert family in {"Kim", "Lee", "Park", "Choi", "Jung", "Kang", "Cho", "Yoon", "Jang", "Lim", "Han", "Oh", "Seo",
                      "Shin", "Kwon", "Hwang", "Ahn", "Song", "Yoo", "Hong", "Jeon", "Go", "Moon", "Yang", "Son",
                      "Bae", "Baek", "Heo", "Nam", "Noh"} or len(kpop.name.split()) == 2
    assert athlete.gender == "female" and "gender" in athlete.generated and 20 <= athlete.age <= 40
    assert rapper.name and rapper.name != kpop.name
    assert mascot.gender == "nonbinary"
    assert len({r.slug for r in one.rows}) == 4


def test_pool_names_avoid_taken_and_given_names() -> None:
    first = read_csv(HEADER + "kpop_idol,,,female,\n", source="e.csv", seed=1).rows[0].name
    text = HEADER + f"kpop_idol,{first},20,female,\nkpop_idol,,,female,\n"
    plan = read_csv(text, source="e.csv", seed=1)
    assert plan.rows[0].name == first and plan.rows[1].name != first
    avoided = read_csv(HEADER + "kpop_idol,,,female,\n", source="e.csv", seed=1, taken={character_slug(first)})
    assert avoided.rows[0].name != first


def test_kpop_group_roles_and_the_maknae_is_the_youngest() -> None:
    plan = generate("kpop_idol", 7, seed=3, group="STELLAR", composition="female")
    roles = [r.role for r in plan.rows]
    assert set(roles) >= {"Leader", "Main Vocalist", "Main Rapper", "Main Dancer", "Visual", "Maknae"}
    assert len(set(roles)) == 7
    maknae = next(r for r in plan.rows if r.role == "Maknae")
    assert all(maknae.age < r.age for r in plan.rows if r is not maknae)
    assert all(r.gender == "female" and r.group == "STELLAR" for r in plan.rows)
    assert all(f"STELLAR, {r.role}" in r.custom_prompt for r in plan.rows)
    assert len({r.slug for r in plan.rows}) == 7
    mixed = generate("kpop_idol", 4, seed=3, group="MIX", composition="mixed")
    assert {r.gender for r in mixed.rows} == {"female", "male"}


def test_types() -> None:
    assert character_type("fitness_athlete_female").gender == "female"
    assert character_type("kpop_idol").gender is None
    with pytest.raises(UnknownType, match="did you mean 'kpop_idol'"):
        character_type("kpop_idl")
    with pytest.raises(ValueError, match="count must be at least 1"):
        generate("kpop_idol", 0)
