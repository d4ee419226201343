"""The data plane: the one object every edge (HTTP, Lambda, SQS, the emulator's functions) calls.

It only orchestrates. A prediction is validated against its model's kind, routed to a version
by the rollout strategy, run on a version leased from the lifecycle (``engine.lifecycle``)
through the predictor chain (result cache, batching), and answered. Loading, eviction, leases
and reload are the lifecycle's; per-version state of the chain is the chain's.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from engine import tracing
from engine.errors import EngineError, InvalidInput, ReloadFailed
from engine.kinds import Limits, ModelKind, kind_named
from engine.lifecycle import Generation, ModelManager
from engine.loader import LoadedModel
from engine.metrics import Metrics
from engine.predictor import Predictor
from engine.registry import ModelSpec
from engine.reports import health_report, models_report
from engine.results import Output
from engine.rollout import Assignment
from engine.schemas import HealthReport, ModelsReport, PredictRequest, PredictResponse, ReloadReport, RolloutInfo
from engine.settings import Settings
from engine.shadow import ShadowJob, ShadowRunner
from engine.tracing import current_request

# Called after each answered request with (model, version, inputs, latency_ms): edges that
# report elsewhere (CloudWatch EMF on Lambda) hook in here.
PredictionObserver = Callable[[str, str, int, float], None]


class InferenceEngine:
    """Validates, routes, leases, predicts and answers; reports health, models and metrics."""

    def __init__(self, settings: Settings, models: ModelManager, predictor: Predictor, metrics: Metrics) -> None:
        self.settings = settings
        self.models = models
        self.metrics = metrics
        self._predictor = predictor
        self._shadows = ShadowRunner(metrics, mode=settings.shadow_mode, timeout_ms=settings.shadow_timeout_ms)
        self.observers: list[PredictionObserver] = []

    def load(self) -> None:
        """Load and warm the initial model versions (blocking). Edges call this once per cold start."""
        self.models.load()

    async def start(self) -> None:
        await asyncio.to_thread(self.load)

    def close(self) -> None:
        self._shadows.cancel()
        self.models.close()
        self._predictor.close()

    async def aclose(self) -> None:
        """Close what belongs to the running event loop (the cache's connections), then the rest."""
        await self._predictor.aclose()
        self.close()

    def _limits(self, spec: ModelSpec) -> Limits:
        return Limits(
            max_inputs=spec.limits.max_inputs_per_request or self.settings.max_inputs_per_request,
            max_text_chars=spec.limits.max_text_chars or self.settings.max_text_chars,
        )

    async def _run(
        self, generation: Generation, name: str, spec: ModelSpec, assignment: Assignment, request: PredictRequest
    ) -> tuple[LoadedModel, list[Output]]:
        field = kind_named(spec.kind).request_field
        if request.input_field != field:
            raise InvalidInput(f"model {name!r} is a {spec.kind} model: send '{field}'")
        async with generation.lease(name, assignment.version) as model:
            model.runtime.check(request.inputs, self._limits(spec))
            return model, await self._predictor.predict(model, request.inputs)

    async def predict(self, request: PredictRequest, routing_key: str | None = None) -> PredictResponse:
        """Answer a request. ``routing_key`` (e.g. the X-Routing-Key header) keys sticky rollout;
        without it the request id does."""
        with self.metrics.in_flight.track_inprogress():
            return await self._predict(request, routing_key)

    async def _predict(self, request: PredictRequest, routing_key: str | None) -> PredictResponse:
        started = time.perf_counter()
        generation = self.models.current  # one generation for the whole request
        record = current_request.get()  # the HTTP edge's record of this request, with its X-Request-ID
        request_id = request.id or (record.request_id if record is not None else None) or uuid.uuid4().hex
        name = request.model or generation.default_model
        known = name in generation.registry.models
        version = "unresolved"  # a requested version is user input: only the registry's become labels
        with tracing.span("predict") as span:
            trace = tracing.PredictTrace(record, span)
            trace.started(request_id, name, request.input_field, request.inputs, log_texts=self.settings.log_texts)
            try:
                spec = generation.spec(name)
                assignment = await generation.route(name, request.model_version, routing_key or request_id)
                if assignment.version in spec.versions:
                    version = assignment.version
                trace.routed(assignment.version, assignment.strategy, assignment.arm)
                model, outputs = await self._run(generation, name, spec, assignment, request)
            except EngineError as exc:
                self.metrics.requests.labels(name if known else "unknown", version, exc.code).inc()
                self.metrics.errors.labels(exc.code).inc()
                exc.counted = True
                raise
            except asyncio.CancelledError:  # the caller went away: its queued work was dropped
                self.metrics.requests.labels(name if known else "unknown", version, "cancelled").inc()
                trace.cancelled()
                raise
            results = [model.runtime.result(item, out) for item, out in zip(request.inputs, outputs, strict=True)]
            latency_ms = (time.perf_counter() - started) * 1000.0
            self._count_answer(name, version, assignment, len(results), latency_ms)
            trace.answered(outputs)
            if assignment.shadow is not None:
                await self._shadow(generation, name, spec, assignment, request, model, outputs)
        return PredictResponse(
            request_id=request_id,
            model=name,
            model_version=version,
            rollout=RolloutInfo(strategy=assignment.strategy, arm=assignment.arm),
            results=results,
            latency_ms=round(latency_ms, 3),
        )

    def _count_answer(self, name: str, version: str, assignment: Assignment, inputs: int, latency_ms: float) -> None:
        self.metrics.requests.labels(name, version, "ok").inc()
        self.metrics.inputs.labels(name, version).inc(inputs)
        self.metrics.latency.labels(name, version).observe(latency_ms)
        self.metrics.rollout_assignments.labels(name, assignment.strategy, assignment.arm).inc()
        if assignment.failover_from is not None:
            self.metrics.rollout_failovers.labels(name, assignment.failover_from, assignment.version).inc()
        for observe in self.observers:
            observe(name, version, inputs, latency_ms)

    async def _shadow(
        self,
        generation: Generation,
        name: str,
        spec: ModelSpec,
        assignment: Assignment,
        request: PredictRequest,
        primary: LoadedModel,
        outputs: Sequence[Output],
    ) -> None:
        shadow = Assignment(version=str(assignment.shadow), strategy="shadow", arm=str(assignment.shadow))

        async def run() -> list[Output]:
            return (await self._run(generation, name, spec, shadow, request))[1]

        rows = [o.row for o in outputs]
        await self._shadows.submit(ShadowJob(name, primary.version, shadow.version, rows=rows, agrees=primary.runtime.agrees, run=run))

    async def drain_shadows(self, timeout_s: float = 10.0) -> None:
        """Wait for background shadow runs (tests, graceful shutdown)."""
        await self._shadows.drain(timeout_s)

    def reload(self, path: Path | None = None) -> ReloadReport:
        """Re-read the registry (``MODEL_REGISTRY_PATH`` unless given); see ``ModelManager.reload``."""
        return self.models.reload(path or self.settings.model_registry_path)

    def reload_or_raise(self) -> ReloadReport:
        report = self.reload()
        if not report.ok:
            raise ReloadFailed(report.error or "reload failed", details=report.model_dump())
        return report

    async def invalidate_cache(self, model: str | None, version: str | None) -> int:
        """Delete cached results of one model (and version), or of everything."""
        if version is not None and model is None:
            raise InvalidInput("give 'model' with 'version'")
        return await self._predictor.invalidate(model, version)

    def health(self) -> HealthReport:
        return health_report(self.models, self._predictor.health(), require_gpu=self.settings.require_gpu)

    def list_models(self) -> ModelsReport:
        return models_report(self.models.current)

    def render_metrics(self) -> bytes:
        self._predictor.health()  # refreshes the cache state gauge
        return self.metrics.render()

    def kind_of(self, name: str) -> type[ModelKind]:
        """The kind of model ``name`` (raises ``ModelNotFound``): what an edge needs to decode inputs
        before the engine routes them."""
        return kind_named(self.models.current.spec(name).kind)

    async def describe(self, name: str, version: str | None = None) -> tuple[ModelSpec, str, ModelKind]:
        """What an edge needs to publish a version's signature (the V2 metadata): the model's registry
        entry, the version ``version`` names (the default version when None) and that version's loaded
        kind instance, whose ``labels``, ``width`` and kind attributes describe its inputs and outputs.
        Loads the version when it is not in memory; raises ``ModelNotFound``, ``VersionNotFound`` or
        ``ModelNotReady``."""
        generation = self.models.current
        spec = generation.spec(name)
        resolved = version if version is not None else spec.default_version
        async with generation.lease(name, resolved) as model:
            return spec, resolved, model.runtime
