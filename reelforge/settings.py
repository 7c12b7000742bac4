"""Settings, read once from the environment (prefix ``REELFORGE_``) and handed down; one class per system.

Every error names its environment variable and none shows the value given (``hide_input_in_errors``, and the
messages of the parsers below mask credentials): a worker URL or a store setting may carry a secret.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

WorkerLabel = Literal["image", "video", "audio", "train"]
WORKER_LABELS: tuple[str, ...] = ("image", "video", "audio", "train")


class _EnvSettings(BaseSettings):
    """A settings class whose validation errors name the environment variable of each field."""

    model_config = SettingsConfigDict(env_prefix="REELFORGE_", extra="ignore", hide_input_in_errors=True)

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise _naming_variables(exc, str(self.model_config.get("env_prefix", ""))) from None


def _naming_variables(exc: ValidationError, prefix: str) -> ValidationError:
    """The same errors, each message led by its variable (``REELFORGE_QUEUE_DEPTH: ...``), no input values."""
    errors: list[Any] = []
    for error in exc.errors():
        loc = error["loc"]
        message = error["msg"].removeprefix("Value error, ")
        if loc and isinstance(loc[0], str):
            variable = f"{prefix}{loc[0]}".upper()
            message = message if variable in message else f"{variable}: {message}"
        errors.append(
            {
                "type": PydanticCustomError(error["type"], "{message}", {"message": message}),
                "loc": loc,
                "input": None,  # the value may be a secret (a URL with a password): never carried along
            }
        )
    return ValidationError.from_exception_data(exc.title, errors, hide_input=True)


def _mask_credentials(text: str) -> str:
    """``http://user:pw@host`` -> ``http://***@host``."""
    return re.sub(r"(//)[^/\s]*@", r"\1***@", text)  # up to the last '@': a password may contain one


class WorkerEndpoint(BaseModel):
    """One ComfyUI worker: its base URL and the kinds of work it takes (empty = any)."""

    model_config = ConfigDict(frozen=True, hide_input_in_errors=True)

    url: str
    labels: frozenset[str] = frozenset()


def parse_worker_urls(spec: str) -> list[WorkerEndpoint]:
    """Parse ``REELFORGE_COMFY_URLS``: comma-separated ``[label[+label]=]url`` items.

    Example: ``image=http://gpu1:8188,video+audio=https://gpu2.example/comfy,http://gpu3:8188``.
    Every problem names the item it was found in; credentials in an item are masked in the message.
    """
    endpoints: list[WorkerEndpoint] = []
    seen: set[str] = set()
    for position, raw in enumerate(spec.split(","), start=1):
        item = raw.strip()
        if not item:
            continue
        where = f"REELFORGE_COMFY_URLS item {position} ({_mask_credentials(item)!r})"
        labels: frozenset[str] = frozenset()
        url = item
        head, sep, tail = item.partition("=")
        if sep and "://" not in head:
            url = tail.strip()
            labels = frozenset(x.strip() for x in head.split("+") if x.strip())
            unknown = sorted(labels - set(WORKER_LABELS))
            if unknown:
                raise ValueError(f"{where}: unknown label(s) {unknown}; use {', '.join(WORKER_LABELS)}")
        try:
            parts = urlsplit(url)
            port = parts.port  # raises for ports outside 0-65535 and for non-numbers
        except ValueError as exc:
            text = str(exc)
            reason = "port out of range 1-65535" if "out of range" in text else "not a valid URL"
            reason = "the port is not a number" if "Port could not be cast" in text else reason
            raise ValueError(f"{where}: {reason}, e.g. http://127.0.0.1:8188") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{where}: expected an http:// or https:// URL with a host, e.g. http://127.0.0.1:8188")
        if port == 0:
            raise ValueError(f"{where}: port out of range 1-65535, e.g. http://127.0.0.1:8188")
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


