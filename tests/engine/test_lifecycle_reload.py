"""Hot reload of the registry: switch-over, refusal of bad files and models, in-flight requests."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from engine.errors import ReloadFailed
from engine.facade import InferenceEngine
from engine.lifecycle import ModelState
from engine.loader import LoadedModel
from engine.schemas import PredictRequest
from tests.registries import V1_MODEL, V2_MODEL, engine_for, sentiment, write_registry

V1_ONLY = {"v1": {"path": V1_MODEL, "status": "active"}}


def _loaded(engine: InferenceEngine, version: str) -> LoadedModel:
    """The model object the current generation hands out for a version."""

    async def lease() -> LoadedModel:
        async with engine.models.current.lease("sentiment_analysis", version) as model:
            return model

    return asyncio.run(lease())


def test_reload_adds_versions_and_keeps_unchanged_ones_loaded(tmp_path: Path, models_dir: Path) -> None:
    registry = write_registry(tmp_path, {"sentiment_analysis": sentiment(V1_ONLY)})
    with engine_for(registry) as engine:
        v1_before = _loaded(engine, "v1")
        write_registry(
            tmp_path,
            {"sentiment_analysis": sentiment(rollout={"type": "canary", "canary_percentage": 100, "target_version": "v2"})},
        )
        report = engine.reload()
        assert report.ok, report.error
        assert (report.added, report.unchanged, report.changed, report.removed) == (
            ["sentiment_analysis:v2"],
            ["sentiment_analysis:v1"],
            [],
            [],
        )
        assert report.duration_ms > 0
        assert _loaded(engine, "v1") is v1_before  # not reloaded
        assert {m.version: m.state for m in engine.health().models} == {"v1": "ready", "v2": "ready"}  # warmed before the switch
        assert asyncio.run(engine.predict(PredictRequest(texts=["ok"]))).model_version == "v2"
        assert engine.health().last_reload == report


def test_a_bad_file_leaves_the_previous_registry_serving(tmp_path: Path, models_dir: Path) -> None:
    registry = write_registry(tmp_path, {"sentiment_analysis": sentiment(V1_ONLY)})
    with engine_for(registry) as engine:
        registry.write_text("models:\n  sentiment_analysis:\n    default_version: v9\n    versions: {v1: {path: x.onnx}}\n")
        report = engine.reload()
        assert not report.ok
        assert str(registry) in str(report.error) and "default_version" in str(report.error)
        health = engine.health()
        assert health.status == "active" and health.last_reload is not None and not health.last_reload.ok
        assert asyncio.run(engine.predict(PredictRequest(texts=["I love this product"]))).results[0].prediction == "positive"
        registry.write_text("models: [unclosed")
        assert "not valid YAML" in str(engine.reload().error)
        with pytest.raises(ReloadFailed):
            engine.reload_or_raise()


def test_a_version_that_fails_to_load_leaves_the_previous_registry_serving(tmp_path: Path, models_dir: Path) -> None:
    registry = write_registry(tmp_path, {"sentiment_analysis": sentiment(V1_ONLY)})
    with engine_for(registry) as engine:
        (tmp_path / "bad").mkdir()
        (tmp_path / "bad" / "model.onnx").write_bytes(b"not a model")
        broken = {**V1_ONLY, "v3": {"path": str(tmp_path / "bad" / "model.onnx"), "status": "candidate"}}
        write_registry(tmp_path, {"sentiment_analysis": sentiment(broken, rollout={"type": "shadow", "target_version": "v3"})})
        report = engine.reload()
        assert not report.ok and "sentiment_analysis:v3" in str(report.error)
        assert [m.version for m in engine.health().models] == ["v1"]
        assert asyncio.run(engine.predict(PredictRequest(texts=["ok"]))).rollout.strategy == "pinned"


def test_changed_version_is_swapped_and_in_flight_requests_finish_on_theirs(tmp_path: Path, models_dir: Path) -> None:
    registry = write_registry(tmp_path, {"sentiment_analysis": sentiment(V1_ONLY)})
    texts = [f"{'an uneven but often charming film about growing up ' * 6} {i}" for i in range(256)]
    with engine_for(registry) as engine:
        old_generation = engine.models.current
        old_model = _loaded(engine, "v1")
        old_state = lambda: {v.version: v.state for v in old_generation.views()}["v1"]  # noqa: E731
        reference = asyncio.run(engine.predict(PredictRequest(texts=texts[:4]))).results

        async def scenario() -> tuple[object, object]:
            in_flight = asyncio.create_task(engine.predict(PredictRequest(texts=texts)))
            await asyncio.sleep(0.05)  # the request has leased v1 and queued its batches
            write_registry(tmp_path, {"sentiment_analysis": sentiment({"v1": {"path": V2_MODEL, "status": "active"}})})
            report = await asyncio.to_thread(engine.reload)
            assert not in_flight.done(), "the request should still be running when the switch happens"
            assert old_state() is ModelState.READY  # retired, but kept until its last lease ends
            return await in_flight, report

        finished, report = asyncio.run(scenario())
        assert report.ok and report.changed == ["sentiment_analysis:v1"]  # type: ignore[attr-defined]
        for got, expected in zip(finished.results[:4], reference, strict=True):  # type: ignore[attr-defined]
            assert got.scores == pytest.approx(expected.scores, abs=1e-4)  # the old fp32 v1 answered
        assert old_state() is ModelState.UNLOADED  # unloaded once its last request finished
        new_scores = asyncio.run(engine.predict(PredictRequest(texts=texts[:4]))).results
        assert _loaded(engine, "v1") is not old_model
        assert any(abs(a.scores["positive"] - b.scores["positive"]) > 1e-6 for a, b in zip(new_scores, reference, strict=True))
