from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from reelforge.cli import app


def test_config_show_masks_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REELFORGE_COMFY_URLS", "image=http://127.0.0.1:8188")
    monkeypatch.setenv("REELFORGE_COMFY_TOKEN", "tok-abc123")
    result = CliRunner().invoke(app, ["config", "show"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["workers"]["comfy_urls"] == [{"url": "http://127.0.0.1:8188", "labels": ["image"]}]
    assert shown["workers"]["comfy_token"] == "**********"
    assert "tok-abc123" not in result.output


def test_config_show_reports_bad_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REELFORGE_COMFY_URLS", "gpu=http://127.0.0.1:8188")
    result = CliRunner().invoke(app, ["config", "show"])
    assert result.exit_code == 2
    assert "unknown label(s) ['gpu']" in result.output
