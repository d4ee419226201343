"""What /health and the model listing say, built from the lifecycle's read-only views."""

from __future__ import annotations

import os

from engine.lifecycle import Generation, ModelManager, ModelState
from engine.schemas import CacheHealth, HealthReport, ModelHealth, ModelInfo, ModelsReport
from engine.session import runs_on_gpu


def health_report(models: ModelManager, cache: CacheHealth, *, require_gpu: bool = False) -> HealthReport:
    views = models.current.views()
    ready = [v for v in views if v.state is ModelState.READY]
    status = models.status(views)
    fallback = [f"{v.name}:{v.version}" for v in ready if models.gpu_requested and not runs_on_gpu(v.providers)]
    return HealthReport(
        status=status,
        ready=status in ("active", "degraded") and not (require_gpu and (fallback or not models.gpu_requested)),
        gpu_fallback=fallback,
        active_models=[f"{v.name}:{v.version}" for v in ready],
        providers=sorted({p for v in ready for p in v.providers}),
        models=[
            ModelHealth(
                name=v.name,
                version=v.version,
                state=v.state.value,
                load_ms=round(v.load_ms, 1) if v.load_ms is not None else None,
                error=v.error,
                providers=list(v.providers),
                failover_to=v.failover_to,
                files_changed=v.files_changed,
            )
            for v in views
        ],
        last_reload=models.last_reload,
        cache=cache,
        registry_digest=models.current.registry.digest,
        generation=models.generation,
        pid=os.getpid(),
    )


def models_report(generation: Generation) -> ModelsReport:
    registry = generation.registry
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
        for v in generation.views()
    ]
    return ModelsReport(total=len(models), models=models)
