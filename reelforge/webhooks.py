"""Signed webhooks: a JSON POST per milestone event to every configured URL, never blocking or failing a flow.

The scheme (README "Webhooks"):

* body: ``WebhookBody`` as compact JSON (event, event id, subject, flow run id, the manifest and artifacts with
  their store URIs, presigned ``url`` when the store is S3, GPU seconds, cost, the event's own payload);
* headers: ``X-Reelforge-Event``, ``X-Reelforge-Event-Id`` (the same on every attempt and every URL: the
  receiver's idempotency key), ``X-Reelforge-Timestamp`` (Unix seconds of this attempt) and
  ``X-Reelforge-Signature: sha256=<hex>``: HMAC-SHA256 with ``REELFORGE_WEBHOOK_SECRET`` over
  ``<timestamp>.<body bytes>``. A receiver recomputes it (``verify``), refuses timestamps older than its
  tolerance (replays) and event ids it has seen already.

Delivery (``deliver``): every URL at once; a 5xx, a 429, a timeout or a connection error is retried with
doubling backoff (``REELFORGE_WEBHOOK_RETRIES``, ``_BACKOFF_S``), each attempt re-signed with its own timestamp;
any other answer ends that URL's delivery. Everything one event sends is bounded by
``REELFORGE_WEBHOOK_MAX_TOTAL_S``. ``notify_in_background`` runs it in a daemon thread with its own event loop,
so the caller (a flow) returns at once; at process exit pending deliveries are waited for, at most until their
bound. Failures are logged (event, id, URL without its query, why), never raised, and nothing logged carries the
secret or a signature.
"""

from __future__ import annotations

import asyncio
import atexit
import hashlib
import hmac
import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, Field

from reelforge.settings import Settings, WebhookSettings
from reelforge.storage import ArtifactRef, ArtifactStore, StoreError, open_store, read_manifest

__all__ = [
    "EVENT_HEADER",
    "EVENT_ID_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "Delivery",
    "WebhookArtifact",
    "WebhookBody",
    "WebhookDispatcher",
    "WebhookVerificationError",
    "body_bytes",
    "build_body",
    "deliver",
    "dispatcher",
    "notify_in_background",
    "redact_url",
    "sign",
    "verify",
]

log = logging.getLogger(__name__)

EVENT_HEADER = "X-Reelforge-Event"
EVENT_ID_HEADER = "X-Reelforge-Event-Id"
TIMESTAMP_HEADER = "X-Reelforge-Timestamp"
SIGNATURE_HEADER = "X-Reelforge-Signature"
DEFAULT_TOLERANCE_S = 300
_GRACE_S = 0.5  # the background backstop's margin past a delivery's own bound


class WebhookArtifact(BaseModel):
    """One stored artifact named in a webhook: store key and URI, and a presigned GET URL on S3."""

    key: str
    uri: str
    sha256: str
    media_type: str
    kind: str
    stage: str | None = None  # the stage that made it (manifest artifacts)
    url: str | None = None  # presigned GET URL (S3 stores only; valid REELFORGE_PRESIGN_EXPIRY_S)


class WebhookBody(BaseModel):
    """What a webhook POSTs (as compact JSON)."""

    id: str  # the event id: the same on every retry and every URL
    event: str  # reelforge.character.ready, reelforge.video.ready, reelforge.batch.completed, ...
    subject: str  # a character or production slug, a batch id
    occurred_at: datetime
    flow_run_id: str | None = None
    manifest: WebhookArtifact | None = None
    artifacts: list[WebhookArtifact] = Field(default_factory=list)
    gpu_seconds: float | None = None  # executed by this run (cached stages were paid for before)
    cost: float | None = None
    data: dict[str, Any] = Field(default_factory=dict)  # the event's own payload


class WebhookVerificationError(ValueError):
    """A webhook request that must be refused: no or bad signature, old timestamp."""


