"""Request and response shapes of the engine facade, shared by every edge (HTTP, Lambda, SQS).

The input fields of a request and the result shapes of a response come from the model kinds
(``engine.kinds.KINDS``), so a new kind needs no change here.
"""

from __future__ import annotations

import re
from functools import cached_property
from typing import TYPE_CHECKING, Any, Union

from pydantic import BaseModel, ConfigDict, Field, JsonValue, create_model, model_validator

from engine.kinds import KINDS, request_fields
from engine.results import InputResult

# Named examples of the repository's registry, one per model kind and one pinned version: the
# OpenAPI document offers them in the docs' example drop-down (request and response alike).
PREDICT_REQUEST_EXAMPLES: dict[str, dict[str, JsonValue]] = {
    "text_classification": {
        "summary": "Text classification (sentiment; the rollout picks the version)",
        "value": {"id": "req-001", "texts": ["I love this product! Amazing quality.", "This is terrible"]},
    },
    "tabular": {
        "summary": "Tabular: iris rows (sepal length, sepal width, petal length, petal width in cm)",
        "value": {"id": "req-002", "model": "iris", "instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]},
    },
    "embedding": {
        "summary": "Text embedding (384 floats per text)",
        "value": {"id": "req-003", "model": "sentence_embedding", "texts": ["A sentence to embed."]},
    },
    "pinned_version": {
        "summary": "Pinned version (bypasses the rollout)",
        "value": {"id": "req-004", "model": "sentiment_analysis", "model_version": "v2", "texts": ["Brilliant, funny and moving."]},
    },
}
_EMBEDDING_HEAD: list[JsonValue] = [-0.01596, 0.07844, 0.0362, 0.05223, -0.04311, 0.01927, 0.06118, -0.00482]
PREDICT_RESPONSE_EXAMPLES: dict[str, dict[str, JsonValue]] = {
    "text_classification": {
        "summary": "Text classification",
        "value": {
            "request_id": "req-001",
            "model": "sentiment_analysis",
            "model_version": "v1",
            "rollout": {"strategy": "canary", "arm": "v1"},
            "results": [
                {
                    "text": "I love this product! Amazing quality.",
                    "prediction": "positive",
                    "scores": {"negative": 0.0061, "neutral": 0.0012, "positive": 0.9927},
                    "latency_ms": 15.3,
                    "cached": False,
                },
                {
                    "text": "This is terrible",
                    "prediction": "negative",
                    "scores": {"negative": 0.9441, "neutral": 0.0052, "positive": 0.0507},
                    "latency_ms": 15.3,
                    "cached": False,
                },
            ],
            "latency_ms": 16.9,
        },
    },
    "tabular": {
        "summary": "Tabular: iris",
        "value": {
            "request_id": "req-002",
            "model": "iris",
            "model_version": "v1",
            "rollout": {"strategy": "pinned", "arm": "v1"},
            "results": [
                {
                    "instance": [5.1, 3.5, 1.4, 0.2],
                    "prediction": "setosa",
                    "scores": {"setosa": 0.9787, "versicolor": 0.0213, "virginica": 0.0},
                    "latency_ms": 0.19,
                    "cached": False,
                },
                {
                    "instance": [6.7, 3.0, 5.2, 2.3],
                    "prediction": "virginica",
                    "scores": {"setosa": 0.0001, "versicolor": 0.0502, "virginica": 0.9497},
                    "latency_ms": 0.19,
                    "cached": True,
                },
            ],
            "latency_ms": 1.7,
        },
    },
    "embedding": {
        "summary": "Text embedding (the first 8 of its 384 floats shown)",
        "value": {
            "request_id": "req-003",
            "model": "sentence_embedding",
            "model_version": "v1",
            "rollout": {"strategy": "pinned", "arm": "v1"},
            "results": [{"text": "A sentence to embed.", "embedding": _EMBEDDING_HEAD, "latency_ms": 8.0, "cached": False}],
            "latency_ms": 9.1,
        },
    },
    "pinned_version": {
        "summary": "Pinned version",
        "value": {
            "request_id": "req-004",
            "model": "sentiment_analysis",
            "model_version": "v2",
            "rollout": {"strategy": "request", "arm": "v2"},
            "results": [
                {
                    "text": "Brilliant, funny and moving.",
                    "prediction": "positive",
                    "scores": {"negative": 0.004, "neutral": 0.0034, "positive": 0.9926},
                    "latency_ms": 6.3,
                    "cached": False,
                }
            ],
            "latency_ms": 7.2,
        },
    },
}
_PREDICT_EXAMPLES: list[JsonValue] = [example["value"] for example in PREDICT_REQUEST_EXAMPLES.values()]


# A request id is echoed in the X-Request-ID header: printable ASCII only (no control characters,
# CR/LF or non-Latin-1 text, which no header can carry), without leading or trailing spaces; "" is no id.
REQUEST_ID_PATTERN = r"^([!-~]([ -~]*[!-~])?)?$"
MAX_REQUEST_ID_CHARS = 256
_REQUEST_ID = re.compile(REQUEST_ID_PATTERN)


def is_request_id(value: str) -> bool:
    """Whether ``value`` is a request id the API takes and echoes (the body's ``id``, an inbound
    X-Request-ID, a V2 request's ``id``): 1 to 256 printable ASCII characters, no space at either end."""
    return 0 < len(value) <= MAX_REQUEST_ID_CHARS and _REQUEST_ID.fullmatch(value) is not None


def _exactly_one_input(schema: dict[str, JsonValue]) -> None:
    # The schema says what the validator below enforces: exactly one input field, not null.
    schema["examples"] = _PREDICT_EXAMPLES
    schema["oneOf"] = [{"required": [name], "properties": {name: {"type": "array"}}} for name in INPUT_FIELDS]


class _PredictRequestBase(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), json_schema_extra=_exactly_one_input)

    id: str | None = Field(
        None,
        max_length=MAX_REQUEST_ID_CHARS,
        pattern=REQUEST_ID_PATTERN,
        description="Request id echoed as request_id and in X-Request-ID: printable ASCII, no leading or trailing space; "
        "generated when absent.",
    )
    model: str | None = Field(None, max_length=128, description="Model name; the registry's first model when absent.")
    model_version: str | None = Field(None, max_length=128, description="Pin a version, bypassing rollout.")

    @model_validator(mode="after")
    def _one_input_field(self) -> _PredictRequestBase:
        given = [name for name in INPUT_FIELDS if getattr(self, name) is not None]
        if len(given) != 1:
            described = " or ".join(
                f"'{name}' ({', '.join(k.name for k in KINDS.values() if k.request_field == name)} models)" for name in INPUT_FIELDS
            )
            raise ValueError(f"give exactly one of {described}")
        return self

    @cached_property
    def input_field(self) -> str:
        """The field that carries this request's inputs."""
        return next(name for name in INPUT_FIELDS if getattr(self, name) is not None)

    @cached_property
    def inputs(self) -> list[Any]:
        """The inputs, in order (computed once: the data plane reads them at each step)."""
        return list(getattr(self, self.input_field))