class WorkerSettings(_EnvSettings):
    """ComfyUI workers. With no URLs, reelforge starts embedded preview workers (CPU placeholders)."""

    comfy_urls: Annotated[list[WorkerEndpoint], NoDecode] = Field(default_factory=list)
    comfy_token: SecretStr | None = None  # sent as "Authorization: Bearer ..." to every worker
    queue_depth: int = Field(default=1, ge=0, le=16)
    health_interval_s: float = Field(default=10.0, gt=0)
    request_timeout_s: float = Field(default=30.0, gt=0)
    job_timeout_s: float = Field(default=3600.0, gt=0)
    worker_grace_s: float = Field(
        default=20.0,
        gt=0,
        description="REELFORGE_WORKER_GRACE_S: how long a run waits at its start for at least one healthy "
        "worker before it fails (workers still booting, a rolling restart).",
    )
    download_retries: int = Field(
        default=3,
        ge=0,
        le=10,
        description="REELFORGE_DOWNLOAD_RETRIES: how often a failed download of a job's output from its worker "
        "is retried before the job fails (0 = never).",
    )
    admission: Literal["auto", "local", "shared"] = Field(
        default="auto",
        description="REELFORGE_ADMISSION: how the pool counts a worker's load: 'local' (only this process's "
        "prompts), 'shared' (the worker's own queue, so several orchestrators never overfill it), 'auto' "
        "(shared for configured workers, local for embedded preview workers).",
    )
    preview_workers: int = Field(default=2, ge=1, le=64)
    preview_latency: str = Field(
        default="gpu:0.05", description="REELFORGE_PREVIEW_LATENCY: instant | gpu | gpu:SCALE | fixed:SECONDS"
    )

    @field_validator("comfy_urls", mode="before")
    @classmethod
    def _parse_urls(cls, value: object) -> object:
        if isinstance(value, str):
            return parse_worker_urls(value)
        return value

    @field_validator("preview_latency")
    @classmethod
    def _latency_profile(cls, value: str) -> str:
        # The preview worker's own parser, so the two never disagree; imported only here, as it pulls numpy.
        from reelforge.preview.latency import parse_latency

        parse_latency(value)
        return value.strip()

    @property
    def embedded(self) -> bool:
        """True when no real workers are configured and the preview workers stand in."""
        return not self.comfy_urls

    @property
    def admission_mode(self) -> Literal["local", "shared"]:
        """The admission the pool uses (``auto`` resolved)."""
        if self.admission == "auto":
            return "local" if self.embedded else "shared"
        return self.admission


# s3:/bucket, s3:bucket, S3://bucket, s3//bucket, s3:\\bucket ...: meant as S3, would be taken for a folder.
_S3_NEAR_MISS = re.compile(r"s3(:|//|\\)", re.IGNORECASE)


def parse_store_target(value: str) -> str:
    """Check ``REELFORGE_STORE``: a folder, or exactly ``s3://bucket[/prefix]``; near-misses are refused."""
    value = value.strip()
    if not value:
        raise ValueError("REELFORGE_STORE is empty: give a folder or s3://bucket[/prefix]")
    if value.startswith("s3://"):
        bucket, _, prefix = value[len("s3://") :].partition("/")
        if not bucket:
            raise ValueError(f"REELFORGE_STORE={value!r}: no bucket; use s3://bucket[/prefix]")
        if prefix.strip("/"):
            from reelforge.storage.errors import UnsafeKey  # lazily: reelforge.storage imports this module
            from reelforge.storage.keys import check_key

            try:
                check_key(prefix.strip("/"))
            except UnsafeKey as exc:
                raise ValueError(f"REELFORGE_STORE={value!r}: the prefix is not a valid key ({exc.message})") from None
        return value
    if _S3_NEAR_MISS.match(value):
        rest = re.sub(r"^s3[:/\\]+", "", value, flags=re.IGNORECASE)
        folder = "" if "://" in value else f" (for a folder of that name, write ./{value})"
        raise ValueError(
            f"REELFORGE_STORE={value!r} looks like S3 but is not s3://bucket[/prefix]: write s3://{rest}{folder}"
        )
    if "://" in value:
        raise ValueError(f"REELFORGE_STORE={value!r}: only local folders and s3://bucket[/prefix] are supported")
    return value


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


