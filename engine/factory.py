"""The one factory that builds the engine for every edge: server, Lambda and emulator."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry

from engine.facade import InferenceEngine
from engine.metrics import Metrics
from engine.registry import Registry, load_registry
from engine.repository import Key, ModelRepository, ModelVersion
from engine.session import SessionConfig
from engine.settings import Settings


def build_engine(settings: Settings, registry: CollectorRegistry | None = None) -> InferenceEngine:
    """Validate the registry and wire the engine; models load on ``load()`` / ``start()``."""
    metrics = Metrics(registry)
    session_config = SessionConfig(intra_op_threads=settings.intra_op_threads, providers=settings.provider_list())

    def make_repository(model_registry: Registry, reuse: Mapping[Key, ModelVersion] | None) -> ModelRepository:
        return ModelRepository(
            model_registry,
            session_config,
            metrics,
            max_batch=settings.batch_size,
            max_queued=settings.max_queued_texts,
            capacity=settings.model_cache_size,
            cache_dir=settings.model_cache_dir,
            reuse=reuse,
        )

    return InferenceEngine(settings, load_registry(settings.model_registry_path), make_repository, metrics)
