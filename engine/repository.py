"""Model versions: lifecycle, on-demand loading with an LRU bound, leases, lookup."""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from engine.batcher import ContinuousBatcher
from engine.cache.keys import content_digest
from engine.errors import ModelNotFound, ModelNotReady, VersionNotFound
from engine.kinds import ClassifierModel, ModelKindName, load_model
from engine.metrics import Metrics
from engine.registry import ModelSpec, Registry, VersionSpec
from engine.session import SessionConfig
from engine.sources import LocalSource, ModelSource, S3Source, weights_name

logger = logging.getLogger(__name__)

Key = tuple[str, str]
_SIDECARS = ("tokenizer.json", "labels.json")


class ModelState(enum.Enum):
    """Lifecycle of one model version."""

    UNLOADED = "unloaded"  # servable, not in memory (not loaded yet, or evicted by the LRU bound)
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"
    RETIRED = "retired"


@dataclass(eq=False)
class ModelVersion:
    """One version of one model, as the engine holds it."""

    name: str
    version: str
    kind: ModelKindName
    spec: VersionSpec
    labels_override: tuple[str, ...] | None
    state: ModelState = ModelState.UNLOADED
    error: str | None = None
    load_ms: float | None = None
    model: ClassifierModel | None = field(default=None, repr=False)
    batcher: ContinuousBatcher | None = field(default=None, repr=False)
    digest: str | None = None  # content digest of the model's files, for result-cache keys
    leases: int = 0
    retiring: bool = False
    load_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def key(self) -> Key:
        return (self.name, self.version)

    @property
    def labels(self) -> tuple[str, ...]:
        return self.model.labels if self.model is not None else (self.labels_override or ())

    def defined_as(self, kind: ModelKindName, spec: VersionSpec, labels: tuple[str, ...] | None) -> bool:
        return (self.kind, self.spec, self.labels_override) == (kind, spec, labels)

    def unload(self) -> None:
        """Drop the session; queued work finishes first (the batcher drains before it stops)."""
        batcher, self.batcher, self.model = self.batcher, None, None
        if self.state is ModelState.READY:
            self.state = ModelState.UNLOADED
        if batcher is not None:
            batcher.close()