class StoreSettings(_EnvSettings):
    """Artifact storage: a local folder (default) or S3-compatible storage (AWS, MinIO, R2)."""

    store: str = "./media-store"  # a folder, or s3://bucket[/prefix]
    s3_endpoint_url: str | None = None  # MinIO / R2 / a loopback test server
    s3_region: str | None = None
    aws_profile: str | None = None  # a named profile; otherwise boto3's usual credential chain
    s3_access_key_id: SecretStr | None = None
    s3_secret_access_key: SecretStr | None = None
    multipart_threshold_mb: int = Field(default=64, ge=5, le=5120)
    presign_expiry_s: int = Field(default=3600, ge=1, le=7 * 24 * 3600)
    locks: SecretStr | None = Field(
        default=None,
        description="REELFORGE_LOCKS: redis://[user:password@]host:port/db (or rediss://, redis+sentinel://) to "
        "hold the stages' cache locks in Redis, shared by orchestrators on several machines; unset: flock-ed "
        "files on this machine. A secret: the URL may carry a password.",
    )
    locks_lease_s: float = Field(
        default=60.0,
        ge=1.0,
        le=3600.0,
        description="REELFORGE_LOCKS_LEASE_S: a Redis cache lock expires this long after its holder stops "
        "renewing it (a killed orchestrator); renewed every third of it while held.",
    )
    locks_prefix: str = Field(default="reelforge:", description="REELFORGE_LOCKS_PREFIX: Redis key prefix of the locks")

    @field_validator("locks")
    @classmethod
    def _redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        url = value.get_secret_value()
        scheme = url.split("://", 1)[0].lower() if "://" in url else "(none)"
        if scheme not in ("redis", "rediss", "redis+sentinel", "rediss+sentinel", "unix"):
            raise ValueError(
                f"REELFORGE_LOCKS must be a redis://, rediss://, redis+sentinel:// or unix:// URL, not {scheme!r}://..."
            )
        return value

    @field_validator("store")
    @classmethod
    def _store_target(cls, value: str) -> str:
        return parse_store_target(value)

    @property
    def is_s3(self) -> bool:
        return self.store.startswith("s3://")


class LimitSettings(_EnvSettings):
    """Costs, timeouts and admission limits of GPU work."""

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


class LLMSettings(_EnvSettings):
    """An OpenAI-compatible API (OpenAI, Ollama, vLLM) for scripts; empty base URL = the offline writer."""

    model_config = SettingsConfigDict(env_prefix="REELFORGE_LLM_", extra="ignore", hide_input_in_errors=True)

    base_url: str | None = Field(
        default=None,
        description="the API's base URL, e.g. https://api.openai.com/v1 or http://127.0.0.1:11434/v1 (Ollama); "
        "unset: the offline writer",
    )
    api_key: SecretStr | None = Field(default=None, description="sent as a bearer token; never logged or echoed")
    model: str = Field(default="gpt-4o-mini", min_length=1, description="the model name the server knows")
    timeout_s: float = Field(default=120.0, gt=0, description="deadline of one chat-completions request, seconds")
    max_attempts: int = Field(
        default=3, ge=1, le=10,
        description="answers asked for one script: an invalid answer (not JSON, off the schema, failing "
        "validation) is asked again with its errors fed back, up to this many answers in all",
    )
    transient_retries: int = Field(
        default=4, ge=0, le=20,
        description="retries of one request after 429, 5xx, a timeout or a dropped connection, with backoff",
    )
    backoff_s: float = Field(default=1.0, ge=0, description="the first backoff wait, doubled each retry, jittered")
    max_backoff_s: float = Field(
        default=30.0, ge=0, description="the longest wait between retries (a longer Retry-After is cut to this)"
    )
    temperature: float | None = Field(default=0.7, ge=0, le=2, description="sampling temperature; unset: the server's")
    response_format: Literal["auto", "json_schema", "json_object"] = Field(
        default="auto",
        description="structured output: json_schema, JSON mode, or auto (json_schema, then JSON mode when the "
        "server refuses it with a 400)",
    )

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected an http:// or https:// URL with a host, e.g. http://127.0.0.1:11434/v1")
        if parts.username or parts.password:
            raise ValueError("credentials in the URL are not allowed; set REELFORGE_LLM_API_KEY instead")
        return value.strip().rstrip("/")


