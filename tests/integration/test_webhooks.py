"""Signed webhooks against a real receiver on 127.0.0.1: signature, replay and tamper refusal, retries, bounds."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr, ValidationError
from webhook_receiver import WebhookReceiver

from reelforge.settings import Settings, StoreSettings, WebhookSettings
from reelforge.storage import JobFacts, LocalStore, Manifest, StageRecord, StoredOutput, open_store, write_manifest
from reelforge.webhooks import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookVerificationError,
    body_bytes,
    build_body,
    deliver,
    dispatcher,
    notify_in_background,
    sign,
    verify,
)

README = Path(__file__).resolve().parents[2] / "README.md"
SECRET = "whsec-test-5e6b1c0ffee-do-not-log"


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    recv = WebhookReceiver(secret=SECRET).start()
    yield recv
    recv.stop()


def hooks(*urls: str, **overrides: Any) -> WebhookSettings:
    values: dict[str, Any] = {"urls": list(urls), "secret": SecretStr(SECRET), "timeout_s": 2.0, "retries": 3,
                              "backoff_s": 0.05, "max_total_s": 10.0}
    return WebhookSettings(**(values | overrides))


def dead_url() -> str:
    with socket.socket() as sock:  # a port nobody listens on once this socket is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


# -- the signature scheme (pure) --------------------------------------------------------------------------


def test_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    import hmac

    body = b'{"event":"x"}'
    expected = hmac.new(SECRET.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign(SECRET, 1_700_000_000, body) == f"sha256={expected}"
    headers = {TIMESTAMP_HEADER: "1700000000", SIGNATURE_HEADER: f"sha256={expected}", EVENT_ID_HEADER: "e1"}
    assert verify(SECRET, body, headers, now=1_700_000_010) == "e1"
    with pytest.raises(WebhookVerificationError, match="signature"):
        verify(SECRET, body + b" ", headers, now=1_700_000_010)  # altered body
    with pytest.raises(WebhookVerificationError, match="signature"):
        verify("another-secret", body, headers, now=1_700_000_010)
    with pytest.raises(WebhookVerificationError, match="signature"):  # the timestamp is signed too
        verify(SECRET, body, {**headers, TIMESTAMP_HEADER: "1700000300"}, now=1_700_000_300)
    with pytest.raises(WebhookVerificationError, match="tolerance"):
        verify(SECRET, body, headers, now=1_700_000_000 + 301)
    with pytest.raises(WebhookVerificationError, match="Timestamp"):
        verify(SECRET, body, {SIGNATURE_HEADER: f"sha256={expected}"})


def test_settings_require_a_secret_with_urls_and_never_echo_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REELFORGE_WEBHOOK_URLS", "https://hooks.example/x?token=tok-123")
    with pytest.raises(ValidationError, match="REELFORGE_WEBHOOK_SECRET: required") as info:
        WebhookSettings()
    assert "tok-123" not in str(info.value)
    monkeypatch.setenv("REELFORGE_WEBHOOK_URLS", "ftp://hooks.example/x?token=tok-123")
    with pytest.raises(ValidationError, match="REELFORGE_WEBHOOK_URLS item 1") as info:
        WebhookSettings()
    assert "tok-123" not in str(info.value)
    monkeypatch.setenv("REELFORGE_WEBHOOK_URLS", "https://hooks.example/x, http://127.0.0.1:9/y")
    monkeypatch.setenv("REELFORGE_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("REELFORGE_WEBHOOK_RETRIES", "5")
    loaded = Settings.load().webhooks
    assert loaded.urls == ["https://hooks.example/x", "http://127.0.0.1:9/y"] and loaded.retries == 5
    assert SECRET not in loaded.model_dump_json() and SECRET not in repr(loaded)


# -- delivery against the receiver ------------------------------------------------------------------------


async def test_receiver_verifies_and_refuses_replayed_or_altered_bodies(receiver: WebhookReceiver) -> None:
    body = build_body("reelforge.character.ready", "mina-park", {"version": 1})
    [result] = await deliver(body, hooks(receiver.url))
    assert result.delivered and result.attempts == 1 and result.status == 200
    [got] = receiver.received
    assert got.status == 200 and json.loads(got.body)["id"] == body.id == got.headers[EVENT_ID_HEADER]
    assert json.loads(got.body)["event"] == "reelforge.character.ready"

    async with httpx.AsyncClient() as http:
        # The very same request again (a replay inside the tolerance): the event id was processed already.
        replay = await http.post(receiver.url, content=got.body, headers=got.headers)
        assert replay.status_code == 409
        # A captured request replayed later: its timestamp is too old.
        old = int(time.time()) - 3600
        stale = {**got.headers, TIMESTAMP_HEADER: str(old), SIGNATURE_HEADER: sign(SECRET, old, got.body),
                 EVENT_ID_HEADER: "another-id"}
        refused = await http.post(receiver.url, content=got.body, headers=stale)
        assert refused.status_code == 401 and "tolerance" in refused.text
        # The body altered in transit, headers kept.
        altered = got.body.replace(b"mina-park", b"evil-park")
        tampered = await http.post(receiver.url, content=altered, headers={**got.headers, EVENT_ID_HEADER: "id-3"})
        assert tampered.status_code == 401 and "signature" in tampered.text
    assert [r.status for r in receiver.received] == [200, 409, 401, 401]


async def test_5xx_is_retried_with_the_same_event_id_until_it_succeeds(receiver: WebhookReceiver) -> None:
    receiver.fail_first = 2
    body = build_body("reelforge.batch.completed", "b1", {"gpu_seconds": 12.5, "cost": 0.25})
    [result] = await deliver(body, hooks(receiver.url, backoff_s=0.1))
    assert result.delivered and result.attempts == 3
    assert [r.status for r in receiver.received] == [503, 503, 200]
    assert set(receiver.event_ids()) == {body.id}
    assert [r.body for r in receiver.received] == [body_bytes(body)] * 3
    assert result.elapsed_s >= 0.1 * 0.8 + 0.2 * 0.8  # backed off between attempts
    assert json.loads(receiver.accepted[0].body)["gpu_seconds"] == 12.5


async def test_a_4xx_answer_is_not_retried(receiver: WebhookReceiver) -> None:
    receiver.secret = "not-what-we-sign-with"  # every request is refused with 401
    [result] = await deliver(build_body("e", "s", {}), hooks(receiver.url))
    assert not result.delivered and result.attempts == 1 and result.status == 401 and result.error == "HTTP 401"


async def test_every_url_gets_it_and_a_dead_one_does_not_stop_the_others(receiver: WebhookReceiver) -> None:
    results = await deliver(build_body("e", "s", {}), hooks(dead_url(), receiver.url, retries=2))
    assert [r.delivered for r in results] == [False, True]
    assert results[0].attempts == 3 and "connection failed" in (results[0].error or "")


async def test_a_hanging_receiver_is_cut_by_the_timeout_and_the_total_bound(receiver: WebhookReceiver) -> None:
    receiver.hang_s = 5.0
    began = time.monotonic()
    [result] = await deliver(build_body("e", "s", {}), hooks(receiver.url, timeout_s=0.3, retries=10,
                                                                 backoff_s=0.05, max_total_s=1.2))
    assert time.monotonic() - began < 2.0
    assert not result.delivered and 2 <= result.attempts <= 5 and "timed out" in (result.error or "")


# -- in the background: never blocking, bounded, nothing secret logged -------------------------------------


def _settings(tmp_path: Path, webhooks: WebhookSettings, store: StoreSettings | None = None) -> Settings:
    base = Settings.load()
    return base.model_copy(update={"webhooks": webhooks,
                                   "store": store or StoreSettings(store=str(tmp_path / "store"))})


async def test_a_dead_receiver_neither_fails_nor_slows_the_caller_beyond_the_bound(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = _settings(tmp_path, hooks(dead_url(), retries=10, backoff_s=0.1, max_total_s=1.5))
    began = time.monotonic()
    event_id = notify_in_background(settings, "reelforge.character.ready", "mina-park", {"version": 1})
    returned = time.monotonic() - began
    assert event_id and returned < 0.2  # the caller goes on at once
    assert dispatcher().pending >= 1
    drained = await asyncio.to_thread(dispatcher().drain, 10)
    waited = time.monotonic() - began
    assert drained and 1.0 < waited < 1.5 + 1.5  # it kept trying for its bound, and stopped there
    assert f"({event_id}) of mina-park NOT delivered to http://127.0.0.1" in caplog.text
    assert SECRET not in caplog.text and "sha256=" not in caplog.text


async def test_background_body_has_manifest_artifacts_gpu_seconds_and_cost(
    tmp_path: Path, receiver: WebhookReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = _settings(tmp_path, hooks(receiver.url))
    store = open_store(settings.store)
    assert isinstance(store, LocalStore)
    manifest_ref = _stored_manifest(store)
    notify_in_background(settings, "reelforge.character.ready", "mina-park", {"version": 1},
                         manifest=manifest_ref, flow_run_id="run-1")
    assert await asyncio.to_thread(dispatcher().drain, 10)
    [got] = receiver.accepted
    body = json.loads(got.body)
    assert body["event"] == "reelforge.character.ready" and body["subject"] == "mina-park"
    assert body["flow_run_id"] == "run-1" and body["data"] == {"version": 1}
    assert body["manifest"]["key"] == manifest_ref.key and body["manifest"]["url"] is None  # local: no presign
    assert [a["stage"] for a in body["artifacts"]] == ["character_base_realistic"]
    assert body["artifacts"][0]["uri"].startswith("file://")
    assert body["gpu_seconds"] == 3.0 and body["cost"] == 0.5
    assert SECRET not in caplog.text


async def test_on_s3_the_body_carries_presigned_urls(
    tmp_path: Path, receiver: WebhookReceiver, s3_settings: StoreSettings
) -> None:
    settings = _settings(tmp_path, hooks(receiver.url), store=s3_settings)
    store = open_store(s3_settings)
    manifest_ref = _stored_manifest(store)
    notify_in_background(settings, "reelforge.character.ready", "mina-park", {}, manifest=manifest_ref)
    assert await asyncio.to_thread(dispatcher().drain, 20)
    body = json.loads(receiver.accepted[0].body)
    artifact = body["artifacts"][0]
    assert artifact["uri"].startswith("s3://") and "X-Amz-Signature=" in artifact["url"]
    assert "X-Amz-Signature=" in body["manifest"]["url"]
    assert s3_settings.s3_secret_access_key is not None
    assert s3_settings.s3_secret_access_key.get_secret_value() not in got_text(receiver)
    async with httpx.AsyncClient() as http:  # the presigned URL really fetches the artifact
        fetched = await http.get(artifact["url"])
    assert fetched.status_code == 200 and hashlib.sha256(fetched.content).hexdigest() == artifact["sha256"]


def got_text(receiver: WebhookReceiver) -> str:
    return "\n".join(r.body.decode() + json.dumps(r.headers) for r in receiver.received)


def _stored_manifest(store: Any) -> Any:
    image = store.put_bytes(b"\x89PNG fake image bytes", "characters/mina-park/v1/base/abc.png", kind="image")
    record = StageRecord(
        stage="character_base_realistic", version="t1", kind="gpu", job_id="mina-park-v1-base", cache_key="k",
        outputs=[StoredOutput(**image.model_dump(), node_id="9")],
        job=JobFacts(prompt_id="p1", worker="w0", gpu_seconds=3.0, cost=0.5),
    )
    manifest = Manifest(subject="mina-park", kind="character", name="Mina Park", version=1, stages=[record])
    return write_manifest(store, manifest, "characters/mina-park/v1/manifest.json")


def test_tasks_notify_reads_the_environment_and_never_raises(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    from tasks.webhooks import notify

    monkeypatch.setenv("REELFORGE_STORE", str(tmp_path / "store"))
    assert notify("reelforge.batch.completed", "b1", {}) is None  # no URLs: nothing sent
    monkeypatch.setenv("REELFORGE_WEBHOOK_URLS", receiver.url)
    assert notify("reelforge.batch.completed", "b1", {}) is None  # invalid (no secret): logged, not raised
    monkeypatch.setenv("REELFORGE_WEBHOOK_SECRET", SECRET)
    event_id = notify("reelforge.batch.completed", "b1", {"rows": 2})
    assert event_id and dispatcher().drain(10)
    assert [json.loads(r.body)["id"] for r in receiver.accepted] == [event_id]


async def test_the_readme_verification_snippet_accepts_ours_and_refuses_replays(receiver: WebhookReceiver) -> None:
    readme = README.read_text(encoding="utf-8")
    section = readme.split("## Webhooks", 1)[1]
    snippet = section.split("```python\n", 1)[1].split("```", 1)[0]
    scope: dict[str, Any] = {}
    exec(snippet, scope)  # the README's own code, run as a receiver would
    body = build_body("reelforge.character.ready", "mina-park", {})
    await deliver(body, hooks(receiver.url))
    [got] = receiver.received
    headers = {k.title(): v for k, v in got.headers.items()}
    seen: set[str] = set()
    assert scope["verify"](SECRET.encode(), got.body, headers, seen) == body.id
    with pytest.raises(PermissionError, match="already processed"):
        scope["verify"](SECRET.encode(), got.body, headers, seen)
    with pytest.raises(PermissionError, match="bad signature"):
        scope["verify"](SECRET.encode(), got.body + b"x", headers, set())
    old = str(int(time.time()) - 1000)
    stale = {**headers, "X-Reelforge-Timestamp": old, "X-Reelforge-Signature": sign(SECRET, int(old), got.body)}
    with pytest.raises(PermissionError, match="too old"):
        scope["verify"](SECRET.encode(), got.body, stale, set())
