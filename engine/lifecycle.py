"""The model lifecycle: versions' states, loading, the LRU bound, leases, retirement and reload.

A ``Generation`` is one loaded registry: its versions and each model's rollout strategy. A
request uses one generation from start to end (``ModelManager.current``), so a reload never
changes the version under it. ``Generation.lease`` loads a version when needed and holds it, so
it is neither evicted nor unloaded while a request uses it:

    async with generation.lease(name, version) as model:
        outputs = await predictor.predict(model, inputs)

``ModelManager.reload`` builds the next generation beside the current one (unchanged versions
are carried over, loaded as they are; a version that had failed to load is tried again), loads
and warms what is new, then swaps; versions that left are retired when their last lease ends.

Unpinned traffic whose rollout arm failed to load goes to the model's default version
(``Generation.route``): a sticky routing key must not keep a client on a version that cannot
answer. A request that names the failed version still gets ``ModelNotReady``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from engine.errors import ModelNotFound, ModelNotReady, VersionNotFound
from engine.loader import LoadedModel, ModelLoader
from engine.metrics import Metrics
from engine.predictor import ModelHooks
from engine.registry import ModelSpec, Registry, RegistryError, VersionSpec, load_registry
from engine.rollout import Assignment, Strategy, routing_bucket, strategy_for
from engine.schemas import ReloadReport

logger = logging.getLogger(__name__)

Key = tuple[str, str]
_LEASE_ATTEMPTS = 3


class ModelState(enum.Enum):
    """Lifecycle of one model version."""

    UNLOADED = "unloaded"  # servable, not in memory (not loaded yet, or evicted by the LRU bound)
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"
    RETIRED = "retired"


@dataclass(eq=False)
class _Version:
    """One version as the lifecycle holds it. Only this module reads or writes its fields."""

    name: str
    version: str
    model: ModelSpec
    spec: VersionSpec
    state: ModelState = ModelState.UNLOADED
    error: str | None = None
    loaded: LoadedModel | None = None
    leases: int = 0
    retiring: bool = False
    change_noted: bool = False  # the change of its files on disk was logged
    load_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def key(self) -> Key:
        return (self.name, self.version)

    def defined_as(self, model: ModelSpec, spec: VersionSpec) -> bool:
        """Same kind, file and labels: a reload may keep this version as it is."""
        return (self.model.kind, self.model.labels, self.spec) == (model.kind, model.labels, spec)

    def files_changed(self) -> bool:
        loaded = self.loaded
        return loaded is not None and loaded.files_changed()


@dataclass(frozen=True)
class VersionView:
    """A read-only snapshot of one version, for health and listings."""

    name: str
    version: str
    kind: str
    spec: VersionSpec
    state: ModelState
    error: str | None
    load_ms: float | None
    labels: tuple[str, ...]
    providers: tuple[str, ...]
    failover_to: str | None = None
    """The version that answers this one's unpinned traffic, while this one is failed."""
    files_changed: bool = False
    """A file this version was loaded from changed on disk since; it serves its private copy."""


@dataclass(frozen=True)
class _Services:
    """What every generation of one manager loads with."""

    loader: ModelLoader
    hooks: ModelHooks
    metrics: Metrics
    capacity: int
    on_change: Callable[[], None]
    """Called after a version of any generation was loaded or unloaded (the manager recounts)."""


