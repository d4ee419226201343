"""Rollout through the engine: canary routing, pinned bypass, shadow runs and their failures."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from engine.errors import ModelNotReady
from engine.facade import InferenceEngine
from engine.registry import load_registry
from engine.rollout import Canary, routing_bucket, strategy_for
from engine.schemas import PredictRequest, PredictResponse
from tests.conftest import V1_DIR, V2_DIR
from tests.registries import V1_MODEL, engine_for, sentiment, write_registry

CANARY = {"type": "canary", "canary_percentage": 10, "target_version": "v2"}


def _sample(engine: InferenceEngine, name: str, **labels: str) -> float:
    return engine.metrics.registry.get_sample_value(name, labels) or 0.0


def test_canary_routes_each_request_id_as_the_strategy_says(tmp_path: Path, models_dir: Path) -> None:
    registry = write_registry(tmp_path, {"sentiment_analysis": sentiment(rollout=CANARY)})
    canary = Canary(stable="v1", canary="v2", percentage=10)
    with engine_for(registry) as engine:

        async def run() -> list[tuple[str, str]]:
            ids = [f"req-{i}" for i in range(400)]
            responses = await asyncio.gather(*(engine.predict(PredictRequest(id=i, texts=["fine"])) for i in ids))
            return [(r.request_id, r.model_version) for r in responses]

        answered = asyncio.run(run())
        for request_id, version in answered:
            assert version == canary.assign(routing_bucket("sentiment_analysis", request_id)).version
        assert {v for _, v in answered} == {"v1", "v2"}
        v2 = _sample(engine, "rollout_assignments_total", model="sentiment_analysis", strategy="canary", arm="v2")
        assert v2 == sum(v == "v2" for _, v in answered)


def test_routing_key_wins_over_the_request_id_and_is_sticky(tmp_path: Path, models_dir: Path) -> None:
    registry = write_registry(tmp_path, {"sentiment_analysis": sentiment(rollout=CANARY)})
    canary = Canary(stable="v1", canary="v2", percentage=10)
    key = next(k for k in (f"user-{i}" for i in range(1000)) if canary.assign(routing_bucket("sentiment_analysis", k)).version == "v2")
    with engine_for(registry) as engine:
        versions = {
            asyncio.run(engine.predict(PredictRequest(id=f"id-{i}", texts=["ok"]), routing_key=key)).model_version for i in range(20)
        }
        assert versions == {"v2"}


def test_model_version_bypasses_rollout(tmp_path: Path, models_dir: Path) -> None:
    registry = write_registry(tmp_path, {"sentiment_analysis": sentiment(rollout={**CANARY, "canary_percentage": 100})})
    with engine_for(registry) as engine:
        response = asyncio.run(engine.predict(PredictRequest(texts=["ok"], model_version="v1")))
        assert (response.model_version, response.rollout.strategy, response.rollout.arm) == ("v1", "request", "v1")
        assert asyncio.run(engine.predict(PredictRequest(texts=["ok"]))).model_version == "v2"


def test_ab_test_arm_is_reported(tmp_path: Path, models_dir: Path) -> None:
    registry = write_registry(tmp_path, {"sentiment_analysis": sentiment(rollout={"type": "ab_test", "weights": {"v1": 1, "v2": 1}})})
    with engine_for(registry) as engine:
        arms = {asyncio.run(engine.predict(PredictRequest(id=f"u{i}", texts=["ok"]))).rollout.arm for i in range(40)}
        assert arms == {"v1", "v2"}
        total = sum(_sample(engine, "rollout_assignments_total", model="sentiment_analysis", strategy="ab_test", arm=a) for a in arms)
        assert total == 40


TEXTS = ["I love this product", "This is terrible", "A young girl travels to a distant planet.", "It was fine, I guess."]


@pytest.mark.parametrize("mode", ["background", "inline"])
def test_shadow_agreement_is_recorded(tmp_path: Path, models_dir: Path, mode: str) -> None:
    registry = write_registry(tmp_path, {"sentiment_analysis": sentiment(rollout={"type": "shadow", "target_version": "v2"})})
    with engine_for(registry, shadow_mode=mode) as engine:

        async def run() -> None:
            response = await engine.predict(PredictRequest(texts=TEXTS))
            assert (response.model_version, response.rollout.strategy) == ("v1", "shadow")
            if mode == "background":
                await engine.drain_shadows()

        asyncio.run(run())
        labels = {"model": "sentiment_analysis", "primary_version": "v1", "shadow_version": "v2"}
        agree = _sample(engine, "shadow_predictions_total", agreement="agree", **labels)
        disagree = _sample(engine, "shadow_predictions_total", agreement="disagree", **labels)
        assert agree + disagree == len(TEXTS)
        assert agree >= 3  # int8 and fp32 agree on clear texts


def _failing_copy(tmp_path: Path) -> Path:
    """A real copy of v2 whose tokenizer maps 'terrible' past the embedding table: ONNX Runtime
    fails at run time for any text with that word, and loads and warms up fine otherwise."""
    folder = tmp_path / "broken_v2"
    folder.mkdir()
    for name in ("model.onnx", "model.onnx.data"):  # copies: ONNX Runtime refuses weights outside the model's folder
        shutil.copyfile(V2_DIR / name, folder / name)
    (folder / "labels.json").write_bytes((V2_DIR / "labels.json").read_bytes())
    tokenizer = json.loads((V1_DIR / "tokenizer.json").read_text())
    tokenizer["model"]["vocab"]["terrible"] = 40_000
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
    return folder / "model.onnx"


def test_shadow_failure_never_reaches_the_client(tmp_path: Path, models_dir: Path) -> None:
    versions = {"v1": {"path": V1_MODEL}, "v2": {"path": str(_failing_copy(tmp_path)), "status": "candidate"}}
    registry = write_registry(tmp_path, {"sentiment_analysis": sentiment(versions, rollout={"type": "shadow", "target_version": "v2"})})
    with engine_for(registry, shadow_mode="inline") as engine:
        response = asyncio.run(engine.predict(PredictRequest(texts=TEXTS)))
        assert [r.prediction for r in response.results][:2] == ["positive", "negative"]
        assert _sample(engine, "shadow_failures_total", model="sentiment_analysis", shadow_version="v2", reason="error") == 1
        # The same shadow works for texts it can encode: the failure was the run, not the load.
        asyncio.run(engine.predict(PredictRequest(texts=["I love this product"])))
        assert (
            _sample(
                engine, "shadow_predictions_total", model="sentiment_analysis", primary_version="v1", shadow_version="v2", agreement="agree"
            )
            == 1
        )


def test_slow_shadow_is_cut_off_by_its_time_budget(tmp_path: Path, models_dir: Path) -> None:
    registry = write_registry(tmp_path, {"sentiment_analysis": sentiment(rollout={"type": "shadow", "target_version": "v2"})})
    long_texts = [f"{'a long and winding review of a long and winding film ' * 8} {i}" for i in range(64)]
    with engine_for(registry, shadow_mode="inline", shadow_timeout_ms=1, max_queue_ms=60_000) as engine:
        response = asyncio.run(engine.predict(PredictRequest(texts=long_texts)))
        assert len(response.results) == 64
        assert _sample(engine, "shadow_failures_total", model="sentiment_analysis", shadow_version="v2", reason="timeout") == 1


def _broken_copy(tmp_path: Path, name: str = "broken") -> Path:
    """A version folder whose model file is not a model: it fails to load."""
    folder = tmp_path / name
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"not a model")
    for sidecar in ("tokenizer.json", "labels.json"):
        shutil.copyfile(V2_DIR / sidecar, folder / sidecar)
    return folder / "model.onnx"


def _failover_count(engine: InferenceEngine, failed: str = "v2", to: str = "v1") -> float:
    return _sample(engine, "rollout_failovers_total", model="sentiment_analysis", from_version=failed, to_version=to)


@pytest.mark.parametrize(
    "rollout",
    [{"type": "canary", "canary_percentage": 30, "target_version": "v2"}, {"type": "ab_test", "weights": {"v1": 1, "v2": 1}}],
    ids=["canary", "ab_test"],
)
@pytest.mark.parametrize("capacity", [5, 1], ids=["loaded-at-start", "loaded-on-first-use"])
def test_unpinned_traffic_whose_arm_failed_goes_to_the_default_version(
    tmp_path: Path, models_dir: Path, rollout: dict[str, object], capacity: int
) -> None:
    versions = {"v1": {"path": V1_MODEL}, "v2": {"path": str(_broken_copy(tmp_path)), "status": "candidate"}}
    registry = write_registry(tmp_path, {"sentiment_analysis": sentiment(versions, rollout=rollout)})
    strategy = strategy_for(load_registry(registry).models["sentiment_analysis"])
    ids = [f"user-{i}" for i in range(200)]
    to_v2 = sum(strategy.assign(routing_bucket("sentiment_analysis", i)).version == "v2" for i in ids)
    assert to_v2 > 20
    with engine_for(registry, model_cache_size=capacity) as engine:

        async def run() -> list[PredictResponse]:
            return list(await asyncio.gather(*(engine.predict(PredictRequest(id=i, texts=["I love it"])) for i in ids)))

        responses = asyncio.run(run())
        assert {(r.model_version, r.rollout.strategy, r.rollout.arm) for r in responses} == {("v1", rollout["type"], "v1")}
        assert _failover_count(engine) == to_v2
        health = engine.health()
        assert (health.status, health.ready) == ("degraded", True)
        v2 = next(m for m in health.models if m.version == "v2")
        assert (v2.state, v2.failover_to) == ("failed", "v1")
        assert next(m for m in health.models if m.version == "v1").failover_to is None
        # A request that names the failed version still gets its error.
        with pytest.raises(ModelNotReady, match="failed to load"):
            asyncio.run(engine.predict(PredictRequest(texts=["ok"], model_version="v2")))


def test_a_shadow_whose_target_failed_leaves_the_primary_answering(tmp_path: Path, models_dir: Path) -> None:
    versions = {"v1": {"path": V1_MODEL}, "v2": {"path": str(_broken_copy(tmp_path)), "status": "candidate"}}
    registry = write_registry(tmp_path, {"sentiment_analysis": sentiment(versions, rollout={"type": "shadow", "target_version": "v2"})})
    with engine_for(registry, shadow_mode="inline") as engine:
        response = asyncio.run(engine.predict(PredictRequest(texts=TEXTS)))
        assert (response.model_version, response.rollout.strategy, response.rollout.arm) == ("v1", "shadow", "v1")
        assert _sample(engine, "shadow_failures_total", model="sentiment_analysis", shadow_version="v2", reason="error") == 1
        assert _failover_count(engine) == 0


def test_a_failed_default_version_is_not_failed_over(tmp_path: Path, models_dir: Path) -> None:
    versions = {"v1": {"path": str(_broken_copy(tmp_path))}, "v2": {"path": str(V2_DIR / "model.onnx"), "status": "candidate"}}
    registry = write_registry(tmp_path, {"sentiment_analysis": sentiment(versions, rollout=CANARY)})
    with engine_for(registry) as engine:
        canary = Canary(stable="v1", canary="v2", percentage=10)
        stable_id = next(i for i in (f"u{n}" for n in range(100)) if canary.assign(routing_bucket("sentiment_analysis", i)).version == "v1")
        with pytest.raises(ModelNotReady):
            asyncio.run(engine.predict(PredictRequest(id=stable_id, texts=["ok"])))
        assert engine.health().ready is False
