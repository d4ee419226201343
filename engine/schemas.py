"""Request and response shapes of the engine facade, shared by every edge (HTTP, Lambda, SQS)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict

_PREDICT_EXAMPLE: JsonDict = {
    "id": "req-001",
    "texts": ["I love this product! Amazing quality.", "This is terrible"],
    "model_version": "v1",
}


class PredictRequest(BaseModel):
    """A prediction request: one or more texts, run as one batch."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), json_schema_extra={"examples": [_PREDICT_EXAMPLE]})

    id: str | None = Field(None, max_length=256, description="Request id echoed as request_id; generated when absent.")
    texts: list[str] = Field(min_length=1, description="Texts to classify (limits: MAX_TEXTS_PER_REQUEST, MAX_TEXT_CHARS).")
    model: str | None = Field(None, max_length=128, description="Model name; the default model when absent.")
    model_version: str | None = Field(None, max_length=128, description="Pin a version; the model's default when absent.")


class TextResult(BaseModel):
    text: str
    prediction: str = Field(description="The label with the highest score.")
    scores: dict[str, float] = Field(description="Probability of each label; they sum to 1.")
    latency_ms: float = Field(description="Runtime time of the batch that computed this text.")


class PredictResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    request_id: str
    model: str
    model_version: str
    results: list[TextResult]
    latency_ms: float = Field(description="Time the engine spent on the whole request.")


class ModelHealth(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    name: str
    version: str
    state: str = Field(description="loading, ready, failed or retired.")
    load_ms: float | None = None
    error: str | None = None


class HealthReport(BaseModel):
    status: str = Field(description="active (all servable versions ready), degraded (some failed), loading, or unavailable.")
    ready: bool = Field(description="True once every default version is loaded and warmed.")
    active_models: list[str] = Field(description="Versions that are ready to serve.")
    providers: list[str] = Field(description="ONNX Runtime execution providers in use.")
    models: list[ModelHealth]


class ModelInfo(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    name: str
    version: str
    model_id: str = Field(description="Where the version comes from: the registry description and file.")
    status: str = Field(description="Registry status: active, candidate or retired.")
    state: str = Field(description="Lifecycle: loading, ready, failed or retired.")
    default: bool
    labels: list[str]


class ModelsReport(BaseModel):
    total: int
    models: list[ModelInfo]
