"""The engine facade: the one object every edge (HTTP, Lambda, Open Inference Protocol, emulator) calls."""

from __future__ import annotations

import asyncio
import hmac
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.cache.keys import key_prefix
from engine.cache.predictor import CachingPredictor
from engine.errors import (
    EngineError,
    Forbidden,
    InvalidInput,
    ModelNotReady,
    PayloadTooLarge,
    ReloadFailed,
    Unauthorized,
)
from engine.metrics import Metrics
from engine.predictor import BatchedPredictor, Output, Predictor
from engine.registry import ModelSpec, Registry, RegistryError, load_registry
from engine.repository import Key, ModelRepository, ModelState, ModelVersion
from engine.rollout import Assignment, Strategy, routing_bucket, strategy_for
from engine.schemas import (
    CacheHealth,
    HealthReport,
    InstanceResult,
    ModelHealth,
    ModelInfo,
    ModelsReport,
    PredictRequest,
    PredictResponse,
    ReloadReport,
    RolloutInfo,
    TextResult,
)
from engine.secrets import token_source
from engine.settings import Settings
from engine.shadow import ShadowJob, ShadowRunner, top_label

logger = logging.getLogger(__name__)

RepositoryFactory = Callable[[Registry, Mapping[Key, ModelVersion] | None], ModelRepository]
# Called after each answered request with (model, version, inputs, latency_ms): edges that
# report elsewhere (CloudWatch EMF on Lambda) hook in here.
PredictionObserver = Callable[[str, str, int, float], None]
_LEASE_ATTEMPTS = 3


@dataclass(frozen=True)
class _Generation:
    """One loaded registry: its versions and each model's rollout strategy. A request uses one
    generation from start to end, so a reload never changes the version under it."""

    repository: ModelRepository
    strategies: Mapping[str, Strategy]

    @classmethod
    def of(cls, repository: ModelRepository) -> _Generation:
        return cls(repository, {name: strategy_for(spec) for name, spec in repository.registry.models.items()})


def _key_name(key: Key) -> str:
    return f"{key[0]}:{key[1]}"