class Generation:
    """The versions of one registry. At most ``capacity`` are loaded at once; the least recently
    used idle version is evicted when another must load."""

    def __init__(self, registry: Registry, services: _Services, reuse: Mapping[Key, _Version] | None = None) -> None:
        self.registry = registry
        self._services = services
        self.strategies: Mapping[str, Strategy] = {name: strategy_for(spec) for name, spec in registry.models.items()}
        self._lock = threading.RLock()
        self._recent: OrderedDict[Key, None] = OrderedDict()  # loaded versions, least recently used first
        self._versions: dict[Key, _Version] = {}
        self.retried: set[Key] = set()
        """Versions defined as before whose previous load had failed: tried again, not carried over."""
        self.replaced_on_disk: dict[Key, _Version] = {}
        """Versions defined as before whose files changed on disk since they loaded: loaded again
        from the files, the previous entry kept here in case the new files do not load."""
        for name, model in registry.models.items():
            for version, spec in model.versions.items():
                old = (reuse or {}).get((name, version))
                same = old is not None and spec.status != "retired" and old.defined_as(model, spec)
                if old is not None and same and old.state is not ModelState.FAILED and not old.files_changed():
                    entry = old
                else:
                    if old is not None and same:
                        if old.state is ModelState.FAILED:
                            self.retried.add((name, version))
                        else:
                            self.replaced_on_disk[(name, version)] = old
                    entry = _Version(name=name, version=version, model=model, spec=spec)
                    if spec.status == "retired":
                        entry.state = ModelState.RETIRED
                self._versions[entry.key] = entry
                if entry.state is ModelState.READY:
                    self._recent[entry.key] = None

    # -- routing and leases ------------------------------------------------------------

    @property
    def default_model(self) -> str:
        return next(iter(self.registry.models))

    def spec(self, name: str) -> ModelSpec:
        try:
            return self.registry.models[name]
        except KeyError:
            raise ModelNotFound(f"unknown model {name!r}; available: {sorted(self.registry.models)}") from None

    def assign(self, name: str, pinned: str | None, routing_key: str) -> Assignment:
        """The version that answers: the caller's pinned one (rollout bypassed), else the strategy's."""
        if pinned is not None:
            return Assignment(version=pinned, strategy="request", arm=pinned)
        return self.strategies[name].assign(routing_bucket(name, routing_key))

    async def route(self, name: str, pinned: str | None, routing_key: str) -> Assignment:
        """``assign``, then fail over: an unpinned arm that cannot load goes to the default version.

        The arm is loaded first when it is not in memory, so the request that finds it broken is
        failed over too. The assignment then names the default as version and arm, and the arm
        the strategy chose as ``failover_from``."""
        assignment = self.assign(name, pinned, routing_key)
        entry = self._versions.get((name, assignment.version))
        if pinned is not None or entry is None or assignment.version == self.registry.models[name].default_version:
            return assignment
        if entry.state in (ModelState.UNLOADED, ModelState.LOADING) and not entry.retiring:
            await asyncio.to_thread(self.ensure_loaded, entry)  # waits for a load under way
        default = self.failover_to(entry)
        if default is None:
            return assignment
        return replace(assignment, version=default, arm=default, failover_from=assignment.version)

    def failover_to(self, entry: _Version) -> str | None:
        """The default version when ``entry`` is a failed rollout arm (canary target, A/B arm)."""
        model = self.registry.models[entry.name]
        if entry.state is not ModelState.FAILED or entry.version == model.default_version:
            return None
        if model.rollout_strategy.type not in ("canary", "ab_test") or entry.version not in model.rollout_versions():
            return None
        return model.default_version

    @asynccontextmanager
    async def lease(self, name: str, version: str) -> AsyncIterator[LoadedModel]:
        """Hold a loaded version for the block (loading it first when needed)."""
        entry = self._resolve(name, version)
        loaded = await self._acquire(entry)
        try:
            yield loaded
        finally:
            self._release(entry)

    def _resolve(self, name: str, version: str) -> _Version:
        self.spec(name)
        entry = self._versions.get((name, version))
        if entry is None or entry.state is ModelState.RETIRED:
            servable = sorted(v for (n, v), e in self._versions.items() if n == name and e.state is not ModelState.RETIRED)
            reason = "is retired" if entry is not None else "does not exist"
            raise VersionNotFound(f"model {name!r} version {version!r} {reason}; servable versions: {servable}")
        if entry.state is ModelState.FAILED:
            raise ModelNotReady(f"model {name!r} version {version!r} failed to load: {entry.error}")
        return entry

    async def _acquire(self, entry: _Version) -> LoadedModel:
        for _ in range(_LEASE_ATTEMPTS):
            if entry.state is not ModelState.READY and not entry.retiring:
                if not await asyncio.to_thread(self.ensure_loaded, entry):
                    raise ModelNotReady(f"model {entry.name!r} version {entry.version!r} failed to load: {entry.error}")
            with self._lock:
                if entry.state is ModelState.READY and entry.loaded is not None:
                    entry.leases += 1
                    if entry.key in self._recent:
                        self._recent.move_to_end(entry.key)
                    return entry.loaded
            if entry.retiring:
                break
        raise ModelNotReady(f"model {entry.name!r} version {entry.version!r} is not available right now; retry")

    def _release(self, entry: _Version) -> None:
        with self._lock:
            entry.leases -= 1
            unload = entry.leases == 0 and entry.retiring
            over_capacity = len(self._recent) > self._services.capacity
        if unload:
            self.unload(entry)
            self._update_gauge()
        elif over_capacity:  # a load went over the bound while this version was in use
            self._evict_beyond_capacity(keep=None)
            self._update_gauge()

    # -- loading and eviction ----------------------------------------------------------

    def initial_versions(self) -> list[_Version]:
        """What to load at start: defaults, then rollout targets, then the rest, up to capacity."""
        order: list[Key] = [(name, model.default_version) for name, model in self.registry.models.items()]
        for name, model in self.registry.models.items():
            order += [(name, v) for v in model.rollout_versions()]
        order += list(self._versions)
        wanted = [self._versions[k] for k in dict.fromkeys(order) if self._versions[k].state is not ModelState.RETIRED]
        return wanted[: self._services.capacity]

    def ensure_loaded(self, entry: _Version, *, evict: bool = True) -> bool:
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

    def _load(self, entry: _Version) -> None:
        metrics = self._services.metrics
        try:
            loaded = self._services.loader.load(self.registry, entry.name, entry.version)
            self._services.hooks.attach(loaded)
        except Exception as exc:  # any load failure marks this version FAILED; the others still serve
            entry.state, entry.error = ModelState.FAILED, f"{type(exc).__name__}: {exc}"
            metrics.model_loads.labels(entry.name, entry.version, "failed").inc()
            logger.error("model %s %s failed to load from %s: %s", entry.name, entry.version, entry.spec.path, entry.error)
            return
        entry.loaded, entry.state, entry.error, entry.change_noted = loaded, ModelState.READY, None, False
        metrics.model_loads.labels(entry.name, entry.version, "ok").inc()
        metrics.model_load_ms.labels(entry.name, entry.version).set(loaded.load_ms)

    def unload(self, entry: _Version) -> None:
        """Drop the version from memory; work already queued for it finishes first."""
        loaded, entry.loaded = entry.loaded, None
        if entry.state is ModelState.READY:
            entry.state = ModelState.UNLOADED
        if loaded is not None:
            self._services.hooks.detach(loaded)

    def _evict_beyond_capacity(self, keep: _Version | None) -> None:
        victims = []
        with self._lock:
            excess = len(self._recent) - self._services.capacity
            for key in list(self._recent):
                if excess <= 0:
                    break
                entry = self._versions[key]
                if entry is keep or entry.leases > 0:
                    continue
                del self._recent[key]
                victims.append(entry)
                excess -= 1
            if excess > 0:
                logger.warning("%d model versions over MODEL_CACHE_SIZE=%d: all others are in use", excess, self._services.capacity)
        for entry in victims:
            logger.info("evicting model %s %s (least recently used)", entry.name, entry.version)
            self._services.metrics.model_evictions.labels(entry.name, entry.version).inc()
            self.unload(entry)

    def retire(self, entries: list[_Version]) -> None:
        """Take versions out of service: unload now when idle, else when the last lease ends."""
        for entry in entries:
            with self._lock:
                self._recent.pop(entry.key, None)
                entry.retiring = True
                idle = entry.leases == 0
            if idle:
                self.unload(entry)
        self._update_gauge()

    def _update_gauge(self) -> None:
        self._services.on_change()

    def keep(self, previous: _Version) -> None:
        """Serve ``previous`` again in place of its fresh entry (whose new files did not load)."""
        with self._lock:
            self._versions[previous.key] = previous
            if previous.state is ModelState.READY:
                self._recent[previous.key] = None

    def ready_count(self) -> int:
        """Versions of this generation that are loaded and ready (retiring ones are not served)."""
        with self._lock:
            return sum(v.state is ModelState.READY and not v.retiring for v in self._versions.values())

    def entries(self) -> dict[Key, _Version]:
        return dict(self._versions)

    def views(self) -> list[VersionView]:
        views = []
        for v in self._versions.values():
            loaded = v.loaded
            changed = loaded is not None and loaded.files_changed()
            if changed and not v.change_noted:
                v.change_noted = True
                logger.warning(
                    "model %s %s: its files changed on disk since it loaded (%s); it keeps serving the copy it loaded",
                    v.name,
                    v.version,
                    v.spec.path,
                )
            labels = loaded.runtime.labels if loaded is not None else tuple(v.model.labels or ())
            views.append(
                VersionView(
                    name=v.name,
                    version=v.version,
                    kind=v.model.kind,
                    spec=v.spec,
                    state=v.state,
                    error=v.error,
                    load_ms=loaded.load_ms if loaded is not None else None,
                    labels=labels,
                    providers=tuple(loaded.runtime.providers) if loaded is not None else (),
                    failover_to=self.failover_to(v),
                    files_changed=changed,
                )
            )
        return views

    def close(self) -> None:
        for entry in self._versions.values():
            self.unload(entry)


