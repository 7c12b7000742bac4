"""The LLM writer: a script from an OpenAI-compatible chat-completions API (OpenAI, Ollama ``/v1``, vLLM).

One ``write`` is a conversation:

1. the brief is checked against the limits (``BriefError`` before any request);
2. the request asks for the answer schema (``prompts.draft_schema``) as strict structured output
   (``response_format={"type": "json_schema", ...}``); a server that refuses that with a 400/422 is asked in
   JSON mode (``{"type": "json_object"}``) instead, and the writer keeps to JSON mode from then on;
3. each answer is read: JSON, then the schema (pydantic), then ``script_problems`` against the limits and the
   cast. An unusable answer is sent back with its problems as a new user message and the whole script asked
   for again, up to ``max_attempts`` answers in all; then ``LLMAnswerInvalid`` names what was still wrong;
4. each request on its own retries a 429, a 5xx, a timeout or a dropped connection ``transient_retries``
   times, waiting ``backoff_s`` doubled each time with jitter (or the server's Retry-After), at most
   ``max_backoff_s``; then the ``TransientLLMError`` is raised (a Prefect task may retry it later). A 401 or
   403 fails at once (``LLMAuthError``), another 4xx too (``LLMRequestRejected``).

The ``openai`` client's own retries are off (``max_retries=0``): these are the only ones, and they are counted
and logged here. Its exceptions are translated ``from None``: their text carries the server's body, which may
echo the key; the messages kept are scrubbed of it. The key is never read from ``OPENAI_API_KEY``: an unset
``REELFORGE_LLM_API_KEY`` sends a placeholder (Ollama and vLLM need none).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import openai
from openai import AsyncOpenAI
from pydantic import ValidationError

from reelforge.script.errors import (
    LLMAnswerInvalid,
    LLMAuthError,
    LLMError,
    LLMRateLimited,
    LLMRequestRejected,
    LLMServerError,
    LLMTimeout,
    LLMUnavailable,
    ScriptProblem,
    TransientLLMError,
)
from reelforge.script.models import Brief, Script, ScriptDraft
from reelforge.script.prompts import feedback_message, messages, response_format
from reelforge.script.validate import check_brief, problems_from_pydantic, script_problems
from reelforge.settings import LLMSettings, ScriptLimits

log = logging.getLogger("reelforge.script.llm")

NO_KEY = "no-key"
"""Sent as the bearer token when no key is configured (the ``openai`` client insists on one)."""

Sleep = Callable[[float], Awaitable[None]]


def _redact(text: str, secret: str | None) -> str:
    if secret:
        text = text.replace(secret, "***")
    text = re.sub(r"(?i)(bearer\s+)\S+", r"\1***", text)
    return re.sub(r"\bsk-[A-Za-z0-9_\-*.]+", "sk-***", text)


def _retry_after(headers: Any) -> float | None:
    """Seconds from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date); None when absent."""
    if headers is None:
        return None
    try:
        millis = headers.get("retry-after-ms")
        if millis is not None:
            return max(0.0, float(millis) / 1000)
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            when = email.utils.parsedate_to_datetime(value)
            return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _strip_fences(content: str) -> str:
    text = content.strip()
    match = re.fullmatch(r"```(?:json|JSON)?\s*\n?(.*?)\n?```", text, flags=re.DOTALL)
    return match.group(1).strip() if match else text


class LLMWriter:
    """Writes scripts with an OpenAI-compatible API (``REELFORGE_LLM_BASE_URL`` and friends).

    ``client``: an ``AsyncOpenAI`` to use (and not close); by default one is made per ``write`` from
    ``settings``. ``sleep`` and ``rng`` decide the backoff waits (tests pass a recorder and a seeded rng).
    """

    def __init__(
        self,
        settings: LLMSettings,
        *,
        client: AsyncOpenAI | None = None,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if not settings.base_url:
            raise ValueError("LLMWriter needs REELFORGE_LLM_BASE_URL; without it use the OfflineWriter")
        self.settings = settings
        self.base_url: str = settings.base_url
        self.model = settings.model
        self._client = client
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._mode = "json_object" if settings.response_format == "json_object" else "json_schema"

    @property
    def name(self) -> str:
        return f"llm:{self.model}"

    @property
    def mode(self) -> str:
        """The structured-output mode the next request asks for: ``json_schema`` or ``json_object``."""
        return self._mode

    def _secret(self) -> str | None:
        return self.settings.api_key.get_secret_value() if self.settings.api_key else None

    def _new_client(self) -> AsyncOpenAI:
        return AsyncOpenAI(
            base_url=self.base_url,
            api_key=self._secret() or NO_KEY,
            timeout=self.settings.timeout_s,
            max_retries=0,
        )

    async def write(self, brief: Brief, limits: ScriptLimits) -> Script:
        """A validated script for ``brief``, or one of the ``LLMError``s (``BriefError`` for a bad brief)."""
        check_brief(brief, limits)
        if self._client is not None:
            return await self._converse(self._client, brief, limits)
        client = self._new_client()
        try:
            return await self._converse(client, brief, limits)
        finally:
            await client.close()

    async def _converse(self, client: AsyncOpenAI, brief: Brief, limits: ScriptLimits) -> Script:
        conversation: list[dict[str, str]] = messages(brief, limits)
        problems: list[ScriptProblem] = []
        attempts = self.settings.max_attempts
        for attempt in range(1, attempts + 1):
            content, script, problems = self._read(await self._complete(client, conversation, brief), brief, limits)
            if script is not None:
                log.info("script written by %s in %d answer(s), %d scenes", self.name, attempt, len(script.scenes))
                return script
            log.warning(
                "answer %d of %d from %s unusable (%d problem(s)): %s",
                attempt, attempts, self.name, len(problems), "; ".join(str(p) for p in problems[:5]),
            )
            conversation += [{"role": "assistant", "content": content}, feedback_message(problems)]
        raise LLMAnswerInvalid(problems, attempts=attempts, base_url=self.base_url, model=self.model)

    def _read(
        self, completion: Any, brief: Brief, limits: ScriptLimits
    ) -> tuple[str, Script | None, list[ScriptProblem]]:
        """``(content, script, [])`` for a usable answer, ``(content, None, problems)`` otherwise."""
        choices = getattr(completion, "choices", None) or []
        if not choices:
            return "", None, [ScriptProblem(message="the answer had no choices")]
        choice = choices[0]
        message = choice.message
        content = message.content or ""
        if getattr(message, "refusal", None):
            return content, None, [ScriptProblem(message=f"the model refused: {message.refusal}")]
        if choice.finish_reason == "length":
            return content, None, [ScriptProblem(message="the answer was cut off (finish_reason length): be briefer")]
        if not content.strip():
            return content, None, [ScriptProblem(message="the answer was empty; answer with the JSON object")]
        try:
            draft = ScriptDraft.model_validate_json(_strip_fences(content))
        except ValidationError as exc:
            return content, None, problems_from_pydantic(exc)
        script = brief.script(draft, writer=self.name)
        problems = script_problems(script, limits)
        return content, (None if problems else script), problems

    async def _complete(self, client: AsyncOpenAI, conversation: list[dict[str, str]], brief: Brief) -> Any:
        """One chat completion, through transient retries and the json_schema -> json_object fallback."""
        retries = 0
        while True:
            try:
                request: dict[str, Any] = {
                    "model": self.model,
                    "messages": conversation,
                    "response_format": response_format(brief, self._mode),
                    "seed": brief.seed,
                    "timeout": self.settings.timeout_s,
                }
                if self.settings.temperature is not None:
                    request["temperature"] = self.settings.temperature
                return await client.chat.completions.create(**request)
            except openai.APIStatusError as exc:
                if (
                    exc.status_code in (400, 422)
                    and self._mode == "json_schema"
                    and self.settings.response_format == "auto"
                ):
                    log.warning(
                        "%s refused response_format json_schema (%d: %s); asking in JSON mode (json_object)",
                        self.base_url, exc.status_code, self._server_message(exc),
                    )
                    self._mode = "json_object"
                    continue
                error = self._translate(exc)
            except openai.APIError as exc:
                error = self._translate(exc)
            if not isinstance(error, TransientLLMError) or retries >= self.settings.transient_retries:
                if isinstance(error, TransientLLMError) and retries:
                    log.warning("%s: giving up after %d retries", error, retries)
                raise error from None
            wait = self._backoff(retries, error)
            retries += 1
            log.warning("%s; retry %d of %d in %.2f s", error, retries, self.settings.transient_retries, wait)
            await self._sleep(wait)

    def _backoff(self, retries: int, error: LLMError) -> float:
        cap = self.settings.max_backoff_s
        if isinstance(error, LLMRateLimited) and error.retry_after is not None:
            return float(min(error.retry_after, cap))
        base = self.settings.backoff_s * (2**retries)
        return float(min(cap, base * (0.5 + self._rng.random() / 2)))

    def _server_message(self, exc: openai.APIStatusError) -> str:
        body = exc.body
        text = body.get("message") if isinstance(body, dict) else None
        if not isinstance(text, str) or not text:
            text = exc.response.reason_phrase or f"HTTP {exc.status_code}"
        return _redact(text, self._secret())[:300]

    def _translate(self, exc: openai.APIError) -> LLMError:
        where: dict[str, Any] = {"base_url": self.base_url, "model": self.model}
        if isinstance(exc, openai.APITimeoutError):
            return LLMTimeout(f"no answer within {self.settings.timeout_s:g} s", **where)
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__
            reason = _redact(f"{type(cause).__name__}: {cause}" if cause else str(exc), self._secret())
            return LLMUnavailable(f"cannot reach the LLM API: {reason}", **where)
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            server = self._server_message(exc)
            if status in (401, 403):
                return LLMAuthError(
                    f"the LLM API refused the key ({status}: {server}); check REELFORGE_LLM_API_KEY",
                    status=status, **where,
                )
            if status == 429:
                return LLMRateLimited(
                    f"rate limited (429: {server})", retry_after=_retry_after(exc.response.headers),
                    status=status, **where,
                )
            if status >= 500 or status in (408, 409):
                return LLMServerError(f"the LLM API failed ({status}: {server})", status=status, **where)
            return LLMRequestRejected(f"the LLM API rejected the request ({status}: {server})", status=status, **where)
        return LLMServerError(f"unexpected answer: {_redact(str(exc), self._secret())[:300]}", **where)
