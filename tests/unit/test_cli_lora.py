"""``reelforge lora list`` / ``lora show`` against a temporary REELFORGE_STORE."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from safetensors.numpy import save_file
from typer.testing import CliRunner

from reelforge.cli import app
from reelforge.lora import LoraRecord, record_verdict, store_lora
from reelforge.preview.nodes.training import make_lora
from reelforge.storage import LocalStore


def _lora(path: Path, seed: int, rank: int) -> Path:
    lora = make_lora(
        digest=f"{seed:02x}" * 32,
        family="sdxl",
        algorithm="LoRA",
        rank=rank,
        steps=50,
        learning_rate=1e-4,
        lora_dtype="fp32",
        base_model="sd_xl_base_1.0.safetensors",
        metadata={"steps": "50"},
    )
    save_file(dict(lora.tensors), str(path), metadata=lora.metadata)
    return path


def _fields(name: str, slug: str, rank: int) -> dict[str, Any]:
    return {
        "character": name,
        "slug": slug,
        "character_type": "kpop_idol",
        "base_model": "sd_xl_base_1.0.safetensors",
        "training": {"steps": 50, "rank": rank, "learning_rate": 1e-4, "base_model": "sd_xl_base_1.0.safetensors"},
        "dataset_sha256": "a" * 64,
    }


@pytest.fixture
def stored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[LocalStore, list[LoraRecord]]:
    root = tmp_path / "store"
    monkeypatch.setenv("REELFORGE_STORE", str(root))
    store = LocalStore(root)
    records = [
        store_lora(store, _lora(tmp_path / "a.safetensors", 1, 8), _fields("Mina Park", "mina-park", 8)),
        store_lora(store, _lora(tmp_path / "b.safetensors", 2, 16), _fields("Mina Park", "mina-park", 16)),
        store_lora(store, _lora(tmp_path / "c.safetensors", 3, 4), _fields("김민아", "gimmina-6410b1be", 4)),
    ]
    records[0] = record_verdict(store, "mina-park", 1, verdict="accepted", test_scores={"identity": 0.93})
    return store, records


def test_list_table(stored: tuple[LocalStore, list[LoraRecord]]) -> None:
    _, records = stored
    result = CliRunner().invoke(app, ["lora", "list"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["CHARACTER", "VERSION", "FAMILY", "RANK", "SIZE", "SHA256", "VERDICT"]
    assert len(lines) == 4
    assert lines[1].split()[:5] == ["김민아", "v1", "sdxl", "4", f"{records[2].size / 1024:.1f}"]
    assert lines[2].split()[2:5] == ["v1", "sdxl", "8"]
    assert lines[2].split()[-2:] == [records[0].sha256[:12], "accepted"]
    assert lines[3].split()[-2:] == [records[1].sha256[:12], "-"]
    assert lines[3].startswith("Mina Park")


def test_list_json(stored: tuple[LocalStore, list[LoraRecord]]) -> None:
    result = CliRunner().invoke(app, ["lora", "list", "--json"])
    assert result.exit_code == 0, result.output
    listed = [LoraRecord.model_validate(item) for item in json.loads(result.stdout)]
    assert [(r.slug, r.version) for r in listed] == [("gimmina-6410b1be", 1), ("mina-park", 1), ("mina-park", 2)]
    assert listed[1].verdict == "accepted" and listed[1].test_scores == {"identity": 0.93}


def test_list_of_an_empty_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REELFORGE_STORE", str(tmp_path / "empty"))
    result = CliRunner().invoke(app, ["lora", "list"])
    assert (result.exit_code, result.stdout) == (0, f"no LoRAs stored in {tmp_path / 'empty'}\n")
    assert json.loads(CliRunner().invoke(app, ["lora", "list", "--json"]).stdout) == []


@pytest.mark.parametrize("name", ["Mina Park", "mina-park"])
def test_show_latest_by_name_or_slug(stored: tuple[LocalStore, list[LoraRecord]], name: str) -> None:
    _, records = stored
    result = CliRunner().invoke(app, ["lora", "show", name])
    assert result.exit_code == 0, result.output
    assert "version:             2" in result.stdout
    assert f"sha256:              {records[1].sha256}" in result.stdout
    assert f"file_key:            {records[1].file_key}" in result.stdout
    assert "  rank:              16" in result.stdout  # training and validation both say it
    assert "  layout:            comfyui" in result.stdout
    assert '  dtypes:            {"F32": 18}' in result.stdout
    assert "verdict:             -" in result.stdout


def test_show_a_version_as_json(stored: tuple[LocalStore, list[LoraRecord]]) -> None:
    _, records = stored
    result = CliRunner().invoke(app, ["lora", "show", "Mina Park", "--version", "1", "--json"])
    assert result.exit_code == 0, result.output
    assert LoraRecord.model_validate(json.loads(result.stdout)) == records[0]
    korean = CliRunner().invoke(app, ["lora", "show", "김민아", "--json"])
    assert json.loads(korean.stdout)["character"] == "김민아"


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["lora", "show", "Nobody"], "error: no LoRA 'Nobody' stored"),
        (["lora", "show", "Mina Park", "--version", "9"], "error: no LoRA v9 of 'Mina Park' stored"),
        (["lora", "show", "../etc", "--json"], "error: no LoRA '../etc' stored"),
    ],
)
def test_show_a_name_that_is_not_there(stored: tuple[LocalStore, list[LoraRecord]], args: list[str], line: str) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)  # no traceback
    assert result.stdout == ""
    assert result.stderr.splitlines() == [line]


def test_a_corrupt_record_is_one_line(stored: tuple[LocalStore, list[LoraRecord]]) -> None:
    store, _ = stored
    store.put_bytes(b"[]", "loras/zz/v1/record.json")
    result = CliRunner().invoke(app, ["lora", "list"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: loras/zz/v1/record.json: not a LoRA record")


def test_bad_settings_are_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REELFORGE_STORE", "s3://")
    result = CliRunner().invoke(app, ["lora", "list"])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: invalid settings: REELFORGE_STORE")
