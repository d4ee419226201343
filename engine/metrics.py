"""Prometheus metrics, registered on an injected ``CollectorRegistry``.

Process figures (``process_resident_memory_bytes``, ``process_cpu_seconds_total``, ...) come from
prometheus_client's ``ProcessCollector``. With several worker processes (``PROMETHEUS_MULTIPROC_DIR``)
the files every worker writes hold no process figures, so the worker answering /metrics reads
``/proc/<pid>`` of every live worker and reports each with a ``pid`` label: sum over ``pid`` for
the server's total. A worker is live while its ``server_workers`` series is (``liveall``: the
supervisor marks a dead worker's files dead).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest, multiprocess
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

LATENCY_BUCKETS_MS = (0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """The service's metrics. Labels stay bounded: model, version, outcome; never a text or id."""

    def __init__(self, registry: CollectorRegistry | None = None, multiprocess_dir: Path | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        # Several worker processes (PROMETHEUS_MULTIPROC_DIR, set by `mlinfer serve --workers N`):
        # each writes its values to files there, and /metrics sums the files of every worker.
        self._multiprocess_dir = multiprocess_dir
        self.requests = Counter(
            "inference_requests", "Prediction requests by outcome.", ["model", "model_version", "outcome"], registry=self.registry
        )
        self.inputs = Counter("inference_inputs", "Inputs predicted (texts, rows).", ["model", "model_version"], registry=self.registry)
        self.latency = Histogram(
            "inference_latency_ms",
            "End-to-end prediction latency per request, in milliseconds.",
            ["model", "model_version"],
            buckets=LATENCY_BUCKETS_MS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "inference_batch_size",
            "Inputs per runtime batch.",
            ["model", "model_version"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.batch_latency = Histogram(
            "inference_batch_latency_ms",
            "Runtime time per batch (tokenise + run), in milliseconds.",
            ["model", "model_version"],
            buckets=LATENCY_BUCKETS_MS,
            registry=self.registry,
        )
        self.batch_phase = Histogram(
            "inference_batch_phase_ms",
            "Time per runtime batch in each phase (tokenize, run), in milliseconds: where a batch's time goes.",
            ["model", "model_version", "phase"],
            buckets=LATENCY_BUCKETS_MS,
            registry=self.registry,
        )
        self.queued_inputs = Gauge(
            "inference_queued_inputs",
            "Inputs waiting for a model instance, per version.",
            ["model", "model_version"],
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.shed_inputs = Counter(
            "inference_shed_inputs",
            "Inputs refused or dropped before they ran, by reason (queue_full, queue_wait, queue_timeout, deadline, cancelled).",
            ["model", "model_version", "reason"],
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "inference_queue_wait_ms",
            "Time a job (a request's part of a batch) waited in the queue before it ran, in milliseconds.",
            ["model", "model_version"],
            buckets=LATENCY_BUCKETS_MS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "inference_in_flight_requests",
            "Prediction requests being served now.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.active_models = Gauge("active_models", "Model versions loaded and ready.", registry=self.registry, multiprocess_mode="max")
        self.model_load_ms = Gauge(
            "model_load_ms",
            "Time to load and warm a model version, in milliseconds.",
            ["model", "model_version"],
            registry=self.registry,
            multiprocess_mode="max",
        )
        self.errors = Counter("inference_errors", "Failed prediction requests by error code.", ["code"], registry=self.registry)
        self.http_errors = Counter(
            "http_errors", "Error replies of the HTTP edge (every route), by status and code.", ["status", "code"], registry=self.registry
        )
        self.model_loads = Counter(
            "model_loads", "Model version loads by outcome.", ["model", "model_version", "outcome"], registry=self.registry
        )
        self.model_evictions = Counter(
            "model_evictions", "Versions unloaded by the MODEL_CACHE_SIZE bound.", ["model", "model_version"], registry=self.registry
        )
        self.rollout_assignments = Counter(
            "rollout_assignments", "Requests routed by rollout, by strategy and arm.", ["model", "strategy", "arm"], registry=self.registry
        )
        self.rollout_failovers = Counter(
            "rollout_failovers",
            "Unpinned requests answered by the default version because their rollout arm failed to load.",
            ["model", "from_version", "to_version"],
            registry=self.registry,
        )
        self.shadow_predictions = Counter(
            "shadow_predictions",
            "Inputs run by a shadow version, by whether its top label agreed with the primary's.",
            ["model", "primary_version", "shadow_version", "agreement"],
            registry=self.registry,
        )
        self.shadow_failures = Counter(
            "shadow_failures", "Shadow runs that failed or ran out of time.", ["model", "shadow_version", "reason"], registry=self.registry
        )
        # Hits and misses carry the same labels, so `cache_hits_total / (cache_hits_total + cache_misses_total)`
        # matches series one to one; the tier that answered is a counter of its own.
        self.cache_hits = Counter(
            "cache_hits", "Inputs answered from the result cache.", ["model", "model_version"], registry=self.registry
        )
        self.cache_misses = Counter("cache_misses", "Inputs not in the result cache.", ["model", "model_version"], registry=self.registry)
        self.cache_tier_hits = Counter(
            "cache_tier_hits",
            "Inputs answered from the result cache, by the tier that answered (memory, redis).",
            ["model", "model_version", "tier"],
            registry=self.registry,
        )
        self.cache_coalesced = Counter(
            "cache_coalesced",
            "Misses served by an identical in-flight computation.",
            ["model", "model_version"],
            registry=self.registry,
        )
        self.cache_errors = Counter("cache_errors", "Failed cache calls (counted as misses).", ["operation"], registry=self.registry)
        self.cache_state = Gauge(
            "cache_state", "Result cache state: 0 ok, 1 degraded, 2 open.", registry=self.registry, multiprocess_mode="max"
        )
        self.registry_reloads = Counter("registry_reloads", "Registry reloads by outcome.", ["outcome"], registry=self.registry)
        self.workers = Gauge(
            "server_workers",
            "Server processes serving now: 1 per process (with --workers N, one series per worker, labelled with its pid).",
            registry=self.registry,
            multiprocess_mode="liveall",
        )
        self.workers.set(1)
        if multiprocess_dir is None:
            ProcessCollector(registry=self.registry)

    def count_cache_hit(self, model: str, version: str, tier: str) -> None:
        self.cache_hits.labels(model, version).inc()
        self.cache_tier_hits.labels(model, version, tier).inc()
        self.cache_misses.labels(model, version)  # both sides of the hit rate exist from the first lookup

    def count_cache_miss(self, model: str, version: str) -> None:
        self.cache_misses.labels(model, version).inc()
        self.cache_hits.labels(model, version)

    def render(self) -> bytes:
        if self._multiprocess_dir is None:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        merged.register(_Workers(self._multiprocess_dir))
        return generate_latest(merged)


class _Workers(Collector):
    """Every worker's figures summed from the shared files, and each live worker's process figures by pid."""

    def __init__(self, directory: Path) -> None:
        self._files = multiprocess.MultiProcessCollector(None, path=str(directory))  # type: ignore[no-untyped-call]

    def collect(self) -> Iterable[Metric]:
        families: list[Metric] = list(self._files.collect())  # type: ignore[no-untyped-call]
        pids = sorted({s.labels["pid"] for f in families if f.name == "server_workers" for s in f.samples if "pid" in s.labels})
        return [*families, *_process_families(pids)]


def _process_of(pid: str) -> ProcessCollector:
    return ProcessCollector(pid=lambda: pid, registry=None)


def _process_families(pids: Iterable[str]) -> Iterator[Metric]:
    """``ProcessCollector``'s families for each pid (a worker gone since its files were read is left out)."""
    merged: dict[str, Metric] = {}
    for pid in pids:
        for family in _process_of(pid).collect():
            target = merged.setdefault(family.name, Metric(family.name, family.documentation, family.type, family.unit))
            target.samples.extend(Sample(s.name, {**s.labels, "pid": pid}, s.value, s.timestamp, s.exemplar) for s in family.samples)
    yield from merged.values()
