"""Settings, read once from the environment (prefix ``REELFORGE_``) and handed down; one class per system."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

WorkerLabel = Literal["image", "video", "audio", "train"]
WORKER_LABELS: tuple[str, ...] = ("image", "video", "audio", "train")


class WorkerEndpoint(BaseModel):
    """One ComfyUI worker: its base URL and the kinds of work it takes (empty = any)."""

    model_config = ConfigDict(frozen=True)

    url: str
    labels: frozenset[str] = frozenset()


def parse_worker_urls(spec: str) -> list[WorkerEndpoint]:
    """Parse ``REELFORGE_COMFY_URLS``: comma-separated ``[label[+label]=]url`` items.

    Example: ``image=http://gpu1:8188,video+audio=https://gpu2.example/comfy,http://gpu3:8188``.
    Every problem names the item it was found in.
    """
    endpoints: list[WorkerEndpoint] = []
    seen: set[str] = set()
    for position, raw in enumerate(spec.split(","), start=1):
        item = raw.strip()
        if not item:
            continue
        labels: frozenset[str] = frozenset()
        url = item
        head, sep, tail = item.partition("=")
        if sep and "://" not in head:
            url = tail.strip()
            labels = frozenset(x.strip() for x in head.split("+") if x.strip())
            unknown = sorted(labels - set(WORKER_LABELS))
            if unknown:
                raise ValueError(
                    f"REELFORGE_COMFY_URLS item {position} ({item!r}): unknown label(s) {unknown}; "
                    f"use {', '.join(WORKER_LABELS)}"
                )
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"REELFORGE_COMFY_URLS item {position} ({item!r}): expected an http:// or https:// URL "
                "with a host, e.g. http://127.0.0.1:8188"
            )
        if parts.username or parts.password:
            raise ValueError(
                f"REELFORGE_COMFY_URLS item {position}: credentials in the URL are not allowed; "
                "set REELFORGE_COMFY_TOKEN instead"
            )
        normalized = url.rstrip("/")
        if normalized in seen:
            raise ValueError(f"REELFORGE_COMFY_URLS item {position}: {normalized} is listed twice")
        seen.add(normalized)
        endpoints.append(WorkerEndpoint(url=normalized, labels=labels))
    return endpoints


class WorkerSettings(BaseSettings):
    """ComfyUI workers. With no URLs, reelforge starts embedded preview workers (CPU placeholders)."""

    model_config = SettingsConfigDict(env_prefix="REELFORGE_", extra="ignore")

    comfy_urls: Annotated[list[WorkerEndpoint], NoDecode] = Field(default_factory=list)
    comfy_token: SecretStr | None = None  # sent as "Authorization: Bearer ..." to every worker
    queue_depth: int = Field(default=1, ge=0, le=16)
    health_interval_s: float = Field(default=10.0, gt=0)
    request_timeout_s: float = Field(default=30.0, gt=0)
    job_timeout_s: float = Field(default=3600.0, gt=0)
    preview_workers: int = Field(default=2, ge=1, le=64)
    preview_latency: str = "gpu:0.05"

    @field_validator("comfy_urls", mode="before")
    @classmethod
    def _parse_urls(cls, value: object) -> object:
        if isinstance(value, str):
            return parse_worker_urls(value)
        return value

    @property
    def embedded(self) -> bool:
        """True when no real workers are configured and the preview workers stand in."""
        return not self.comfy_urls