class ModelRepository:
    """The versions of one registry. At most ``capacity`` are loaded at once; the least
    recently used idle version is evicted when another must load."""

    def __init__(
        self,
        registry: Registry,
        session_config: SessionConfig,
        metrics: Metrics,
        *,
        max_batch: int,
        max_queued: int,
        capacity: int,
        cache_dir: Path,
        reuse: Mapping[Key, ModelVersion] | None = None,
        digests: bool = False,
    ) -> None:
        self.registry = registry
        self._session_config = session_config
        self._metrics = metrics
        self._max_batch = max_batch
        self._max_queued = max_queued
        self._capacity = capacity
        self._cache_dir = cache_dir
        self._digests = digests
        self._local = LocalSource(registry.base_dir)
        self._s3: S3Source | None = None
        self._lock = threading.RLock()
        self._recent: OrderedDict[Key, None] = OrderedDict()  # loaded versions, least recently used first
        self._versions: dict[Key, ModelVersion] = {}
        reuse = reuse or {}
        for name, model in registry.models.items():
            labels = tuple(model.labels) if model.labels else None
            for version, spec in model.versions.items():
                old = reuse.get((name, version))
                if old is not None and spec.status != "retired" and old.defined_as(model.kind, spec, labels):
                    entry = old
                else:
                    entry = ModelVersion(name=name, version=version, kind=model.kind, spec=spec, labels_override=labels)
                    if spec.status == "retired":
                        entry.state = ModelState.RETIRED
                self._versions[(name, version)] = entry
                if entry.state is ModelState.READY:
                    self._recent[entry.key] = None

    # -- lookup -------------------------------------------------------------------------

    def model(self, name: str) -> ModelSpec:
        try:
            return self.registry.models[name]
        except KeyError:
            raise ModelNotFound(f"unknown model {name!r}; available: {sorted(self.registry.models)}") from None

    def resolve(self, name: str, version: str) -> ModelVersion:
        """The entry for a servable version (loaded or not); errors name what is servable."""
        self.model(name)
        entry = self._versions.get((name, version))
        if entry is None or entry.state is ModelState.RETIRED:
            servable = sorted(v for (n, v), e in self._versions.items() if n == name and e.state is not ModelState.RETIRED)
            reason = "is retired" if entry is not None else "does not exist"
            raise VersionNotFound(f"model {name!r} version {version!r} {reason}; servable versions: {servable}")
        if entry.state is ModelState.FAILED:
            raise ModelNotReady(f"model {name!r} version {version!r} failed to load: {entry.error}")
        return entry

    def versions(self) -> list[ModelVersion]:
        return list(self._versions.values())

    def entries(self) -> Mapping[Key, ModelVersion]:
        return dict(self._versions)

    # -- loading ------------------------------------------------------------------------

    def initial_versions(self) -> list[ModelVersion]:
        """What to load at start: defaults, then rollout targets, then the rest, up to capacity."""
        order: list[Key] = []
        for name, model in self.registry.models.items():
            order += [(name, model.default_version)]
        for name, model in self.registry.models.items():
            order += [(name, v) for v in model.rollout_versions()]
        order += list(self._versions)
        wanted = [self._versions[k] for k in dict.fromkeys(order) if self._versions[k].state is not ModelState.RETIRED]
        return wanted[: self._capacity]

    def load_initial(self) -> list[ModelVersion]:
        """Load the initial versions (blocking); return those that failed."""
        failed = []
        for entry in self.initial_versions():
            if not self.ensure_loaded(entry, evict=False):
                failed.append(entry)
        return failed

    def ensure_loaded(self, entry: ModelVersion, *, evict: bool = True) -> bool:
        """Load the version if it is not in memory (blocking). False when it failed to load."""
        with entry.load_lock:
            if entry.state is ModelState.READY:
                return True
            if entry.state in (ModelState.FAILED, ModelState.RETIRED):
                return False
            entry.state = ModelState.LOADING
            self._load(entry)
        if entry.state is not ModelState.READY:
            return False
        with self._lock:
            self._recent[entry.key] = None
            self._recent.move_to_end(entry.key)
        if evict:
            self._evict_beyond_capacity(keep=entry)
        self._update_gauge()
        return True

    def _load(self, entry: ModelVersion) -> None:
        started = time.perf_counter()
        location = self.registry.resolve_path(entry.spec.path)
        try:
            model_path = self._fetch(location, entry)
            tokenizer_path = None
            if entry.spec.tokenizer:
                tokenizer_location = self.registry.resolve_path(entry.spec.tokenizer)
                tokenizer_path = self._source(tokenizer_location).fetch(tokenizer_location, sha256=None, sidecars=())
            model = load_model(entry.kind, model_path, self._session_config, labels=entry.labels_override, tokenizer_path=tokenizer_path)
            model.warm_up()
            if self._digests:  # replacing any file of the version changes its cache keys
                names = {*_SIDECARS, weights_name(model_path.name)}
                files = [model_path, *sorted(p for p in model_path.parent.iterdir() if p.name in names)]
                entry.digest = content_digest(files + ([tokenizer_path] if tokenizer_path else []))
        except Exception as exc:  # any load failure marks this version FAILED; the others still serve
            entry.state, entry.error = ModelState.FAILED, f"{type(exc).__name__}: {exc}"
            self._metrics.model_loads.labels(entry.name, entry.version, "failed").inc()
            logger.error("model %s %s failed to load from %s: %s", entry.name, entry.version, location, entry.error)
            return
        entry.load_ms = (time.perf_counter() - started) * 1000.0
        entry.model = model
        entry.batcher = ContinuousBatcher(
            model.run,
            max_batch=self._max_batch,
            max_queued=self._max_queued,
            name=f"{entry.name}-{entry.version}",
            observe=self._batch_observer(entry.key),
        )
        entry.state, entry.error = ModelState.READY, None
        self._metrics.model_loads.labels(entry.name, entry.version, "ok").inc()
        self._metrics.model_load_ms.labels(entry.name, entry.version).set(entry.load_ms)
        logger.info("model %s %s ready in %.0f ms on %s", entry.name, entry.version, entry.load_ms, model.providers)

    def _source(self, location: str) -> ModelSource:
        # One source per kind for the repository's life, so S3 reuses one client.
        if location.startswith("s3://"):
            if self._s3 is None:
                self._s3 = S3Source(self._cache_dir)
            return self._s3
        return self._local

    def _fetch(self, location: str, entry: ModelVersion) -> Path:
        sidecars = []
        if entry.kind == "text_classification" and not entry.spec.tokenizer:
            sidecars.append(_SIDECARS[0])
        if entry.labels_override is None:
            sidecars.append(_SIDECARS[1])
        # External weights (model.onnx.data) come along when the model has them.
        weights = weights_name(location)
        return self._source(location).fetch(location, sha256=entry.spec.sha256, sidecars=sidecars, optional_sidecars=[weights])

    def _batch_observer(self, labels: Key) -> Callable[[int, float], None]:
        size_metric = self._metrics.batch_size.labels(*labels)
        latency_metric = self._metrics.batch_latency.labels(*labels)

        def observe(size: int, run_ms: float) -> None:
            size_metric.observe(size)
            latency_metric.observe(run_ms)

        return observe

    # -- leases and eviction -----------------------------------------------------------

    def acquire(self, entry: ModelVersion) -> bool:
        """Take a lease on a READY version so it is not evicted while in use."""
        with self._lock:
            if entry.state is not ModelState.READY:
                return False
            entry.leases += 1
            if entry.key in self._recent:
                self._recent.move_to_end(entry.key)
            return True

    def release(self, entry: ModelVersion) -> None:
        with self._lock:
            entry.leases -= 1
            unload = entry.leases == 0 and entry.retiring
            over_capacity = len(self._recent) > self._capacity
        if unload:
            entry.unload()
            self._update_gauge()
        elif over_capacity:  # a load went over the bound while this version was in use
            self._evict_beyond_capacity(keep=None)
            self._update_gauge()

    def _evict_beyond_capacity(self, keep: ModelVersion | None) -> None:
        victims = []
        with self._lock:
            loaded = [k for k in self._recent if self._versions.get(k) is not None]
            excess = len(loaded) - self._capacity
            for key in loaded:
                if excess <= 0:
                    break
                entry = self._versions[key]
                if entry is keep or entry.leases > 0:
                    continue
                del self._recent[key]
                victims.append(entry)
                excess -= 1
            if excess > 0:
                logger.warning("%d model versions over MODEL_CACHE_SIZE=%d: all others are in use", excess, self._capacity)
        for entry in victims:
            logger.info("evicting model %s %s (least recently used)", entry.name, entry.version)
            self._metrics.model_evictions.labels(entry.name, entry.version).inc()
            entry.unload()

    def retire(self, entries: list[ModelVersion]) -> None:
        """Take versions out of service: unload now when idle, else when the last lease ends."""
        for entry in entries:
            with self._lock:
                self._recent.pop(entry.key, None)
                entry.retiring = True
                idle = entry.leases == 0
            if idle:
                entry.unload()
        self._update_gauge()

    def _update_gauge(self) -> None:
        self._metrics.active_models.set(sum(v.state is ModelState.READY for v in self._versions.values()))

    def close(self) -> None:
        for entry in self._versions.values():
            entry.unload()