class InferenceEngine:
    """Validates limits, routes to a version, runs the predictor, records metrics."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        make_repository: RepositoryFactory,
        metrics: Metrics,
        predictor: Predictor | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self._make_repository = make_repository
        self._generation = _Generation.of(make_repository(registry, None))
        self._predictor: Predictor = predictor if predictor is not None else BatchedPredictor()
        self._token_source = token_source(settings)
        admin = settings.admin_token.get_secret_value() if settings.admin_token is not None else ""
        self._admin_token = admin.encode("utf-8") if admin else None
        self._started = False
        self._reload_lock = threading.Lock()
        self._last_reload: ReloadReport | None = None
        self._shadows = ShadowRunner(metrics, mode=settings.shadow_mode, timeout_ms=settings.shadow_timeout_ms)
        self.observers: list[PredictionObserver] = []

    @property
    def repository(self) -> ModelRepository:
        return self._generation.repository

    @property
    def default_model(self) -> str:
        return next(iter(self.repository.registry.models))

    # -- lifecycle ------------------------------------------------------------------------

    def load(self) -> None:
        """Load and warm the initial model versions (blocking). Edges call this once per cold start."""
        if not self._started:
            self.repository.load_initial()
            self._started = True

    async def start(self) -> None:
        await asyncio.to_thread(self.load)

    def close(self) -> None:
        self._shadows.cancel()
        self.repository.close()

    async def aclose(self) -> None:
        """Close what belongs to the running event loop (the cache's connections), then the rest."""
        if isinstance(self._predictor, CachingPredictor):
            await self._predictor.aclose()
        self.close()

    # -- cache ----------------------------------------------------------------------------

    def _cache_health(self) -> CacheHealth:
        if isinstance(self._predictor, CachingPredictor):
            state = self._predictor.state
            self.metrics.cache_state.set({"ok": 0, "degraded": 1, "open": 2}.get(state, 2))
            return CacheHealth(backend=self._predictor.backend, state=state)
        return CacheHealth(backend="none", state="ok")

    async def invalidate_cache(self, model: str | None, version: str | None) -> int:
        """Delete cached results of one model (and version), or of everything."""
        if version is not None and model is None:
            raise InvalidInput("give 'model' with 'version'")
        if not isinstance(self._predictor, CachingPredictor):
            return 0
        return await self._predictor.invalidate(key_prefix(model, version) if model is not None else "")

    def render_metrics(self) -> bytes:
        self._cache_health()  # refresh the cache state gauge
        return self.metrics.render()

    # -- auth -------------------------------------------------------------------------------

    def authenticate(self, token: str | None) -> None:
        """Constant-time check of the caller's token."""
        if token is None or not hmac.compare_digest(token.encode("utf-8"), self._token_source.current().encode("utf-8")):
            raise Unauthorized("missing or invalid X-Token header")

    def authenticate_admin(self, token: str | None) -> None:
        if self._admin_token is None:
            raise Forbidden("admin endpoints are disabled: set ADMIN_TOKEN to enable them")
        if token is None or not hmac.compare_digest(token.encode("utf-8"), self._admin_token):
            raise Unauthorized("missing or invalid X-Admin-Token header")

    # -- prediction -----------------------------------------------------------------------

    def _check_request(self, name: str, spec: ModelSpec, request: PredictRequest) -> None:
        if spec.kind == "tabular" and request.instances is None:
            raise InvalidInput(f"model {name!r} is a tabular model: send 'instances' (rows of numbers)")
        if spec.kind != "tabular" and request.texts is None:
            raise InvalidInput(f"model {name!r} is a text model: send 'texts'")
        limit = spec.limits.max_inputs_per_request or self.settings.max_texts_per_request
        count = len(request.inputs)
        if count > limit:
            raise PayloadTooLarge(f"{count} inputs in one request; the limit is {limit} (MAX_TEXTS_PER_REQUEST)")
        max_chars = spec.limits.max_text_chars or self.settings.max_text_chars
        too_long = [i for i, text in enumerate(request.texts or ()) if len(text) > max_chars]
        if too_long:
            raise PayloadTooLarge(
                f"{len(too_long)} text(s) longer than {max_chars} characters (MAX_TEXT_CHARS)", details={"indexes": too_long[:20]}
            )

    def _assign(self, generation: _Generation, name: str, request: PredictRequest, routing_key: str) -> Assignment:
        if request.model_version is not None:  # pinned by the caller: rollout is bypassed
            return Assignment(version=request.model_version, strategy="request", arm=request.model_version)
        return generation.strategies[name].assign(routing_bucket(name, routing_key))

    async def _lease(self, repository: ModelRepository, entry: ModelVersion) -> None:
        """Load the version if needed and hold it so it is not evicted mid-request."""
        for _ in range(_LEASE_ATTEMPTS):
            if entry.state is not ModelState.READY and not entry.retiring:
                loaded = await asyncio.to_thread(repository.ensure_loaded, entry)
                if not loaded:
                    raise ModelNotReady(f"model {entry.name!r} version {entry.version!r} failed to load: {entry.error}")
            if repository.acquire(entry):
                return
            if entry.retiring:
                break
        raise ModelNotReady(f"model {entry.name!r} version {entry.version!r} is not available right now; retry")

    async def _run(self, repository: ModelRepository, entry: ModelVersion, inputs: Sequence[Any]) -> list[Output]:
        await self._lease(repository, entry)
        try:
            assert entry.model is not None
            entry.model.validate(inputs)
            return await self._predictor.predict(entry, inputs)
        finally:
            repository.release(entry)

    async def predict(self, request: PredictRequest, routing_key: str | None = None) -> PredictResponse:
        """Answer a request. ``routing_key`` (e.g. the X-Routing-Key header) keys sticky rollout;
        without it the request id does."""
        started = time.perf_counter()
        generation = self._generation
        repository = generation.repository
        request_id = request.id or uuid.uuid4().hex
        name = request.model or self.default_model
        version_label = "unresolved"  # a requested version is user input: only resolved ones become labels
        try:
            spec = repository.model(name)
            self._check_request(name, spec, request)
            assignment = self._assign(generation, name, request, routing_key or request_id)
            entry = repository.resolve(name, assignment.version)
            version_label = entry.version
            outputs = await self._run(repository, entry, request.inputs)
        except EngineError as exc:
            # Label values stay bounded: a name that is not in the registry is counted as "unknown".
            model_label = name if name in repository.registry.models else "unknown"
            self.metrics.requests.labels(model_label, version_label, exc.code).inc()
            raise
        results: list[TextResult | InstanceResult] = []
        for item, out in zip(request.inputs, outputs, strict=True):
            if request.texts is not None:
                results.append(
                    TextResult(text=item, prediction=top_label(out.scores), scores=out.scores, latency_ms=out.latency_ms, cached=out.cached)
                )
            else:
                results.append(
                    InstanceResult(
                        instance=item, prediction=top_label(out.scores), scores=out.scores, latency_ms=out.latency_ms, cached=out.cached
                    )
                )
        latency_ms = (time.perf_counter() - started) * 1000.0
        self.metrics.requests.labels(name, entry.version, "ok").inc()
        self.metrics.texts.labels(name, entry.version).inc(len(results))
        self.metrics.latency.labels(name, entry.version).observe(latency_ms)
        self.metrics.rollout_assignments.labels(name, assignment.strategy, assignment.arm).inc()
        for observe in self.observers:
            observe(name, entry.version, len(results), latency_ms)
        if assignment.shadow is not None:
            shadow_version = assignment.shadow
            await self._shadows.submit(
                ShadowJob(
                    model=name,
                    primary=entry.version,
                    shadow=shadow_version,
                    predictions=[r.prediction for r in results],
                    run=lambda: self._run(repository, repository.resolve(name, shadow_version), request.inputs),
                )
            )
        return PredictResponse(
            request_id=request_id,
            model=name,
            model_version=entry.version,
            rollout=RolloutInfo(strategy=assignment.strategy, arm=assignment.arm),
            results=results,
            latency_ms=round(latency_ms, 3),
        )

    async def drain_shadows(self, timeout_s: float = 10.0) -> None:
        """Wait for background shadow runs (tests, graceful shutdown)."""
        await self._shadows.drain(timeout_s)

    # -- reload ---------------------------------------------------------------------------

    def reload(self, path: Path | None = None) -> ReloadReport:
        """Re-read the registry; load and warm new or changed versions, then switch traffic.

        A bad file, or a new version that fails to load, leaves the current registry serving;
        the report (also in /health) says why. Unchanged versions are kept as they are."""
        path = path or self.settings.model_registry_path
        with self._reload_lock:
            started = time.perf_counter()
            report = self._reload(path)
            report.duration_ms = round((time.perf_counter() - started) * 1000.0, 1)
            self._last_reload = report
        self.metrics.registry_reloads.labels("ok" if report.ok else "failed").inc()
        (logger.info if report.ok else logger.error)("registry reload from %s: %s", path, report.model_dump(exclude_none=True))
        return report

    def _reload(self, path: Path) -> ReloadReport:
        try:
            registry = load_registry(path)
        except RegistryError as exc:
            return ReloadReport(ok=False, registry=str(path), error=str(exc))
        old = self.repository
        old_entries = old.entries()
        try:
            new = self._make_repository(registry, old_entries)
        except RegistryError as exc:
            return ReloadReport(ok=False, registry=str(path), error=str(exc))
        new_entries = new.entries()
        fresh = [e for e in new.initial_versions() if e.state is not ModelState.READY]
        failed = [e for e in fresh if not new.ensure_loaded(e, evict=False)]
        if failed:
            for entry in fresh:
                entry.unload()
            errors = "; ".join(f"{_key_name(e.key)}: {e.error}" for e in failed)
            return ReloadReport(ok=False, registry=str(path), error=f"new versions failed to load, kept the previous registry: {errors}")
        self._generation = _Generation.of(new)
        old.retire([e for k, e in old_entries.items() if new_entries.get(k) is not e])
        return ReloadReport(
            ok=True,
            registry=str(path),
            added=sorted(_key_name(k) for k in new_entries.keys() - old_entries.keys()),
            removed=sorted(_key_name(k) for k in old_entries.keys() - new_entries.keys()),
            changed=sorted(_key_name(k) for k in new_entries.keys() & old_entries.keys() if new_entries[k] is not old_entries[k]),
            unchanged=sorted(_key_name(k) for k in new_entries.keys() & old_entries.keys() if new_entries[k] is old_entries[k]),
        )

    def reload_or_raise(self) -> ReloadReport:
        report = self.reload()
        if not report.ok:
            raise ReloadFailed(report.error or "reload failed", details=report.model_dump())
        return report

    # -- reports --------------------------------------------------------------------------

    def health(self) -> HealthReport:
        repository = self.repository
        versions = repository.versions()
        ready = [v for v in versions if v.state is ModelState.READY]
        failed = {v.key for v in versions if v.state is ModelState.FAILED}
        defaults = {(name, model.default_version) for name, model in repository.registry.models.items()}
        if not self._started:
            status = "loading"
        elif defaults & failed:
            status = "unavailable"
        elif failed:
            status = "degraded"
        else:
            status = "active"
        providers = sorted({p for v in ready if v.model is not None for p in v.model.providers})
        return HealthReport(
            status=status,
            ready=status in ("active", "degraded"),
            active_models=[f"{v.name}:{v.version}" for v in ready],
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
            last_reload=self._last_reload,
            cache=self._cache_health(),
        )

    def list_models(self) -> ModelsReport:
        registry = self.repository.registry
        models = [
            ModelInfo(
                name=v.name,
                version=v.version,
                kind=v.kind,
                model_id=f"{v.spec.description} ({v.spec.path})" if v.spec.description else v.spec.path,
                status=v.spec.status,
                state=v.state.value,
                default=registry.models[v.name].default_version == v.version,
                rollout=registry.models[v.name].rollout_strategy.model_dump(exclude_none=True),
                labels=list(v.labels),
            )
            for v in self.repository.versions()
        ]
        return ModelsReport(total=len(models), models=models)
