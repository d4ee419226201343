"""The one factory that builds the engine for every edge: server, Lambda and emulator."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from engine.facade import InferenceEngine
from engine.metrics import Metrics
from engine.registry import load_registry
from engine.repository import ModelRepository
from engine.session import SessionConfig
from engine.settings import Settings


def build_engine(settings: Settings, registry: CollectorRegistry | None = None) -> InferenceEngine:
    """Validate the registry and wire the engine; models load on ``load()`` / ``start()``."""
    metrics = Metrics(registry)
    session_config = SessionConfig(intra_op_threads=settings.intra_op_threads, providers=settings.provider_list())
    repository = ModelRepository(
        load_registry(settings.model_registry_path),
        session_config,
        metrics,
        max_batch=settings.batch_size,
        max_queued=settings.max_queued_texts,
    )
    return InferenceEngine(settings, repository, metrics)
