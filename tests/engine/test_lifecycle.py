"""The model lifecycle: version states, failed and retired versions, resolution, the LRU bound and leases."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from engine.errors import ModelNotReady, VersionNotFound
from engine.factory import build_engine
from engine.lifecycle import ModelState
from engine.registry import RegistryError
from engine.schemas import PredictRequest
from tests.conftest import V1_DIR, make_settings
from tests.registries import engine_for, sentiment, write_registry


def _registry(tmp_path: Path, versions: dict[str, dict[str, str]], strategy: str = "pinned") -> Path:
    return write_registry(tmp_path, {"sentiment_analysis": sentiment(versions, rollout={"type": strategy})})


def test_a_version_that_fails_to_load_is_failed_and_the_rest_serve(tmp_path: Path, models_dir: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.onnx").write_bytes(b"this is not an onnx file")
    for name in ("tokenizer.json", "labels.json"):
        (broken / name).write_bytes((V1_DIR / name).read_bytes())
    registry = _registry(
        tmp_path,
        {"v1": {"path": str(V1_DIR / "model.onnx"), "status": "active"}, "v3": {"path": "broken/model.onnx", "status": "candidate"}},
    )
    with engine_for(registry) as engine:
        health = engine.health()
        assert (health.status, health.ready, health.active_models) == ("degraded", True, ["sentiment_analysis:v1"])
        failed = next(m for m in health.models if m.version == "v3")
        assert failed.state == ModelState.FAILED.value and failed.error
        with pytest.raises(ModelNotReady, match="failed"):
            asyncio.run(engine.predict(PredictRequest(texts=["hi"], model_version="v3")))
        assert asyncio.run(engine.predict(PredictRequest(texts=["I love this product"]))).results[0].prediction == "positive"


def test_a_failed_default_version_makes_the_service_unready(tmp_path: Path, models_dir: Path) -> None:
    registry = _registry(
        tmp_path,
        {"v1": {"path": "missing/model.onnx", "status": "active"}, "v2": {"path": str(V1_DIR / "model.onnx"), "status": "candidate"}},
    )
    with engine_for(registry) as engine:
        health = engine.health()
        assert (health.status, health.ready) == ("unavailable", False)
        assert "not found" in str(next(m for m in health.models if m.version == "v1").error)


def test_retired_versions_are_never_loaded_or_served(tmp_path: Path, models_dir: Path) -> None:
    registry = _registry(
        tmp_path,
        {"v1": {"path": str(V1_DIR / "model.onnx"), "status": "active"}, "v0": {"path": "gone/model.onnx", "status": "retired"}},
    )
    with engine_for(registry) as engine:
        assert engine.health().status == "active"
        assert {m.version: m.state for m in engine.health().models}["v0"] == "retired"
        with pytest.raises(VersionNotFound, match="is retired"):
            asyncio.run(engine.predict(PredictRequest(texts=["hi"], model_version="v0")))


def test_an_invalid_rollout_is_refused_at_start(tmp_path: Path) -> None:
    registry = _registry(tmp_path, {"v1": {"path": str(V1_DIR / "model.onnx")}}, strategy="canary")  # canary without a target
    with pytest.raises(RegistryError, match="rollout_strategy.*target_version"):
        build_engine(make_settings(model_registry_path=registry))


def test_lru_bound_evicts_the_least_recently_used_and_reloads_on_demand(tmp_path: Path, models_dir: Path) -> None:
    registry = write_registry(tmp_path, {"sentiment_analysis": sentiment()})  # v1 active, v2 candidate
    with engine_for(registry, model_cache_size=1) as engine:
        states = lambda: {m.version: m.state for m in engine.health().models}  # noqa: E731
        assert states() == {"v1": "ready", "v2": "unloaded"}
        assert engine.health().status == "active"
        v2 = asyncio.run(engine.predict(PredictRequest(texts=["I love this product"], model_version="v2")))
        assert v2.results[0].prediction == "positive"
        assert states() == {"v1": "unloaded", "v2": "ready"}
        assert asyncio.run(engine.predict(PredictRequest(texts=["I love this product"]))).model_version == "v1"
        assert states() == {"v1": "ready", "v2": "unloaded"}
        evictions = engine.metrics.registry.get_sample_value(
            "model_evictions_total", {"model": "sentiment_analysis", "model_version": "v1"}
        )
        assert evictions == 1


def test_a_leased_version_is_not_evicted(tmp_path: Path, models_dir: Path) -> None:
    registry = write_registry(tmp_path, {"sentiment_analysis": sentiment()})
    with engine_for(registry, model_cache_size=1) as engine:
        generation = engine.models.current
        states = lambda: {v.version: v.state for v in generation.views()}  # noqa: E731

        async def scenario() -> None:
            async with generation.lease("sentiment_analysis", "v1"):  # an in-flight request holds v1
                async with generation.lease("sentiment_analysis", "v2") as v2:
                    assert states() == {"v1": ModelState.READY, "v2": ModelState.READY}  # over the bound rather than break v1
                    assert v2.version == "v2"
                # Back within the bound: the idle version goes, the leased one stays.
                assert states() == {"v1": ModelState.READY, "v2": ModelState.UNLOADED}

        asyncio.run(scenario())
        assert asyncio.run(engine.predict(PredictRequest(texts=["fine"], model_version="v2"))).model_version == "v2"
        assert states() == {"v1": ModelState.UNLOADED, "v2": ModelState.READY}


def test_a_lease_hands_out_the_same_loaded_model_until_it_is_unloaded(tmp_path: Path, models_dir: Path) -> None:
    registry = write_registry(tmp_path, {"sentiment_analysis": sentiment()})
    with engine_for(registry) as engine:
        generation = engine.models.current

        async def lease(version: str) -> object:
            async with generation.lease("sentiment_analysis", version) as model:
                return model

        first, again = asyncio.run(lease("v1")), asyncio.run(lease("v1"))
        assert first is again and asyncio.run(lease("v2")) is not first
        with pytest.raises(VersionNotFound, match="does not exist"):
            asyncio.run(lease("v9"))
