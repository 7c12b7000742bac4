"""After a run with every secret set (worker token, S3 keys, an LLM key, a webhook secret), none of them appears
in a log line, a stored artifact or manifest, an emitted event, a webhook body or its headers."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from webhook_receiver import WebhookReceiver

from flows.character import character_flow
from reelforge.preview.server import PreviewWorker, PreviewWorkerThread
from reelforge.webhooks import dispatcher

SECRETS = {
    "REELFORGE_COMFY_TOKEN": "comfy-tok-91b2e7-secret",
    "REELFORGE_S3_ACCESS_KEY_ID": "AKIAREELFORGE0SECRET",
    "REELFORGE_S3_SECRET_ACCESS_KEY": "s3-secret-4c2d9f1a-value",
    "AWS_SECRET_ACCESS_KEY": "aws-env-secret-77e1b3",
    "REELFORGE_LLM_API_KEY": "sk-llm-key-0a9f3c-secret",
    "REELFORGE_WEBHOOK_SECRET": "whsec-flow-5d8e2b-secret",
}


@pytest.fixture
def workers() -> Iterator[list[PreviewWorkerThread]]:
    threads = [PreviewWorkerThread(PreviewWorker(latency="instant", name=f"s{i}")) for i in range(2)]
    for thread in threads:
        thread.start()
    yield threads
    for thread in threads:
        thread.stop()


async def test_no_secret_in_logs_store_events_or_webhooks(
    workers: list[PreviewWorkerThread], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture, emitted: list[dict[str, Any]],
) -> None:
    receiver = WebhookReceiver(secret=SECRETS["REELFORGE_WEBHOOK_SECRET"]).start()
    try:
        for name, value in SECRETS.items():
            monkeypatch.setenv(name, value)
        store = tmp_path / "store"
        monkeypatch.setenv("REELFORGE_STORE", str(store))
        monkeypatch.setenv("REELFORGE_COMFY_URLS", ",".join(w.url for w in workers))
        monkeypatch.setenv("REELFORGE_WEBHOOK_URLS", receiver.url)
        monkeypatch.setenv("REELFORGE_DEDUP_RETRIES", "0")
        caplog.set_level(logging.DEBUG)
        result = await character_flow(name="Secret Keeper", variations=1, width=256, height=256, lora=False,
                                      intro=False)
        assert dispatcher().drain(20)
    finally:
        receiver.stop()

    # The run did what a run does, so there was something to leak into.
    [hook] = receiver.accepted
    body = json.loads(hook.body)
    assert body["event"] == "reelforge.character.ready" and body["subject"] == result.slug
    assert body["flow_run_id"] == result.flow_run_id and len(body["artifacts"]) >= 3
    assert any(e["event"] == "reelforge.character.ready" for e in emitted)
    stored = [p for p in store.rglob("*") if p.is_file()]
    assert any(p.name == "manifest.json" for p in stored)
    assert caplog.records

    places = {
        "logs": caplog.text,
        "events": json.dumps(emitted, default=str),
        "webhooks": "\n".join(r.body.decode() + json.dumps(r.headers) for r in receiver.received),
    }
    for path in stored:
        places[str(path.relative_to(store))] = path.read_bytes().decode("utf-8", "replace")
    leaks = [(name, where) for name, value in SECRETS.items() for where, text in places.items() if value in text]
    assert leaks == []
