"""The engine facade: the one object every edge (HTTP, Lambda, Open Inference Protocol, emulator) calls."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import uuid

from engine.errors import EngineError, PayloadTooLarge, Unauthorized
from engine.metrics import Metrics
from engine.predictor import BatchedPredictor, Predictor
from engine.repository import ModelRepository, ModelState
from engine.schemas import HealthReport, ModelHealth, ModelInfo, ModelsReport, PredictRequest, PredictResponse, TextResult
from engine.settings import Settings

logger = logging.getLogger(__name__)


class InferenceEngine:
    """Validates limits, resolves the model version, runs the predictor, records metrics."""

    def __init__(self, settings: Settings, repository: ModelRepository, metrics: Metrics, predictor: Predictor | None = None) -> None:
        self.settings = settings
        self.repository = repository
        self.metrics = metrics
        self._predictor: Predictor = predictor if predictor is not None else BatchedPredictor()
        self._token = settings.auth_token.get_secret_value().encode("utf-8")
        self._started = False

    @property
    def default_model(self) -> str:
        return next(iter(self.repository.registry.models))

    def load(self) -> None:
        """Load and warm every model version (blocking). Edges call this once per cold start."""
        if not self._started:
            self.repository.load_all()
            self._started = True

    async def start(self) -> None:
        await asyncio.to_thread(self.load)

    def close(self) -> None:
        self.repository.close()

    def authenticate(self, token: str | None) -> None:
        """Constant-time check of the caller's token."""
        if token is None or not hmac.compare_digest(token.encode("utf-8"), self._token):
            raise Unauthorized("missing or invalid X-Token header")

    def check_limits(self, request: PredictRequest) -> None:
        limit = self.settings.max_texts_per_request
        if len(request.texts) > limit:
            raise PayloadTooLarge(f"{len(request.texts)} texts in one request; the limit is {limit} (MAX_TEXTS_PER_REQUEST)")
        max_chars = self.settings.max_text_chars
        too_long = [i for i, text in enumerate(request.texts) if len(text) > max_chars]
        if too_long:
            raise PayloadTooLarge(
                f"{len(too_long)} text(s) longer than {max_chars} characters (MAX_TEXT_CHARS)", details={"indexes": too_long[:20]}
            )

    async def predict(self, request: PredictRequest) -> PredictResponse:
        started = time.perf_counter()
        name = request.model or self.default_model
        version_label = "unresolved"  # a requested version is user input: only resolved ones become labels
        try:
            self.check_limits(request)
            version = self.repository.resolve(name, request.model_version)
            version_label = version.version
            outputs = await self._predictor.predict(version, request.texts)
        except EngineError as exc:
            # Label values stay bounded: a name that is not in the registry is counted as "unknown".
            model_label = name if name in self.repository.registry.models else "unknown"
            self.metrics.requests.labels(model_label, version_label, exc.code).inc()
            raise
        results = [
            TextResult(text=text, prediction=max(out.scores, key=out.scores.__getitem__), scores=out.scores, latency_ms=out.latency_ms)
            for text, out in zip(request.texts, outputs, strict=True)
        ]
        latency_ms = (time.perf_counter() - started) * 1000.0
        self.metrics.requests.labels(name, version.version, "ok").inc()
        self.metrics.texts.labels(name, version.version).inc(len(results))
        self.metrics.latency.labels(name, version.version).observe(latency_ms)
        return PredictResponse(
            request_id=request.id or uuid.uuid4().hex,
            model=name,
            model_version=version.version,
            results=results,
            latency_ms=round(latency_ms, 3),
        )

    def health(self) -> HealthReport:
        versions = self.repository.versions()
        servable = [v for v in versions if v.state is not ModelState.RETIRED]
        ready = [v for v in servable if v.state is ModelState.READY]
        defaults_ready = all(
            any(v.name == name and v.version == model.default_version and v.state is ModelState.READY for v in versions)
            for name, model in self.repository.registry.models.items()
        )
        if any(v.state is ModelState.LOADING for v in servable):
            status = "loading"
        elif not defaults_ready:
            status = "unavailable"
        elif len(ready) < len(servable):
            status = "degraded"
        else:
            status = "active"
        providers = sorted({p for v in ready if v.classifier is not None for p in v.classifier.providers})
        return HealthReport(
            status=status,
            ready=status in ("active", "degraded"),
            active_models=[v.version for v in ready],
            providers=providers,
            models=[
                ModelHealth(
                    name=v.name,
                    version=v.version,
                    state=v.state.value,
                    load_ms=round(v.load_ms, 1) if v.load_ms is not None else None,
                    error=v.error,
                )
                for v in versions
            ],
        )

    def list_models(self) -> ModelsReport:
        registry = self.repository.registry
        models = [
            ModelInfo(
                name=v.name,
                version=v.version,
                model_id=f"{v.spec.description} ({v.spec.path})" if v.spec.description else v.spec.path,
                status=v.spec.status,
                state=v.state.value,
                default=registry.models[v.name].default_version == v.version,
                labels=list(v.labels),
            )
            for v in self.repository.versions()
        ]
        return ModelsReport(total=len(models), models=models)