# One optional input field per kind's request_field: a new kind's field appears here by itself.
INPUT_FIELDS = request_fields()
if TYPE_CHECKING:
    PredictRequest = _PredictRequestBase
    KindResult = InputResult
else:
    PredictRequest = create_model(
        "PredictRequest",
        __base__=_PredictRequestBase,
        __doc__="A prediction request: the inputs of one model kind (texts, instances), run as one batch.",
        **{
            name: (kind.request_schema | None, Field(None, min_length=1, description=kind.request_description))
            for name, kind in INPUT_FIELDS.items()
        },
    )
    KindResult = Union[tuple(kind.result_type for kind in KINDS.values())]  # noqa: UP007


class CacheHealth(BaseModel):
    backend: str = Field(description="memory, redis, tiered or none.")
    state: str = Field(description="ok, degraded (recent failures) or open (Redis skipped until a probe succeeds).")


class RolloutInfo(BaseModel):
    strategy: str = Field(description="pinned, canary, ab_test, shadow, or request (model_version was given).")
    arm: str = Field(description="The version the strategy chose.")


class PredictResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    request_id: str
    model: str
    model_version: str
    rollout: RolloutInfo
    results: list[KindResult] = Field(description="One result per input, in input order; its shape is the model kind's.")
    latency_ms: float = Field(description="Time the engine spent on the whole request.")


