"""Loaded model versions: their lifecycle, their batchers, and lookup by name and version."""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from engine.batcher import ContinuousBatcher
from engine.errors import ModelNotFound, ModelNotReady, VersionNotFound
from engine.metrics import Metrics
from engine.registry import ModelSpec, Registry, RegistryError, VersionSpec
from engine.session import SessionConfig
from engine.text_classifier import TextClassifier

logger = logging.getLogger(__name__)

# Rollout strategies other than pinned route traffic between versions; until routing is
# in place a registry asking for one is refused rather than silently served pinned.
_SUPPORTED_STRATEGIES = {"pinned"}


class ModelState(enum.Enum):
    """Lifecycle of one model version."""

    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"
    RETIRED = "retired"


@dataclass
class ModelVersion:
    """One version of one model, as the engine holds it."""

    name: str
    version: str
    spec: VersionSpec
    state: ModelState = ModelState.LOADING
    error: str | None = None
    load_ms: float | None = None
    classifier: TextClassifier | None = field(default=None, repr=False)
    batcher: ContinuousBatcher | None = field(default=None, repr=False)

    @property
    def labels(self) -> tuple[str, ...]:
        return self.classifier.labels if self.classifier is not None else ()


class ModelRepository:
    """Loads every non-retired version of the registry and resolves requests to them."""

    def __init__(self, registry: Registry, session_config: SessionConfig, metrics: Metrics, *, max_batch: int, max_queued: int) -> None:
        for name, model in registry.models.items():
            if model.rollout_strategy.type not in _SUPPORTED_STRATEGIES:
                raise RegistryError(
                    f"models.{name}.rollout_strategy.type: {model.rollout_strategy.type!r} is not supported by this "
                    f"release; use one of {sorted(_SUPPORTED_STRATEGIES)}"
                )
        self.registry = registry
        self._session_config = session_config
        self._metrics = metrics
        self._max_batch = max_batch
        self._max_queued = max_queued
        self._versions: dict[tuple[str, str], ModelVersion] = {}
        for name, model in registry.models.items():
            for version, spec in model.versions.items():
                state = ModelState.RETIRED if spec.status == "retired" else ModelState.LOADING
                self._versions[(name, version)] = ModelVersion(name=name, version=version, spec=spec, state=state)

    def load_all(self) -> None:
        """Load and warm every version; a version that fails is FAILED while the others serve."""
        for entry in self._versions.values():
            if entry.state is ModelState.LOADING:
                self._load(entry)
        self._metrics.active_models.set(sum(v.state is ModelState.READY for v in self._versions.values()))

    def _load(self, entry: ModelVersion) -> None:
        started = time.perf_counter()
        path = self.registry.resolve_path(entry.spec)
        try:
            classifier = TextClassifier(path, self._session_config)
            classifier.warm_up()
        except Exception as exc:  # any load failure marks this version FAILED; the others still serve
            entry.state, entry.error = ModelState.FAILED, f"{type(exc).__name__}: {exc}"
            logger.error("model %s %s failed to load from %s: %s", entry.name, entry.version, path, entry.error)
            return
        entry.load_ms = (time.perf_counter() - started) * 1000.0
        labels = (entry.name, entry.version)
        entry.classifier = classifier
        entry.batcher = ContinuousBatcher(
            classifier.run,
            max_batch=self._max_batch,
            max_queued=self._max_queued,
            name=f"{entry.name}-{entry.version}",
            observe=self._batch_observer(labels),
        )
        entry.state = ModelState.READY
        self._metrics.model_load_ms.labels(*labels).set(entry.load_ms)
        logger.info("model %s %s ready in %.0f ms on %s", entry.name, entry.version, entry.load_ms, classifier.providers)

    def _batch_observer(self, labels: tuple[str, str]) -> Callable[[int, float], None]:
        size_metric = self._metrics.batch_size.labels(*labels)
        latency_metric = self._metrics.batch_latency.labels(*labels)

        def observe(size: int, run_ms: float) -> None:
            size_metric.observe(size)
            latency_metric.observe(run_ms)

        return observe

    def model(self, name: str) -> ModelSpec:
        try:
            return self.registry.models[name]
        except KeyError:
            raise ModelNotFound(f"unknown model {name!r}; available: {sorted(self.registry.models)}") from None

    def resolve(self, name: str, version: str | None) -> ModelVersion:
        """The READY version to serve: the one asked for, else the model's default."""
        model = self.model(name)
        chosen = version if version is not None else model.default_version
        entry = self._versions.get((name, chosen))
        if entry is None or entry.state is ModelState.RETIRED:
            servable = sorted(v for (n, v), e in self._versions.items() if n == name and e.state is not ModelState.RETIRED)
            reason = "is retired" if entry is not None else "does not exist"
            raise VersionNotFound(f"model {name!r} version {chosen!r} {reason}; servable versions: {servable}")
        if entry.state is not ModelState.READY:
            detail = f": {entry.error}" if entry.error else ""
            raise ModelNotReady(f"model {name!r} version {chosen!r} is {entry.state.value}{detail}")
        return entry

    def versions(self) -> list[ModelVersion]:
        return list(self._versions.values())

    def close(self) -> None:
        for entry in self._versions.values():
            if entry.batcher is not None:
                entry.batcher.close()