class ScriptLimits(BaseModel):
    """What a script may ask of the video model and the production, passed to script validation.

    The defaults fit Wan 2.2 image-to-video: 16 fps, at most 81 frames (4n+1) per generated segment, so one
    segment holds 81/16 = 5.06 s. A scene longer than that is made of chained segments (each seeded by the last
    frame of the one before); ``max_segments_per_scene`` caps them, so a scene holds at most
    ``max_scene_s`` = 3 x 5.06 = 15.19 s by default. ``ScriptSettings`` reads the same fields from the
    environment (``REELFORGE_SCRIPT_...``).
    """

    max_duration_s: float = Field(default=600.0, gt=0, description="the longest target duration a brief may ask for")
    min_scene_s: float = Field(default=1.0, gt=0, description="the shortest scene, seconds")
    fps: int = Field(default=16, ge=1, le=120, description="the video model's frame rate")
    segment_frames: int = Field(
        default=81, ge=1, description="the most frames the video model makes in one segment (Wan 2.2: 81)"
    )
    max_segments_per_scene: int = Field(
        default=3, ge=1, le=12, description="chained segments one scene may be made of (drift grows with each)"
    )
    max_scenes: int = Field(default=120, ge=1, description="the most scenes one script may have")
    duration_tolerance_s: float = Field(
        default=0.5, ge=0, description="how far the scenes' durations may sum away from the target, seconds"
    )
    words_per_second: float = Field(
        default=3.0, gt=0, description="the fastest speech a scene's dialogue may need (words per second)"
    )

    @property
    def segment_s(self) -> float:
        """Seconds one generated segment holds (81 frames at 16 fps: 5.0625)."""
        return self.segment_frames / self.fps

    @property
    def max_scene_s(self) -> float:
        """The longest scene: ``max_segments_per_scene`` chained segments."""
        return self.segment_s * self.max_segments_per_scene


class ScriptSettings(_EnvSettings, ScriptLimits):
    """Script limits from the environment (``REELFORGE_SCRIPT_MAX_DURATION_S``, ``_MIN_SCENE_S``, ``_FPS``, ...)."""

    model_config = SettingsConfigDict(env_prefix="REELFORGE_SCRIPT_", extra="ignore", hide_input_in_errors=True)


class CharacterSettings(_EnvSettings):
    """The whole-character pipeline: its limits, dedup, LoRA training and delivery, identity scoring."""

    max_variations: int = Field(default=50, ge=1, le=500, description="the most variations one character may ask for")
    dedup_radius: int = Field(default=10, ge=0, le=32, description="Hamming radius of a near-duplicate pHash")
    dedup_retries: int = Field(default=3, ge=0, le=10, description="regenerations of a near-duplicate, new seed each")
    lora_delivery: Literal["auto", "shared", "fetch"] = Field(
        default="auto",
        description="how a trained LoRA reaches the workers: a shared folder, a fetch by signed URL, or auto "
        "(shared when a folder is set or the workers are embedded, else fetch)",
    )
    lora_shared_dir: Path | None = Field(default=None, description="the folder every worker mounts as a LoRA path")
    lora_shared_prefix: str = Field(default="", description="how workers list that folder inside loras, e.g. 'rf/'")
    lora_trainer_cmd: str | None = Field(
        default=None,
        description="train outside ComfyUI with this command ({config} {dataset} {output} are filled in); unset: "
        "the lora_train template on a worker labelled train",
    )
    lora_base_model: str | None = Field(
        default=None, description="the external trainer's base model (default: the lora_train template's checkpoint)"
    )
    lora_family: Literal["sdxl", "flux", "sd15", "sd3"] = Field(
        default="sdxl", description="the base model family a trained LoRA must match (the lora_train template: sdxl)"
    )
    lora_trainer_format: Literal["ai-toolkit", "kohya"] = Field(
        default="ai-toolkit", description="the config file the external trainer reads"
    )
    identity_scorer: str = Field(
        default="appearance", description="the identity scorer: appearance (no weights) or face (the identity extra)"
    )
    identity_threshold: float | None = Field(default=None, gt=0, lt=1, description="overrides the scorer's threshold")


