"""Exceptions of script writing, validation and storage.

The tree separates what a retry can fix from what it cannot::

    ScriptError                     base
    ├── ScriptValidationError       a script breaks the limits or the cast: every problem (scene, field, message)
    │   └── BriefError              a brief cannot be written for (duration 0 or over the maximum, unknown name)
    └── LLMError                    the LLM API; carries base URL, model and HTTP status when known
        ├── TransientLLMError       a retry later may succeed (the writer's own retries were used up)
        │   ├── LLMUnavailable      connection refused / reset, DNS, TLS
        │   ├── LLMTimeout          a request ran past REELFORGE_LLM_TIMEOUT_S
        │   ├── LLMRateLimited      429; ``retry_after`` seconds when the server said
        │   └── LLMServerError      5xx
        └── PermanentLLMError       the same request fails the same way
            ├── LLMAuthError        401 / 403: the key is missing, wrong or not allowed (never shown)
            ├── LLMRequestRejected  another 4xx (unknown model, request too large)
            └── LLMAnswerInvalid    every answer of ``max_attempts`` was unusable; ``problems`` of the last

No message of these exceptions, and no log line of the writer, contains the API key; errors from the ``openai``
client are translated at the boundary ``from None`` (their text may echo the key).
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict


class ScriptProblem(BaseModel):
    """One thing wrong with a script or brief: the scene (1-based position; None for the whole script), the
    field (``duration_s``, ``dialogue[2].speaker``: indices count from 1) and what is wrong."""

    model_config = ConfigDict(frozen=True)

    scene: int | None = None
    field: str | None = None
    message: str

    def __str__(self) -> str:
        where = f"scene {self.scene}: " if self.scene is not None else ""
        field = f"{self.field}: " if self.field else ""
        return f"{where}{field}{self.message}"


def _listing(problems: Iterable[ScriptProblem]) -> str:
    return "\n".join(f"  {problem}" for problem in problems)


class ScriptError(Exception):
    """Base of every script error."""


class ScriptValidationError(ScriptError):
    """A script (or brief) that does not validate; ``problems`` lists every problem found, in order."""

    what = "script"

    def __init__(self, problems: list[ScriptProblem], *, source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        where = f" ({source})" if source else ""
        count = len(self.problems)
        head = f"{self.what}{where} is invalid: {count} problem{'s' if count != 1 else ''}"
        super().__init__(f"{head}\n{_listing(self.problems)}")


class BriefError(ScriptValidationError):
    """A brief that no writer may be asked to write for."""

    what = "brief"


class LLMError(ScriptError):
    """Base of the LLM API errors; ``str()`` names the server and model, never the key."""

    def __init__(
        self, message: str, *, base_url: str | None = None, model: str | None = None, status: int | None = None
    ) -> None:
        self.message = message
        self.base_url = base_url
        self.model = model
        self.status = status
        where = [part for part in (base_url, f"model {model}" if model else None) if part]
        super().__init__(f"{message} ({', '.join(where)})" if where else message)


class TransientLLMError(LLMError):
    """A failure that a later retry may fix."""


class PermanentLLMError(LLMError):
    """A failure that the same request meets again."""


class LLMUnavailable(TransientLLMError):
    """The server could not be reached or dropped the connection."""


class LLMTimeout(TransientLLMError):
    """A request ran past its deadline."""


class LLMRateLimited(TransientLLMError):
    """429 Too Many Requests; ``retry_after`` is the server's Retry-After in seconds, when it sent one."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: str | int | None) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kw)  # type: ignore[arg-type]


class LLMServerError(TransientLLMError):
    """The server answered 5xx."""


class LLMAuthError(PermanentLLMError):
    """401 or 403: the API key is missing, wrong or lacks access to the model."""


class LLMRequestRejected(PermanentLLMError):
    """A 4xx other than auth and rate limits: the request itself is wrong for this server."""


class LLMAnswerInvalid(PermanentLLMError):
    """Every answer was unusable; ``problems`` are the last answer's, ``attempts`` how many were asked for."""

    def __init__(self, problems: list[ScriptProblem], *, attempts: int, **kw: str | int | None) -> None:
        self.problems = list(problems)
        self.attempts = attempts
        count = len(self.problems)
        message = (
            f"the LLM gave no valid script in {attempts} answer{'s' if attempts != 1 else ''}; the last one still "
            f"had {count} problem{'s' if count != 1 else ''}:\n{_listing(self.problems)}"
        )
        super().__init__(message, **kw)  # type: ignore[arg-type]
