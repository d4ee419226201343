"""The one factory that builds the engine for every edge: server, Lambda and emulator."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from engine.batcher import ComputePool
from engine.cache import CacheConfig, build_cache
from engine.cache.predictor import CachingPredictor
from engine.cpus import ComputeBudget, compute_budget
from engine.facade import InferenceEngine
from engine.lifecycle import ModelManager
from engine.loader import ModelLoader
from engine.metrics import Metrics
from engine.predictor import BatchedPredictor, Predictor
from engine.registry import load_registry
from engine.session import SessionConfig
from engine.settings import Settings


def cache_config(settings: Settings) -> CacheConfig:
    return CacheConfig(
        backend=settings.cache_backend,
        host=settings.redis_host,
        port=settings.redis_port,
        db=settings.redis_db,
        password=settings.redis_password.get_secret_value() if settings.redis_password else None,
        username=settings.redis_username,
        url=settings.redis_url.get_secret_value() if settings.redis_url else None,
        tls=settings.redis_tls,
        cluster=settings.redis_cluster,
        timeout_ms=settings.redis_timeout_ms,
        memory_max_entries=settings.cache_max_entries,
    )


def build_predictor(settings: Settings, metrics: Metrics, budget: ComputeBudget) -> Predictor:
    """Batching on one compute pool, with the result cache in front of it unless CACHE_BACKEND=none."""
    pool = ComputePool(budget.instances, max_delay_ms=settings.max_batch_delay_ms)
    predictor: Predictor = BatchedPredictor(
        metrics,
        pool,
        max_batch=settings.batch_size,
        max_queued=settings.max_queued_inputs,
        timeout_s=settings.request_timeout_ms / 1000.0,
        max_queue_ms=settings.max_queue_ms,
        max_batch_tokens=settings.max_batch_tokens,
    )
    if settings.cache_backend == "none":
        return predictor
    config = cache_config(settings)
    return CachingPredictor(
        predictor,
        lambda: build_cache(config, on_error=lambda operation: metrics.cache_errors.labels(operation).inc()),
        metrics,
        ttl_s=settings.redis_cache_ttl,
        backend=settings.cache_backend,
    )


def build_engine(settings: Settings, registry: CollectorRegistry | None = None) -> InferenceEngine:
    """Validate the registry and wire the engine; models load on ``load()`` / ``start()``."""
    metrics = Metrics(registry, multiprocess_dir=settings.prometheus_multiproc_dir)
    budget = compute_budget(settings.instances, settings.intra_op_threads, cpus=settings.worker_cpus or None)
    predictor = build_predictor(settings, metrics, budget)
    session_config = SessionConfig(
        intra_op_threads=budget.intra_op_threads,
        providers=settings.provider_list(),
        # Idle runtime threads that spin take the CPU from the other instances (or worker processes).
        allow_spinning=budget.instances == 1 and settings.worker_cpus == 0,
        max_batch_tokens=settings.max_batch_tokens,
    )
    loader = ModelLoader(session_config, settings.model_cache_dir)
    models = ModelManager(load_registry(settings.model_registry_path), loader, predictor, metrics, capacity=settings.model_cache_size)
    return InferenceEngine(settings, models, predictor, metrics)
