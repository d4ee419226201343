"""Loading one model version: fetch its files from their source, open them as its kind, warm up.

``LoadedModel`` is what the lifecycle hands out under a lease and what the predictor chain runs:
the version's identity, its kind's loaded instance, and the files it was made from (so that a
layer such as the result cache can key on their contents).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from engine.kinds import ModelFiles, ModelKind, kind_named
from engine.registry import Registry, VersionSpec
from engine.session import SessionConfig
from engine.sources import LocalSource, ModelSource, S3Source, weights_name

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """One model version in memory. Compared by identity: a reloaded version is another object."""

    name: str
    version: str
    runtime: ModelKind
    files: tuple[Path, ...]
    """Every file the version was loaded from: the model, its weights and sidecars, in a stable order."""
    load_ms: float
    instances: int | None = None
    """The registry's cap on this version's concurrent batches (``instances:``); None: the pool's."""


class ModelLoader:
    """Opens the versions of one registry's models; one source per scheme, so S3 reuses one client."""

    def __init__(self, session_config: SessionConfig, cache_dir: Path) -> None:
        self._session_config = session_config
        self._cache_dir = cache_dir
        self._s3: S3Source | None = None
        self._local_sources: dict[Path, LocalSource] = {}

    @property
    def gpu_requested(self) -> bool:
        """Whether the settings ask for a GPU provider: a version then running on CPU is a fallback."""
        return self._session_config.gpu_requested()

    def _source(self, registry: Registry, location: str) -> ModelSource:
        if location.startswith("s3://"):
            if self._s3 is None:
                self._s3 = S3Source(self._cache_dir)
            return self._s3
        return self._local_sources.setdefault(registry.base_dir, LocalSource(registry.base_dir))

    def load(self, registry: Registry, name: str, version: str) -> LoadedModel:
        """Fetch, open and warm one version (blocking). Raises whatever stops it; the caller records it."""
        started = time.perf_counter()
        model_spec = registry.models[name]
        spec: VersionSpec = model_spec.versions[version]
        kind = kind_named(model_spec.kind)
        labels = tuple(model_spec.labels) if model_spec.labels else None
        location = registry.resolve_path(spec.path)
        sidecars = kind.sidecars(spec, labels)
        # External weights (model.onnx.data) come along when the model has them.
        weights = weights_name(location)
        model_path = self._source(registry, location).fetch(location, sha256=spec.sha256, sidecars=sidecars, optional_sidecars=[weights])
        tokenizer_path = None
        if spec.tokenizer:
            tokenizer_location = registry.resolve_path(spec.tokenizer)
            tokenizer_path = self._source(registry, tokenizer_location).fetch(tokenizer_location, sha256=None, sidecars=())
        files_in = ModelFiles(model=model_path, tokenizer=tokenizer_path, labels=labels)
        runtime = kind(files_in, self._session_config.with_threads(spec.intra_op_threads))
        runtime.warm_up()
        beside = sorted(p for p in (model_path.parent / n for n in (*sidecars, weights)) if p.is_file())
        files = (model_path, *beside, *([tokenizer_path] if tokenizer_path else []))
        load_ms = (time.perf_counter() - started) * 1000.0
        loaded = LoadedModel(name=name, version=version, runtime=runtime, files=files, load_ms=load_ms, instances=spec.instances)
        logger.info("model %s %s ready in %.0f ms on %s", name, version, loaded.load_ms, runtime.providers)
        return loaded
