"""Request and response shapes of the engine facade, shared by every edge (HTTP, Lambda, SQS)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator

_PREDICT_EXAMPLES: list[JsonValue] = [
    {"id": "req-001", "texts": ["I love this product! Amazing quality.", "This is terrible"], "model_version": "v1"},
    {"id": "req-002", "model": "iris", "instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]},
]


class PredictRequest(BaseModel):
    """A prediction request: texts (text models) or instances (tabular models), run as one batch."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), json_schema_extra={"examples": _PREDICT_EXAMPLES})

    id: str | None = Field(None, max_length=256, description="Request id echoed as request_id; generated when absent.")
    texts: list[str] | None = Field(
        None, min_length=1, description="Texts for a text model (limits: MAX_TEXTS_PER_REQUEST, MAX_TEXT_CHARS)."
    )
    instances: list[list[Any]] | None = Field(None, min_length=1, description="Feature rows for a tabular model.")
    model: str | None = Field(None, max_length=128, description="Model name; the registry's first model when absent.")
    model_version: str | None = Field(None, max_length=128, description="Pin a version, bypassing rollout.")

    @model_validator(mode="after")
    def _one_input_kind(self) -> PredictRequest:
        if (self.texts is None) == (self.instances is None):
            raise ValueError("give exactly one of 'texts' (text models) or 'instances' (tabular models)")
        return self

    @property
    def inputs(self) -> list[Any]:
        return list(self.texts if self.texts is not None else self.instances or [])


class TextResult(BaseModel):
    text: str
    prediction: str = Field(description="The label with the highest score.")
    scores: dict[str, float] = Field(description="Probability of each label; they sum to 1.")
    latency_ms: float = Field(description="Runtime time of the batch that computed this input (lookup time when cached).")
    cached: bool = Field(False, description="True when the result came from the result cache.")


class InstanceResult(BaseModel):
    instance: list[Any]
    prediction: str = Field(description="The label with the highest score.")
    scores: dict[str, float] = Field(description="Probability of each label; they sum to 1.")
    latency_ms: float = Field(description="Runtime time of the batch that computed this input (lookup time when cached).")
    cached: bool = Field(False, description="True when the result came from the result cache.")


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
    results: list[TextResult | InstanceResult]
    latency_ms: float = Field(description="Time the engine spent on the whole request.")


class ModelHealth(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    name: str
    version: str
    state: str = Field(description="unloaded, loading, ready, failed or retired.")
    load_ms: float | None = None
    error: str | None = None


class ReloadReport(BaseModel):
    ok: bool
    registry: str
    error: str | None = None
    added: list[str] = []
    changed: list[str] = []
    removed: list[str] = []
    unchanged: list[str] = []
    duration_ms: float = 0.0


class HealthReport(BaseModel):
    status: str = Field(description="active, degraded (some version failed), loading, or unavailable (a default version failed).")
    ready: bool = Field(description="True once every default version is loaded and warmed.")
    active_models: list[str] = Field(description="Loaded, ready versions as model:version (the seed listed bare versions).")
    providers: list[str] = Field(description="ONNX Runtime execution providers in use.")
    models: list[ModelHealth]
    last_reload: ReloadReport | None = Field(None, description="The last registry reload, if any.")
    cache: CacheHealth | None = None


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
