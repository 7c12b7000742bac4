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


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("http://h:70000", "item 1 ('http://h:70000'): port out of range 1-65535"),
        ("image=http://a:1,video=http://h:0", "item 2 ('video=http://h:0'): port out of range"),
        ("http://h:abc", "item 1 ('http://h:abc'): the port is not a number"),
        ("http://[::1", "item 1 ('http://[::1'): not a valid URL"),
    ],
)
def test_bad_ports_name_the_item(monkeypatch: pytest.MonkeyPatch, spec: str, fragment: str) -> None:
    with pytest.raises(ValueError, match="REELFORGE_COMFY_URLS") as direct:
        parse_worker_urls(spec)
    assert fragment in str(direct.value)
    monkeypatch.setenv("REELFORGE_COMFY_URLS", spec)
    with pytest.raises(ValidationError) as info:
        WorkerSettings()
    assert fragment in str(info.value)


@pytest.mark.parametrize("spec", ["http://mina:hunter2@gpu1:8188", "gpu=http://mina:hun@ter2@gpu1:8188"])
def test_no_secret_in_settings_errors(monkeypatch: pytest.MonkeyPatch, spec: str) -> None:
    from typer.testing import CliRunner

    from reelforge.cli import app

    monkeypatch.setenv("REELFORGE_COMFY_URLS", spec)
    with pytest.raises(ValidationError) as info:
        WorkerSettings()
    shown = str(info.value) + repr(info.value) + repr(info.value.errors())
    assert "hunter2" not in shown and "ter2" not in shown and "REELFORGE_COMFY_URLS" in shown
    result = CliRunner().invoke(app, ["config", "show"])
    assert result.exit_code == 2
    assert "REELFORGE_COMFY_URLS" in result.output and "hunter2" not in result.output and "ter2" not in result.output


def test_every_settings_class_hides_its_input() -> None:
    from reelforge.settings import LimitSettings, LLMSettings, Settings, StoreSettings, WorkerEndpoint

    for cls in (WorkerSettings, StoreSettings, LimitSettings, LLMSettings, Settings, WorkerEndpoint):
        assert cls.model_config.get("hide_input_in_errors") is True, cls


@pytest.mark.parametrize(
    ("var", "value", "fragment"),
    [
        ("REELFORGE_QUEUE_DEPTH", "-1", "REELFORGE_QUEUE_DEPTH: Input should be greater than or equal to 0"),
        ("REELFORGE_LLM_TIMEOUT_S", "soon", "REELFORGE_LLM_TIMEOUT_S: Input should be a valid number"),
        ("REELFORGE_TIMEOUT_VIDEO_S", "0", "REELFORGE_TIMEOUT_VIDEO_S: Input should be greater than 0"),
        ("REELFORGE_WORKER_GRACE_S", "0", "REELFORGE_WORKER_GRACE_S: Input should be greater than 0"),
        ("REELFORGE_DOWNLOAD_RETRIES", "11", "REELFORGE_DOWNLOAD_RETRIES: Input should be less than or equal to 10"),
        ("REELFORGE_PREVIEW_LATENCY", "bogus", "REELFORGE_PREVIEW_LATENCY: bad latency profile 'bogus'"),
        ("REELFORGE_PREVIEW_LATENCY", "gpu:nan", "bad latency profile"),
        ("REELFORGE_MULTIPART_THRESHOLD_MB", "1", "REELFORGE_MULTIPART_THRESHOLD_MB: Input should be greater"),
    ],
)
def test_every_error_names_its_variable(monkeypatch: pytest.MonkeyPatch, var: str, value: str, fragment: str) -> None:
    from reelforge.settings import Settings

    monkeypatch.setenv(var, value)
    with pytest.raises(ValidationError) as info:
        Settings.load()
    assert fragment in str(info.value)
    assert "input_value" not in str(info.value)


def test_worker_grace_and_download_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = WorkerSettings()
    assert (defaults.worker_grace_s, defaults.download_retries) == (20.0, 3)
    assert "healthy worker" in (WorkerSettings.model_fields["worker_grace_s"].description or "")
    assert "retried" in (WorkerSettings.model_fields["download_retries"].description or "")
    monkeypatch.setenv("REELFORGE_WORKER_GRACE_S", "2.5")
    monkeypatch.setenv("REELFORGE_DOWNLOAD_RETRIES", "0")
    monkeypatch.setenv("REELFORGE_PREVIEW_LATENCY", " fixed:0.5 ")
    settings = WorkerSettings()
    assert (settings.worker_grace_s, settings.download_retries, settings.preview_latency) == (2.5, 0, "fixed:0.5")


@pytest.mark.parametrize(
    ("value", "fix"),
    [
        ("s3:/bucket/prefix", "write s3://bucket/prefix"),
        ("s3:bucket", "write s3://bucket"),
        ("S3://bucket", "write s3://bucket"),
        ("s3//bucket", "write s3://bucket"),
        ("s3:\\bucket", "write s3://bucket"),
        ("s3://", "no bucket"),
        ("s3:///bucket", "no bucket"),
        ("s3://bucket/../x", "the prefix is not a valid key"),
    ],
)
def test_s3_near_misses_are_refused(monkeypatch: pytest.MonkeyPatch, value: str, fix: str) -> None:
    from reelforge.settings import StoreSettings

    monkeypatch.setenv("REELFORGE_STORE", value)
    with pytest.raises(ValidationError) as info:
        StoreSettings()
    assert fix in str(info.value) and "REELFORGE_STORE" in str(info.value)


@pytest.mark.parametrize("value", ["./media-store", "/srv/media", "s3data", "./s3:odd", "s3://bucket", "s3://b/p/q"])
def test_good_store_targets(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    from reelforge.settings import StoreSettings

    monkeypatch.setenv("REELFORGE_STORE", value)
    assert StoreSettings().store == value