class ModelManager:
    """Owns the current generation: its initial load, reloads with the generation swap, and shutdown."""

    def __init__(self, registry: Registry, loader: ModelLoader, hooks: ModelHooks, metrics: Metrics, *, capacity: int) -> None:
        self._services = _Services(loader=loader, hooks=hooks, metrics=metrics, capacity=capacity, on_change=self._count_ready)
        self._current = Generation(registry, self._services)
        self._reload_lock = threading.Lock()
        self.started = False
        self.last_reload: ReloadReport | None = None
        self.generation = 1
        """Registries loaded: 1 at start, +1 per successful reload."""
        self.reloads = 0
        """Reloads finished, successful or not."""

    @property
    def current(self) -> Generation:
        """The generation a new request uses from start to end."""
        return self._current

    def _count_ready(self) -> None:
        # Whichever generation loaded or unloaded a version, the gauge counts the current one's.
        self._services.metrics.active_models.set(self._current.ready_count())

    @property
    def gpu_requested(self) -> bool:
        return self._services.loader.gpu_requested

    def load(self) -> None:
        """Load and warm the initial versions (blocking); once per cold start."""
        if not self.started:
            for entry in self._current.initial_versions():
                self._current.ensure_loaded(entry, evict=False)
            self.started = True

    def status(self, views: list[VersionView] | None = None) -> str:
        """``loading``, ``unavailable`` (a default version failed), ``degraded`` (another failed) or ``active``;
        from ``views`` of the current generation when the caller already has them."""
        views = views if views is not None else self._current.views()
        failed = {(v.name, v.version) for v in views if v.state is ModelState.FAILED}
        defaults = {(name, model.default_version) for name, model in self._current.registry.models.items()}
        if not self.started:
            return "loading"
        if defaults & failed:
            return "unavailable"
        return "degraded" if failed else "active"

    def reload(self, path: Path) -> ReloadReport:
        """Re-read the registry; load and warm new or changed versions, then switch traffic.

        A bad file, or a new or changed version that fails to load, leaves the current generation
        serving; the report says why. Unchanged versions are kept as they are, except that a
        version that had failed to load is tried again (failing again, it stays failed and the
        reload goes through), and one whose files changed on disk since it loaded is loaded again
        (failing, it keeps serving what it had loaded)."""
        with self._reload_lock:
            started = time.perf_counter()
            report = self._reload(path)
            report.duration_ms = round((time.perf_counter() - started) * 1000.0, 1)
            self.last_reload = report
            self.reloads += 1
        self._services.metrics.registry_reloads.labels("ok" if report.ok else "failed").inc()
        (logger.info if report.ok else logger.error)("registry reload from %s: %s", path, report.model_dump(exclude_none=True))
        return report

    def _reload(self, path: Path) -> ReloadReport:
        try:
            registry = load_registry(path)
        except RegistryError as exc:
            return ReloadReport(ok=False, registry=str(path), error=str(exc))
        old = self._current
        old_entries = old.entries()
        new = Generation(registry, self._services, reuse=old_entries)
        fresh = [e for e in new.initial_versions() if e.state is not ModelState.READY]
        fresh += [e for k, e in new.entries().items() if k in new.replaced_on_disk and e not in fresh]
        failed = [e for e in fresh if not new.ensure_loaded(e, evict=False)]
        # A version that failed before and fails again, its definition unchanged, stays failed in the
        # new registry (its traffic fails over); a version whose files changed on disk and no longer
        # load keeps serving the copy it loaded. Only new or changed versions that fail refuse it.
        kept = [new.replaced_on_disk[e.key] for e in failed if e.key in new.replaced_on_disk]
        for previous in kept:
            new.keep(previous)
        refused = [e for e in failed if e.key not in new.retried and e.key not in new.replaced_on_disk]
        if refused:
            for entry in fresh:
                new.unload(entry)
            errors = "; ".join(f"{e.name}:{e.version}: {e.error}" for e in refused)
            return ReloadReport(ok=False, registry=str(path), error=f"new versions failed to load, kept the previous registry: {errors}")
        new_entries = new.entries()
        self._current = new
        self.generation += 1
        old.retire([e for k, e in old_entries.items() if new_entries.get(k) is not e])
        self._count_ready()

        def names(keys: Iterable[Key]) -> list[str]:
            return sorted(f"{name}:{version}" for name, version in keys)

        both = new_entries.keys() & old_entries.keys()
        same = {k for k in both if new_entries[k] is old_entries[k] or k in new.retried}
        return ReloadReport(
            ok=True,
            registry=str(path),
            registry_digest=registry.digest,
            added=names(new_entries.keys() - old_entries.keys()),
            removed=names(old_entries.keys() - new_entries.keys()),
            changed=names(both - same),
            unchanged=names(same),
            retried=names(new.retried),
            still_failed=names(e.key for e in failed if e.key in new.retried),
            kept_previous=names(e.key for e in kept),
        )

    def close(self) -> None:
        self._current.close()
