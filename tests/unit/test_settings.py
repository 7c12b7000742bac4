from __future__ import annotations

import pytest
from pydantic import ValidationError

from reelforge.settings import WorkerSettings, parse_worker_urls


def test_parse_labelled_and_plain_urls() -> None:
    endpoints = parse_worker_urls("image=http://gpu1:8188/, video+audio=https://gpu2.example/comfy,http://gpu3:8188")
    assert [e.url for e in endpoints] == ["http://gpu1:8188", "https://gpu2.example/comfy", "http://gpu3:8188"]
    assert [sorted(e.labels) for e in endpoints] == [["image"], ["audio", "video"], []]


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("gpu=http://a:1", "item 1 ('gpu=http://a:1'): unknown label(s) ['gpu']"),
        ("http://a:1,ftp://b", "item 2 ('ftp://b'): expected an http:// or https:// URL"),
        ("http://a:1,http://a:1/", "item 2: http://a:1 is listed twice"),
        ("http://user:pw@a:1", "credentials in the URL are not allowed"),
    ],
)
def test_bad_worker_specs_name_the_item(spec: str, fragment: str) -> None:
    with pytest.raises(ValueError, match="REELFORGE_COMFY_URLS") as info:
        parse_worker_urls(spec)
    assert fragment in str(info.value)
    assert "pw" not in str(info.value)


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REELFORGE_COMFY_URLS", "train=http://127.0.0.1:9000")
    monkeypatch.setenv("REELFORGE_COMFY_TOKEN", "s3cr3t-token")
    monkeypatch.setenv("REELFORGE_QUEUE_DEPTH", "2")
    settings = WorkerSettings()
    assert not settings.embedded
    assert settings.comfy_urls[0].labels == frozenset({"train"})
    assert settings.queue_depth == 2
    assert "s3cr3t" not in repr(settings) and "s3cr3t" not in settings.model_dump_json()


def test_invalid_queue_depth_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REELFORGE_QUEUE_DEPTH", "-1")
    with pytest.raises(ValidationError, match="queue_depth"):
        WorkerSettings()


def test_store_and_limit_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from reelforge.settings import LimitSettings, StoreSettings

    monkeypatch.setenv("REELFORGE_STORE", "s3://studio-media/reelforge")
    monkeypatch.setenv("REELFORGE_S3_SECRET_ACCESS_KEY", "very-secret")
    monkeypatch.setenv("REELFORGE_GPU_PRICE_PER_HOUR", "image=1.5,video=3,default=1")
    store, limits = StoreSettings(), LimitSettings()
    assert store.is_s3 and "very-secret" not in store.model_dump_json()
    assert limits.price_per_hour(frozenset({"video"})) == 3.0
    assert limits.price_per_hour(frozenset({"image", "video"})) == 3.0
    assert limits.price_per_hour(frozenset()) == 1.0
    assert limits.timeout_for("lora") == 4 * 3600.0


@pytest.mark.parametrize(
    ("var", "value", "fragment"),
    [
        ("REELFORGE_STORE", "ftp://host/x", "only local folders and s3://"),
        ("REELFORGE_GPU_PRICE_PER_HOUR", "gpu=2", "unknown label 'gpu'"),
        ("REELFORGE_GPU_PRICE_PER_HOUR", "image=cheap", "'cheap' is not a number"),
    ],
)
def test_bad_store_and_price_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, fragment: str
) -> None:
    from reelforge.settings import Settings

    monkeypatch.setenv(var, value)
    with pytest.raises(ValidationError) as info:
        Settings.load()
    assert fragment in str(info.value)
