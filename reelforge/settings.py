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
    worker_grace_s: float = Field(
        default=20.0, gt=0, description="how long a run waits at start for at least one healthy worker"
    )
    download_retries: int = Field(
        default=3, ge=0, le=10, description="retries of a failed output download before the job fails"
    )
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


def parse_prices(spec: str) -> dict[str, float]:
    """Parse ``REELFORGE_GPU_PRICE_PER_HOUR``: ``label=price`` items (``default=`` for unlabelled workers)."""
    prices: dict[str, float] = {}
    for position, raw in enumerate(spec.split(","), start=1):
        item = raw.strip()
        if not item:
            continue
        label, sep, value = item.partition("=")
        label = label.strip() if sep else "default"
        value = value if sep else label
        if sep and label not in (*WORKER_LABELS, "default"):
            raise ValueError(
                f"REELFORGE_GPU_PRICE_PER_HOUR item {position} ({item!r}): unknown label {label!r}; "
                f"use {', '.join(WORKER_LABELS)} or default"
            )
        try:
            price = float(value)
        except ValueError as exc:
            raise ValueError(
                f"REELFORGE_GPU_PRICE_PER_HOUR item {position} ({item!r}): {value!r} is not a number"
            ) from exc
        if price < 0 or price != price:
            raise ValueError(f"REELFORGE_GPU_PRICE_PER_HOUR item {position} ({item!r}): price must be >= 0")
        prices[label] = price
    return prices


class StoreSettings(BaseSettings):
    """Artifact storage: a local folder (default) or S3-compatible storage (AWS, MinIO, R2)."""

    model_config = SettingsConfigDict(env_prefix="REELFORGE_", extra="ignore")

    store: str = "./media-store"  # a folder, or s3://bucket[/prefix]
    s3_endpoint_url: str | None = None  # MinIO / R2 / a loopback test server
    s3_region: str | None = None
    aws_profile: str | None = None  # a named profile; otherwise boto3's usual credential chain
    s3_access_key_id: SecretStr | None = None
    s3_secret_access_key: SecretStr | None = None
    multipart_threshold_mb: int = Field(default=64, ge=5, le=5120)
    presign_expiry_s: int = Field(default=3600, ge=1, le=7 * 24 * 3600)

    @field_validator("store")
    @classmethod
    def _store_target(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("REELFORGE_STORE is empty: give a folder or s3://bucket[/prefix]")
        if "://" in value:
            scheme, _, rest = value.partition("://")
            if scheme != "s3" or not rest.split("/", 1)[0]:
                raise ValueError(
                    f"REELFORGE_STORE={value!r}: only local folders and s3://bucket[/prefix] are supported"
                )
        return value

    @property
    def is_s3(self) -> bool:
        return self.store.startswith("s3://")


class LimitSettings(BaseSettings):
    """Costs, timeouts and admission limits of GPU work."""

    model_config = SettingsConfigDict(env_prefix="REELFORGE_", extra="ignore")

    gpu_price_per_hour: Annotated[dict[str, float], NoDecode] = Field(default_factory=lambda: {"default": 0.0})
    # Task timeouts per kind of job, seconds.
    timeout_image_s: float = Field(default=600.0, gt=0)
    timeout_video_s: float = Field(default=3600.0, gt=0)
    timeout_audio_s: float = Field(default=900.0, gt=0)
    timeout_lora_s: float = Field(default=4 * 3600.0, gt=0)
    timeout_cpu_s: float = Field(default=600.0, gt=0)  # CPU stages (hashing, validation, assembly)
    # Prefect global concurrency limits per worker label, for several orchestrator processes sharing workers.
    global_limits: bool = False

    @field_validator("gpu_price_per_hour", mode="before")
    @classmethod
    def _parse_prices(cls, value: object) -> object:
        if isinstance(value, str):
            return parse_prices(value)
        return value

    def price_per_hour(self, labels: frozenset[str] | set[str] | None = None) -> float:
        """Price of a worker with these labels (the highest matching label, else ``default``)."""
        matches = [self.gpu_price_per_hour[label] for label in labels or () if label in self.gpu_price_per_hour]
        return max(matches) if matches else self.gpu_price_per_hour.get("default", 0.0)

    def timeout_for(self, kind: str) -> float:
        return {
            "image": self.timeout_image_s,
            "upscale": self.timeout_image_s,
            "video": self.timeout_video_s,
            "audio": self.timeout_audio_s,
            "lora": self.timeout_lora_s,
            "cpu": self.timeout_cpu_s,
        }.get(kind, self.timeout_video_s)


class LLMSettings(BaseSettings):
    """An OpenAI-compatible API (OpenAI, Ollama, vLLM) for scripts; empty base URL = the offline writer."""

    model_config = SettingsConfigDict(env_prefix="REELFORGE_LLM_", extra="ignore")

    base_url: str | None = None
    api_key: SecretStr | None = None
    model: str = "gpt-4o-mini"
    timeout_s: float = Field(default=120.0, gt=0)


class Settings(BaseModel):
    """Every system's settings, read once at start."""

    workers: WorkerSettings
    store: StoreSettings
    limits: LimitSettings
    llm: LLMSettings

    @classmethod
    def load(cls) -> Settings:
        return cls(workers=WorkerSettings(), store=StoreSettings(), limits=LimitSettings(), llm=LLMSettings())
