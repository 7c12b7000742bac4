"""Training sets: deterministic zips of images and captions, read back for a trainer."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from reelforge.hashing import sha256_file
from reelforge.training import DatasetError, dataset_stage, read_dataset, write_dataset


def images(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"img{i}.png"
        Image.new("RGB", (16, 16), (40 * i, 100, 200)).save(path)
        paths.append(path)
    return paths


def test_the_same_set_gives_the_same_bytes_and_reads_back(tmp_path: Path) -> None:
    pics = images(tmp_path / "in", 3)
    pairs = [(p, f"rfmina, pose {i}") for i, p in enumerate(pics)]
    first, second = tmp_path / "a.zip", tmp_path / "b.zip"
    write_dataset(pairs, "rfmina", first)
    write_dataset(pairs, "rfmina", second)
    assert sha256_file(first) == sha256_file(second)
    write_dataset([*pairs[:2], (pics[2], "rfmina, another caption")], "rfmina", second)
    assert sha256_file(first) != sha256_file(second), "a caption is part of the set's content"
    spec, unpacked = read_dataset(first, tmp_path / "out")
    assert spec.trigger == "rfmina" and [c for _, c in unpacked] == [c for _, c in pairs]
    assert [p.read_bytes() for p, _ in unpacked] == [p.read_bytes() for p in pics]
    assert (tmp_path / "out" / "000.txt").read_text() == "rfmina, pose 0"


def test_bad_sets_are_refused_with_the_file_named(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="at least one image"):
        write_dataset([], "t", tmp_path / "empty.zip")
    not_zip = tmp_path / "nope.zip"
    not_zip.write_text("plain text")
    with pytest.raises(DatasetError, match=r"not a training set.*nope\.zip"):
        read_dataset(not_zip, tmp_path / "x")
    with pytest.raises(DatasetError, match="2 images but 1 captions"):
        two = dict(zip(["a", "b"], images(tmp_path / "p", 2), strict=True))
        dataset_stage(two, {"captions": ["x"], "trigger": "t"}, tmp_path)
