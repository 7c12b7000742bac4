"""A fake OpenAI-compatible LLM server for tests and demos: the real chat-completions protocol on loopback.

``POST /v1/chat/completions`` checks the request as OpenAI does (bearer key when one is set, ``model``,
``messages``, ``response_format``: ``json_object`` needs the word "json" in a message, ``json_schema`` needs a
name and a schema, or is refused with a 400 when the server is made without schema support), records it, then
answers with the next scripted ``Reply``: an answer (any content, valid or not), an error status with
OpenAI's error body and headers (429 with Retry-After, 500, 401), or either after a delay (for timeouts).
``GET /v1/models`` lists the model. A request refused by the protocol checks takes no scripted reply.

    async with FakeLLM([Reply.text("{not json"), Reply.script(script)], api_key="sk-test") as llm:
        settings = LLMSettings(base_url=llm.url, api_key="sk-test")
        ...
        assert len(llm.requests) == 2

It binds 127.0.0.1 only. With no scripted reply left it answers 500 "no scripted reply left", so a test that
asks more than it scripted fails loudly; ``default`` replaces that.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiohttp import web

from reelforge.script.models import Script

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Reply:
    """One scripted answer of the fake server."""

    status: int = 200
    content: str | None = None
    finish_reason: str = "stop"
    refusal: str | None = None
    error: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0

    @classmethod
    def text(cls, content: str, *, finish_reason: str = "stop") -> Reply:
        """200 with this assistant content as it is (malformed JSON, prose, fenced JSON)."""
        return cls(content=content, finish_reason=finish_reason)

    @classmethod
    def json(cls, value: Any) -> Reply:
        """200 with ``value`` as JSON content."""
        return cls(content=json.dumps(value, ensure_ascii=False))

    @classmethod
    def script(cls, script: Script) -> Reply:
        """200 answering with the writer's part of ``script`` (its draft), as an LLM would."""
        return cls(content=script.draft().model_dump_json())

    @classmethod
    def failure(
        cls, status: int, message: str, *, kind: str = "server_error", code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        """An error status with OpenAI's body: ``{"error": {"message", "type", "param", "code"}}``."""
        body = {"message": message, "type": kind, "param": None, "code": code}
        return cls(status=status, error=body, headers=dict(headers or {}))

    @classmethod
    def rate_limited(cls, retry_after: float | None = 1.0) -> Reply:
        """429, with ``Retry-After`` seconds when given."""
        headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
        return cls.failure(429, "Rate limit reached for requests", kind="requests", code="rate_limit_exceeded",
                           headers=headers)

    @classmethod
    def server_error(cls, status: int = 500) -> Reply:
        """A 5xx."""
        return cls.failure(status, "The server had an error while processing your request.")

    def after(self, seconds: float) -> Reply:
        """The same reply, sent ``seconds`` later."""
        return Reply(self.status, self.content, self.finish_reason, self.refusal, self.error, self.headers, seconds)


@dataclass(frozen=True)
class RecordedRequest:
    """A chat-completions request the server got: its JSON body, whether its key was right, what it answered."""

    body: dict[str, Any]
    authorized: bool
    status: int

    @property
    def response_format(self) -> str | None:
        value = self.body.get("response_format")
        return value.get("type") if isinstance(value, dict) else None

    @property
    def messages(self) -> list[dict[str, Any]]:
        value = self.body.get("messages")
        return value if isinstance(value, list) else []


ReplySource = Reply | Callable[[dict[str, Any]], Reply]


def _error(status: int, message: str, *, kind: str = "invalid_request_error", param: str | None = None,
           code: str | None = None, headers: dict[str, str] | None = None) -> web.Response:
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return web.json_response(body, status=status, headers=headers)


class FakeLLM:
    """A scripted OpenAI-compatible server; ``async with FakeLLM(replies) as llm: ... llm.url``."""

    def __init__(
        self,
        replies: Iterable[ReplySource] = (),
        *,
        api_key: str | None = None,
        json_schema: bool = True,
        model: str = "gpt-4o-mini",
        default: ReplySource | None = None,
        port: int = 0,
    ) -> None:
        self.replies: list[ReplySource] = list(replies)
        self.api_key = api_key
        self.json_schema = json_schema
        self.model = model
        self.default = default
        self.port = port
        self.requests: list[RecordedRequest] = []
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """The base URL a client is given (``http://127.0.0.1:PORT/v1``)."""
        return f"http://{LOOPBACK}:{self.port}/v1"

    def push(self, *replies: ReplySource) -> None:
        """Script more replies."""
        self.replies.extend(replies)

    async def start(self) -> str:
        if self._runner is None:
            app = web.Application()
            app.router.add_post("/v1/chat/completions", self._chat)
            app.router.add_get("/v1/models", self._models)
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.25)
            await runner.setup()
            site = web.TCPSite(runner, LOOPBACK, self.port)
            try:
                await site.start()
            except BaseException:
                await runner.cleanup()
                raise
            self._runner = runner
            self.port = int(runner.addresses[0][1])
        return self.url

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> FakeLLM:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def _authorized(self, request: web.Request) -> tuple[bool, str]:
        header = request.headers.get("Authorization", "")
        presented = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
        return self.api_key is None or presented == self.api_key, presented

    async def _models(self, request: web.Request) -> web.Response:
        ok, _ = self._authorized(request)
        if not ok:
            return _error(401, "Invalid authentication", code="invalid_api_key")
        return web.json_response(
            {"object": "list", "data": [{"id": self.model, "object": "model", "created": 0, "owned_by": "fake"}]}
        )

    def _refusal(self, body: Any) -> web.Response | None:
        """The 400 OpenAI would answer to this body, or None when it is a well-formed request."""
        if not isinstance(body, dict):
            return _error(400, "We could not parse the JSON body of your request.")
        if not isinstance(body.get("model"), str) or not body["model"]:
            return _error(400, "you must provide a model parameter", param="model")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return _error(400, "'messages' must be a non-empty array", param="messages")
        for index, message in enumerate(messages):
            if not isinstance(message, dict) or message.get("role") not in ("system", "developer", "user",
                                                                             "assistant", "tool"):
                return _error(400, f"Invalid value for 'messages[{index}].role'", param=f"messages[{index}].role")
        if body.get("stream"):
            return _error(400, "stream is not supported by this fake server", param="stream")
        fmt = body.get("response_format")
        if fmt is None:
            return None
        kind = fmt.get("type") if isinstance(fmt, dict) else None
        if kind == "json_object":
            text = " ".join(str(m.get("content", "")) for m in messages)
            if "json" not in text.lower():
                return _error(400, "'messages' must contain the word 'json' in some form, to use 'response_format' "
                                   "of type 'json_object'.", param="messages")
        elif kind == "json_schema":
            if not self.json_schema:
                return _error(400, "Invalid parameter: 'response_format' of type 'json_schema' is not supported "
                                   "with this model.", param="response_format")
            spec = fmt.get("json_schema") if isinstance(fmt, dict) else None
            if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
                return _error(400, "Missing required parameter: 'response_format.json_schema.schema'.",
                              param="response_format.json_schema.schema")
            if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", str(spec.get("name", ""))):
                name_param = "response_format.json_schema.name"
                return _error(400, f"Invalid '{name_param}'", param=name_param)
        elif kind != "text":
            return _error(400, f"Invalid value: {kind!r}. Supported values are: 'json_object', 'json_schema', and "
                               "'text'.", param="response_format.type")
        return None

    async def _chat(self, request: web.Request) -> web.Response:
        ok, presented = self._authorized(request)
        try:
            body: Any = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        if not ok:
            self.requests.append(RecordedRequest(body if isinstance(body, dict) else {}, False, 401))
            # Like OpenAI, the message names the key it was given (OpenAI masks its middle; this fake does not,
            # so tests prove the client side keeps it out of errors and logs).
            return _error(401, f"Incorrect API key provided: {presented}.", code="invalid_api_key")
        refused = self._refusal(body)
        if refused is not None:
            self.requests.append(RecordedRequest(body if isinstance(body, dict) else {}, True, refused.status))
            return refused
        source = self.replies.pop(0) if self.replies else self.default
        reply = source(body) if callable(source) else source
        if reply is None:
            reply = Reply.failure(500, "fake LLM: no scripted reply left")
        self.requests.append(RecordedRequest(body, True, reply.status))
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        if reply.status != 200:
            return web.json_response({"error": reply.error or {"message": "error"}}, status=reply.status,
                                     headers=reply.headers)
        number = next(self._ids)
        content = reply.content or ""
        completion = {
            "id": f"chatcmpl-fake{number:06d}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "system_fingerprint": "fp_fake",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply.content, "refusal": reply.refusal},
                    "logprobs": None,
                    "finish_reason": reply.finish_reason,
                }
            ],
            "usage": {
                "prompt_tokens": sum(len(str(m.get("content", ""))) // 4 for m in body["messages"]),
                "completion_tokens": len(content) // 4,
                "total_tokens": 0,
            },
        }
        return web.json_response(completion, headers=reply.headers)