def body_bytes(body: WebhookBody) -> bytes:
    """The exact bytes sent and signed."""
    return body.model_dump_json().encode("utf-8")


def sign(secret: str | bytes, timestamp: int, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 with ``secret`` over ``<timestamp>.`` + ``body``."""
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    digest = hmac.new(key, f"{int(timestamp)}.".encode("ascii") + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify(
    secret: str | bytes,
    body: bytes,
    headers: Mapping[str, str],
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> str:
    """Check a received webhook; returns its event id, or raises ``WebhookVerificationError``.

    ``headers`` must be case-insensitive (aiohttp's, httpx's, a lower-cased dict). The receiver still has to
    refuse an event id it has processed already (a replay within the tolerance, or our own retry).
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    raw_ts = lowered.get(TIMESTAMP_HEADER.lower(), "")
    given = lowered.get(SIGNATURE_HEADER.lower(), "")
    event_id = lowered.get(EVENT_ID_HEADER.lower(), "")
    try:
        timestamp = int(raw_ts)
    except ValueError:
        raise WebhookVerificationError(f"missing or malformed {TIMESTAMP_HEADER}") from None
    if not hmac.compare_digest(sign(secret, timestamp, body), given):
        raise WebhookVerificationError("signature mismatch")
    age = (time.time() if now is None else now) - timestamp
    if abs(age) > tolerance_s:
        raise WebhookVerificationError(f"timestamp outside the tolerance ({age:.0f} s off, at most {tolerance_s} s)")
    if not event_id:
        raise WebhookVerificationError(f"missing {EVENT_ID_HEADER}")
    return event_id


def redact_url(url: str) -> str:
    """The URL as logged: scheme, host, port and path only (a query or userinfo may hold a token)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


# -- the body ---------------------------------------------------------------------------------------------


def _artifact(store: ArtifactStore | None, ref: ArtifactRef, stage: str | None = None) -> WebhookArtifact:
    url = None
    if store is not None and ref.uri.startswith("s3://"):
        try:
            url = store.url(ref.key)
        except StoreError as exc:
            log.warning("webhook: no presigned URL for %s: %s", ref.key, type(exc).__name__)
    return WebhookArtifact(key=ref.key, uri=ref.uri, sha256=ref.sha256, media_type=ref.media_type, kind=ref.kind,
                           stage=stage, url=url)


def build_body(
    event: str,
    subject: str,
    data: Mapping[str, Any],
    *,
    store: ArtifactStore | None = None,
    manifest: ArtifactRef | None = None,
    artifacts: Sequence[ArtifactRef] = (),
    flow_run_id: str | None = None,
    event_id: str | None = None,
    occurred_at: datetime | None = None,
) -> WebhookBody:
    """The body of one event. With a ``manifest`` (and its store) its artifacts, GPU seconds and cost are added;
    ``gpu_seconds`` / ``cost`` in ``data`` (a batch's totals) are used when there is no manifest."""
    body = WebhookBody(
        id=event_id or uuid.uuid4().hex, event=event, subject=subject,
        occurred_at=occurred_at or datetime.now(UTC), flow_run_id=flow_run_id,
        data=json.loads(json.dumps(dict(data), default=str)),
    )
    body.artifacts = [_artifact(store, ref) for ref in artifacts]
    if isinstance(data.get("gpu_seconds"), int | float):
        body.gpu_seconds = float(data["gpu_seconds"])
    if isinstance(data.get("cost"), int | float):
        body.cost = float(data["cost"])
    if manifest is not None:
        body.manifest = _artifact(store, manifest)
        if store is not None:
            try:
                stored = read_manifest(store, manifest.key)
            except StoreError as exc:  # the body goes out with what the event itself says
                log.warning("webhook %s (%s): manifest %s unreadable: %s", event, body.id, manifest.key,
                            type(exc).__name__)
            else:
                body.gpu_seconds = round(stored.total_gpu_seconds, 6)
                body.cost = round(stored.total_cost, 6)
                body.artifacts += [
                    _artifact(store, ArtifactRef(**out.model_dump(exclude={"node_id"})), stage.stage)
                    for stage in stored.stages for out in stage.outputs
                ]
    return body


# -- delivery ---------------------------------------------------------------------------------------------


class Delivery(BaseModel):
    """What sending one event to one URL came to."""

    url: str  # redacted
    delivered: bool
    attempts: int
    status: int | None = None  # the last HTTP status, if any answer came
    error: str | None = None  # why it was not delivered (no secret, no query string)
    elapsed_s: float = 0.0


def _retryable(status: int) -> bool:
    return status >= 500 or status in (408, 429)


async def _deliver_one(
    http: httpx.AsyncClient, url: str, body: WebhookBody, payload: bytes, settings: WebhookSettings,
    secret: str, deadline: float, clock: Callable[[], float],
) -> Delivery:
    shown = redact_url(url)
    begin = time.monotonic()
    status: int | None = None
    error: str | None = None
    attempts = 0
    for attempt in range(settings.retries + 1):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            error = f"{error or 'not sent'}; total time {settings.max_total_s:g} s used up"
            break
        attempts += 1
        timestamp = int(clock())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "reelforge-webhooks/1",
            EVENT_HEADER: body.event,
            EVENT_ID_HEADER: body.id,
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign(secret, timestamp, payload),
        }
        try:
            resp = await http.post(url, content=payload, headers=headers, timeout=min(settings.timeout_s, remaining))
        except httpx.TimeoutException as exc:
            status, error = None, f"timed out ({type(exc).__name__})"
        except httpx.TransportError as exc:
            status, error = None, f"connection failed ({type(exc).__name__})"
        else:
            status = resp.status_code
            if 200 <= status < 300:
                return Delivery(url=shown, delivered=True, attempts=attempts, status=status,
                                elapsed_s=round(time.monotonic() - begin, 3))
            error = f"HTTP {status}"
            if not _retryable(status):
                break
        if attempt < settings.retries:
            wait = settings.backoff_s * 2**attempt * random.uniform(0.8, 1.2)
            log.info("webhook %s (%s) to %s: %s, attempt %d of %d, next in %.2f s", body.event, body.id, shown,
                     error, attempts, settings.retries + 1, wait)
            wait = min(wait, deadline - time.monotonic())
            if wait > 0:
                await asyncio.sleep(wait)
    return Delivery(url=shown, delivered=False, attempts=attempts, status=status, error=error,
                    elapsed_s=round(time.monotonic() - begin, 3))


async def deliver(
    body: WebhookBody,
    settings: WebhookSettings,
    *,
    http: httpx.AsyncClient | None = None,
    deadline: float | None = None,
    clock: Callable[[], float] = time.time,
) -> list[Delivery]:
    """Send ``body`` to every URL of ``settings``, retried, all within ``max_total_s`` (or ``deadline``, a
    ``time.monotonic()`` value). Never raises for a receiver's failure; each outcome is logged and returned."""
    if not settings.urls:
        return []
    if settings.secret is None:
        raise ValueError("REELFORGE_WEBHOOK_SECRET is not set")
    secret = settings.secret.get_secret_value()
    payload = body_bytes(body)
    end = deadline if deadline is not None else time.monotonic() + settings.max_total_s
    own = http is None
    client = http or httpx.AsyncClient(follow_redirects=False)
    try:
        results = await asyncio.gather(
            *(_deliver_one(client, url, body, payload, settings, secret, end, clock) for url in settings.urls)
        )
    finally:
        if own:
            await client.aclose()
    for result in results:
        who = f"webhook {body.event} ({body.id}) of {body.subject}"
        run = f", flow run {body.flow_run_id}" if body.flow_run_id else ""
        if result.delivered:
            log.info("%s delivered to %s: HTTP %s after %d attempt(s) in %.2f s%s", who, result.url, result.status,
                     result.attempts, result.elapsed_s, run)
        else:
            log.warning("%s NOT delivered to %s after %d attempt(s) in %.2f s: %s%s", who, result.url,
                        result.attempts, result.elapsed_s, result.error, run)
    return list(results)


# -- in the background ------------------------------------------------------------------------------------


class WebhookDispatcher:
    """Runs deliveries in daemon threads (each with its own event loop and bound); waits for them at exit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[threading.Thread, float] = {}  # thread -> its deadline (time.monotonic)
        self._registered = False

    def submit(self, job: Callable[[float], Awaitable[Any]], *, bound_s: float, name: str = "webhook") -> None:
        """Start ``job(deadline)`` in the background; it is cancelled when ``bound_s`` has passed."""
        deadline = time.monotonic() + bound_s

        async def bounded() -> None:
            try:
                # A little past the bound: delivery stops itself at the deadline and logs why; this is the backstop.
                async with asyncio.timeout(max(0.0, deadline - time.monotonic()) + _GRACE_S):
                    await job(deadline)
            except TimeoutError:
                log.warning("%s: gave up after its bound of %.1f s", name, bound_s)

        def run() -> None:
            try:
                asyncio.run(bounded())
            except Exception as exc:  # never let a webhook's failure surface anywhere
                log.warning("%s failed: %s", name, type(exc).__name__)
            finally:
                with self._lock:
                    self._pending.pop(threading.current_thread(), None)

        thread = threading.Thread(target=run, name=f"reelforge-{name}", daemon=True)
        with self._lock:
            if not self._registered:
                atexit.register(self.drain)
                self._registered = True
            self._pending[thread] = deadline
        thread.start()

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def drain(self, timeout: float | None = None) -> bool:
        """Wait for pending deliveries (each at most until its own bound; ``timeout`` caps the wait).
        True when none is left."""
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                items = list(self._pending.items())
            if not items:
                return True
            thread, deadline = items[0]
            limit = deadline - time.monotonic() + 2 * _GRACE_S
            if end is not None:
                limit = min(limit, end - time.monotonic())
            if limit <= 0:
                return self.pending == 0
            thread.join(limit)
            if thread.is_alive():  # past its bound (a blocking store read): it is a daemon, leave it
                with self._lock:
                    self._pending.pop(thread, None)


_DISPATCHER = WebhookDispatcher()


def dispatcher() -> WebhookDispatcher:
    """The process's dispatcher (``drain()`` it to wait for pending webhooks)."""
    return _DISPATCHER


def notify_in_background(
    settings: Settings,
    event: str,
    subject: str,
    data: Mapping[str, Any],
    *,
    manifest: ArtifactRef | None = None,
    artifacts: Sequence[ArtifactRef] = (),
    flow_run_id: str | None = None,
) -> str | None:
    """Send the event's webhook in the background; returns its event id (None when no URL is configured).

    The store is opened in the background too (manifest read, URLs presigned), so this returns at once.
    """
    hooks = settings.webhooks
    if not hooks.enabled:
        return None
    event_id = uuid.uuid4().hex
    occurred_at = datetime.now(UTC)
    frozen = dict(data)

    async def job(deadline: float) -> None:
        store: ArtifactStore | None = None
        try:
            store = await asyncio.to_thread(open_store, settings.store)
        except StoreError as exc:
            log.warning("webhook %s (%s): store unavailable, sent without presigned URLs: %s", event, event_id,
                        type(exc).__name__)
        body = await asyncio.to_thread(
            build_body, event, subject, frozen, store=store, manifest=manifest, artifacts=artifacts,
            flow_run_id=flow_run_id, event_id=event_id, occurred_at=occurred_at,
        )
        await deliver(body, hooks, deadline=deadline)

    _DISPATCHER.submit(job, bound_s=hooks.max_total_s, name=f"webhook {event} ({event_id})")
    return event_id
