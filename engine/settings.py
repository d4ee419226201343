"""Typed settings, read once from the environment (and ``.env``)."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

LogLevel = Literal["CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"]


class Settings(BaseSettings):
    """Every environment variable the service reads. Names are the upper-case field names."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False)

    api_v1_str: str = Field("/api/v1", description="Prefix of the versioned API routes.")
    host: str = Field("127.0.0.1", description="Address `mlinfer serve` binds; use 0.0.0.0 inside a container.")
    port: int = Field(8000, ge=0, le=65535, description="Port `mlinfer serve` binds.")
    workers: int = Field(
        0, ge=0, description="Server processes (`mlinfer serve`); each loads its own models. 0: one per CPU available (measured best)."
    )
    worker_cpus: int = Field(
        0,
        ge=0,
        description="CPUs this process's models may use; 0: every CPU available. `mlinfer serve --workers N` gives each its share.",
    )
    workers_dir: Path | None = Field(
        None, description="Set by `mlinfer serve --workers N` (and the gunicorn config): where each worker publishes its state."
    )
    prometheus_multiproc_dir: Path | None = Field(
        None, description="Set by `mlinfer serve --workers N` (and the gunicorn config): /metrics then sums every worker."
    )

    redis_host: str = Field("localhost", description="Redis host for the result cache.")
    redis_port: int = Field(6379, description="Redis port.")
    redis_db: int = Field(0, description="Redis database number.")
    redis_password: SecretStr | None = Field(None, description="Redis password, if any.")
    redis_cache_ttl: int = Field(3600, ge=1, description="Cache time-to-live in seconds.")
    redis_url: SecretStr | None = Field(None, description="redis:// or rediss:// URL; wins over REDIS_HOST/PORT/DB/PASSWORD.")
    redis_username: str | None = Field(None, description="Redis ACL / ElastiCache RBAC user.")
    redis_tls: bool = Field(False, description="Connect to Redis over TLS.")
    redis_cluster: bool = Field(False, description="The endpoint is a Redis Cluster configuration endpoint.")
    redis_timeout_ms: float = Field(50.0, gt=0, description="Bound on each Redis call; slower counts as a miss.")
    cache_backend: Literal["memory", "redis", "tiered", "none"] = Field("memory", description="Result cache backend.")
    cache_max_entries: int = Field(10_000, ge=1, description="Entries kept by the in-process (memory / L1) cache.")

    auth_token: SecretStr = Field(SecretStr("secret-token"), description="Token expected in the X-Token header.")
    admin_token: SecretStr | None = Field(None, description="Token for /admin endpoints (X-Admin-Token); unset disables them.")
    auth_tokens: SecretStr | None = Field(
        None, description="More accepted X-Token values, comma-separated (token rotation); AUTH_TOKEN is accepted too."
    )
    metrics_token: SecretStr | None = Field(
        None, description="When set, /metrics needs it (Authorization: Bearer <token>, as Prometheus sends it, or X-Token)."
    )
    environment: Literal["development", "production"] = Field(
        "development", description="`production` refuses to start with the default or an empty token."
    )
    auth_token_parameter: str | None = Field(
        None,
        description="Read the token from SSM Parameter Store (a parameter name) or Secrets Manager "
        "(a secret ARN, or 'secretsmanager:<name>') instead of AUTH_TOKEN.",
    )
    auth_token_ttl_s: int = Field(300, ge=0, description="How long a token read from SSM / Secrets Manager is cached.")
    batch_results_uri: str | None = Field(
        None,
        pattern=r"^(s3://[^/]+/.*|file://.+)$",
        description="s3://bucket/prefix/ for SQS batch results; locally, file://folder/ writes them there.",
    )
    api_gateway_base_path: str = Field("/", description="Path prefix API Gateway adds (custom-domain base path mapping).")
    powertools_service_name: str = Field("ml-inference-system", description="Service name in Lambda logs, metrics and traces.")
    powertools_metrics_namespace: str = Field("MLInference", description="CloudWatch namespace of the Lambda EMF metrics.")

    model_registry_path: Path = Field(Path("model_registry.yaml"), description="The YAML model registry.")
    model_cache_size: int = Field(5, ge=1, description="Model versions kept loaded; the least recently used is evicted.")
    model_cache_dir: Path = Field(
        Path(tempfile.gettempdir()) / "ml-inference-models",
        description="Where s3:// model files are downloaded (once per cold start), and where versions with external "
        "weights are copied privately while they load (.private/).",
    )
    shadow_mode: Literal["background", "inline"] = Field(
        "background", description="Shadow runs after the reply (server) or before it, within the same invocation (Lambda)."
    )
    shadow_timeout_ms: int = Field(2000, ge=1, description="Time budget of one shadow run.")
    batch_size: int = Field(32, ge=1, description="Largest batch sent to the runtime at once.")
    max_inputs_per_request: int = Field(
        256,
        ge=1,
        validation_alias=AliasChoices("max_texts_per_request", "max_inputs_per_request"),
        description="More inputs (texts, rows) in one request gives 413. Variable: MAX_TEXTS_PER_REQUEST (or MAX_INPUTS_PER_REQUEST).",
    )
    max_text_chars: int = Field(10_000, ge=1, description="A longer text gives 413.")
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="A larger request body gives 413.")
    max_queued_inputs: int = Field(
        4096,
        ge=1,
        validation_alias=AliasChoices("max_queued_inputs", "max_queued_texts"),
        description="Inputs waiting per model version before requests get 503. Variable: MAX_QUEUED_INPUTS (or MAX_QUEUED_TEXTS).",
    )
    instances: int = Field(
        0,
        ge=0,
        description="Model instances: batches that run at once, across every loaded version (the process's CPU budget, "
        "like Triton's instance_group). 0: the CPUs available divided by INTRA_OP_THREADS.",
    )
    intra_op_threads: int = Field(
        0, ge=0, description="Runtime threads of one instance. 0: 1 when INSTANCES is 0, else the CPUs available divided by INSTANCES."
    )
    max_batch_tokens: int = Field(
        8192,
        ge=1,
        description="Padded tokens (texts x longest) in one runtime call; a larger batch runs in parts. Batches are "
        "scheduled at a quarter of it, so that large requests interleave with small ones.",
    )
    max_batch_delay_ms: float = Field(
        0.0, ge=0, description="How long a batch may wait to fill up; 0 runs whatever is queued at once (continuous batching)."
    )
    request_timeout_ms: int = Field(
        30_000, ge=1, description="A request still queued after this long is dropped with 503 (deadline_exceeded)."
    )
    max_queue_ms: int = Field(
        1000, ge=1, description="Work queued longer than this is dropped with 503 (overloaded, with Retry-After from the drain rate)."
    )
    max_header_bytes: int = Field(16 * 1024, ge=1024, description="Request line and headers larger than this get 431.")
    max_headers: int = Field(100, ge=1, description="More request headers than this get 431.")
    header_timeout_s: float = Field(10.0, gt=0, description="A request line and headers not complete within this get 408 (or a close).")
    body_timeout_s: float = Field(30.0, gt=0, description="A request body not complete within this gets 408 and a close.")
    keepalive_timeout_s: float = Field(5.0, gt=0, description="An idle keep-alive connection is closed after this.")
    max_connections: int = Field(
        2048, ge=1, description="Open connections per server process; more are refused (and logged). Start-up raises RLIMIT_NOFILE to fit."
    )
    gil_switch_interval_ms: float = Field(
        0.5, gt=0, description="Server processes: Python's thread switch interval (sys.setswitchinterval; Python's default is 5)."
    )
    shutdown_timeout_s: float = Field(20.0, gt=0, description="On SIGTERM, how long in-flight requests may take to finish.")
    execution_providers: str = Field("auto", description="Comma-separated ONNX Runtime providers; `auto` uses CUDA when present, else CPU.")
    require_gpu: bool = Field(False, description="Not ready (503 on /health/ready) when a version runs on CPU instead of a GPU provider.")

    log_level: LogLevel = Field("INFO", description="Logging verbosity.")
    enable_metrics: bool = Field(True, description="Serve Prometheus metrics on /metrics.")
    enable_tracing: bool = Field(
        False,
        description="Trace requests: OpenTelemetry on the server (OTLP, configured by the standard OTEL_* variables), "
        "the Powertools Tracer (X-Ray) on Lambda.",
    )
    access_log: bool = Field(True, description="One log line per HTTP request (method, path, status, latency, request id).")
    log_format: Literal["text", "json"] = Field(
        "text", description="`json`: one JSON object per log line, with request id, model, version, arm, cache status and latency."
    )
    log_texts: bool = Field(False, description="Log the input texts of each request (never done unless true).")
    grpc_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Serve the Open Inference Protocol V2 over gRPC on this port (Triton's is 8001); unset: off. Never on Lambda.",
    )

    @field_validator(
        "admin_token",
        "auth_tokens",
        "metrics_token",
        "auth_token_parameter",
        "batch_results_uri",
        "redis_url",
        "redis_password",
        "redis_username",
        "grpc_port",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        # Deployment templates pass "" for an optional value that was not given.
        return None if value == "" else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("api_v1_str")
    @classmethod
    def _prefix(cls, value: str) -> str:
        value = "/" + value.strip("/")
        return "" if value == "/" else value

    @classmethod
    def from_values(cls, values: Mapping[str, object]) -> Settings:
        """Settings from explicit values only: no environment variables, no ``.env`` file."""
        return _ExplicitSettings.model_validate(dict(values))

    def provider_list(self) -> tuple[str, ...]:
        return tuple(p.strip() for p in self.execution_providers.split(",") if p.strip())


class _ExplicitSettings(Settings):
    """Reads only the values passed to it."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)