class BatchSettings(_EnvSettings):
    """Batches: how many characters at once, how big a CSV may be, what a character is estimated to cost."""

    model_config = SettingsConfigDict(env_prefix="REELFORGE_BATCH_", extra="ignore", hide_input_in_errors=True)

    concurrency: int = Field(default=4, ge=1, le=1000, description="characters of one batch running at once")
    max_bytes: int = Field(default=1 << 20, ge=1, description="the largest batch CSV, bytes")
    max_rows: int = Field(default=10000, ge=1, description="the most rows (characters) one batch may have")
    estimate_gpu_s: float = Field(
        default=900.0, gt=0,
        description="GPU seconds one character is estimated to take, for the budget until one has finished",
    )
    row_retries: int = Field(
        default=2, ge=0, le=10,
        description="runs of a character again after an infrastructure failure (API 5xx, a crashed run)",
    )
    fan_out: Literal["subflow", "deployment"] = Field(
        default="subflow",
        description="each character as a subflow sharing this process's worker pool, or a run of a deployment",
    )
    character_deployment: str = Field(
        default="reelforge-character/character", description="the deployment run per character with fan_out=deployment"
    )


def parse_webhook_urls(spec: str) -> list[str]:
    """Parse ``REELFORGE_WEBHOOK_URLS``: comma-separated http(s) URLs; an item is named by position, not shown
    (a URL may carry a token in its path or query)."""
    urls: list[str] = []
    for position, raw in enumerate(spec.split(","), start=1):
        item = raw.strip()
        if not item:
            continue
        try:
            parts = urlsplit(item)
            parts.port  # noqa: B018 - raises for a port that is not a number or out of range
        except ValueError:
            raise ValueError(f"REELFORGE_WEBHOOK_URLS item {position}: not a valid URL") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"REELFORGE_WEBHOOK_URLS item {position}: expected an http:// or https:// URL with a host, "
                "e.g. https://hooks.example.com/reelforge"
            )
        if parts.username or parts.password:
            raise ValueError(f"REELFORGE_WEBHOOK_URLS item {position}: credentials in the URL are not allowed")
        if item in urls:
            raise ValueError(f"REELFORGE_WEBHOOK_URLS item {position}: listed twice")
        urls.append(item)
    return urls


class WebhookSettings(_EnvSettings):
    """Signed webhooks: a JSON POST per milestone event to each URL, HMAC-SHA256 signed (README "Webhooks")."""

    model_config = SettingsConfigDict(env_prefix="REELFORGE_WEBHOOK_", extra="ignore", hide_input_in_errors=True)

    urls: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="comma-separated http(s) URLs that receive every webhook; empty: no webhooks are sent",
    )
    secret: SecretStr | None = Field(
        default=None,
        description="the HMAC-SHA256 key bodies are signed with; required when URLs are set; never logged or echoed",
    )
    timeout_s: float = Field(default=5.0, gt=0, le=300, description="deadline of one POST attempt, seconds")
    retries: int = Field(
        default=3, ge=0, le=10,
        description="retries of one delivery after a 5xx, 429, a timeout or a connection error, with backoff",
    )
    backoff_s: float = Field(default=0.5, ge=0, le=60, description="the first backoff wait, doubled each retry")
    max_total_s: float = Field(
        default=30.0, gt=0, le=3600,
        description="the bound on one event's delivery to every URL, retries included; at process exit, pending "
        "deliveries are waited for at most this long",
    )

    @field_validator("urls", mode="before")
    @classmethod
    def _parse_urls(cls, value: object) -> object:
        if isinstance(value, str):
            return parse_webhook_urls(value)
        return value

    @model_validator(mode="after")
    def _secret_with_urls(self) -> WebhookSettings:
        if self.urls and (self.secret is None or not self.secret.get_secret_value()):
            raise ValueError("REELFORGE_WEBHOOK_SECRET: required when REELFORGE_WEBHOOK_URLS is set")
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.urls)


class Settings(BaseModel):
    """Every system's settings, read once at start."""

    model_config = ConfigDict(hide_input_in_errors=True)

    workers: WorkerSettings
    store: StoreSettings
    limits: LimitSettings
    llm: LLMSettings
    character: CharacterSettings = Field(default_factory=CharacterSettings)
    batch: BatchSettings = Field(default_factory=BatchSettings)
    script: ScriptSettings = Field(default_factory=ScriptSettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)

    @classmethod
    def load(cls) -> Settings:
        return cls(
            workers=WorkerSettings(), store=StoreSettings(), limits=LimitSettings(), llm=LLMSettings(),
            character=CharacterSettings(), batch=BatchSettings(), script=ScriptSettings(),
            webhooks=WebhookSettings(),
        )