class ModelHealth(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    name: str
    version: str
    state: str = Field(description="unloaded, loading, ready, failed or retired.")
    load_ms: float | None = None
    error: str | None = None
    providers: list[str] = Field([], description="ONNX Runtime execution providers of a loaded version, best first.")
    failover_to: str | None = Field(
        None, description="A failed rollout arm (canary target, A/B arm): the default version that answers its unpinned traffic."
    )
    files_changed: bool = Field(
        False, description="A file the version was loaded from changed on disk since: it keeps serving its private copy."
    )


class WorkerInfo(BaseModel):
    """One server process, as it published itself (``mlinfer serve --workers N``, gunicorn)."""

    pid: int
    registry_digest: str = Field(description="sha256 (16 hex digits) of the registry file the worker serves.")
    generation: int = Field(description="How many registries this worker has loaded (1 at start, +1 per successful reload).")
    reloads: int = Field(0, description="Reloads this worker has finished, successful or not.")
    ready: bool


class ReloadReport(BaseModel):
    ok: bool
    registry: str
    registry_digest: str | None = Field(None, description="sha256 (16 hex digits) of the registry now served.")
    error: str | None = None
    added: list[str] = []
    changed: list[str] = []
    removed: list[str] = []
    unchanged: list[str] = []
    retried: list[str] = Field([], description="Versions that had failed to load, tried again (listed as unchanged or changed too).")
    still_failed: list[str] = Field([], description="Retried versions that failed again: failed in the new registry, which serves.")
    kept_previous: list[str] = Field(
        [], description="Versions whose files changed on disk and no longer load: the copy they loaded before keeps serving."
    )
    duration_ms: float = 0.0
    workers: list[WorkerInfo] | None = Field(None, description="Several workers: each one's registry once the reload reached it.")


class HealthReport(BaseModel):
    status: str = Field(description="active, degraded (some version failed), loading, or unavailable (a default version failed).")
    ready: bool = Field(description="True once every default version is loaded and warmed.")
    active_models: list[str] = Field(description="Loaded, ready versions as model:version.")
    providers: list[str] = Field(description="ONNX Runtime execution providers in use.")
    models: list[ModelHealth]
    last_reload: ReloadReport | None = Field(None, description="The last registry reload, if any.")
    cache: CacheHealth | None = None
    gpu_fallback: list[str] = Field(
        [], description="Versions (model:version) that asked for a GPU provider but run on CPU; with REQUIRE_GPU=true, not ready."
    )
    registry_digest: str = Field("", description="sha256 (16 hex digits) of the registry file this process serves.")
    generation: int = Field(1, description="Registries loaded by this process: 1 at start, +1 per successful reload.")
    pid: int = Field(0, description="The process that answered.")
    workers: list[WorkerInfo] | None = Field(None, description="Several workers: what each one serves.")


class ModelInfo(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    name: str
    version: str
    kind: str
    model_id: str = Field(description="Where the version comes from: the registry description and file.")
    status: str = Field(description="Registry status: active, candidate or retired.")
    state: str = Field(description="Lifecycle: unloaded, loading, ready, failed or retired.")
    default: bool
    rollout: dict[str, Any] = Field(description="The model's rollout strategy.")
    labels: list[str]


class ModelsReport(BaseModel):
    total: int
    models: list[ModelInfo]
