"""Hot reload of the registry: switch-over, refusal of bad files and models, in-flight requests."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from engine.errors import ReloadFailed
from engine.facade import InferenceEngine
from engine.lifecycle import ModelState
from engine.loader import LoadedModel
from engine.schemas import PredictRequest
from tests.conftest import MODELS_DIR, V1_DIR, V2_DIR
from tests.registries import V1_MODEL, V2_MODEL, broken_v2_folder, engine_for, sentiment, write_registry

IRIS_MODEL = str(MODELS_DIR / "iris_v1" / "model.onnx")

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
    with engine_for(registry, max_queue_ms=60_000) as engine:  # a busy machine must not shed this big request
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


CANARY_ALL = {"type": "canary", "canary_percentage": 100, "target_version": "v2"}


def test_a_reload_retries_a_failed_version_whose_file_was_fixed(tmp_path: Path, models_dir: Path) -> None:
    folder = broken_v2_folder(tmp_path)
    versions = {**V1_ONLY, "v2": {"path": str(folder / "model.onnx"), "status": "candidate"}}
    registry = write_registry(tmp_path, {"sentiment_analysis": sentiment(versions, rollout=CANARY_ALL)})
    with engine_for(registry) as engine:
        assert {m.version: m.state for m in engine.health().models} == {"v1": "ready", "v2": "failed"}
        for name in ("model.onnx", "model.onnx.data"):
            shutil.copyfile(V2_DIR / name, folder / name)
        report = engine.reload()  # the same registry file: v2 is unchanged, and was failed
        assert report.ok, report.error
        assert report.unchanged == ["sentiment_analysis:v1", "sentiment_analysis:v2"]
        assert {m.version: m.state for m in engine.health().models} == {"v1": "ready", "v2": "ready"}
        assert asyncio.run(engine.predict(PredictRequest(texts=["ok"]))).model_version == "v2"


def test_a_version_still_failing_does_not_refuse_a_reload_of_another_model(tmp_path: Path, models_dir: Path) -> None:
    folder = broken_v2_folder(tmp_path)
    versions = {**V1_ONLY, "v2": {"path": str(folder / "model.onnx"), "status": "candidate"}}
    registry = write_registry(tmp_path, {"sentiment_analysis": sentiment(versions, rollout=CANARY_ALL)})
    with engine_for(registry) as engine:
        for attempt in range(2):  # twice: a failure carried over from a reload does not refuse the next one
            iris = {"default_version": "v1", "kind": "tabular", "versions": {"v1": {"path": IRIS_MODEL}}}
            if attempt:
                iris["versions"]["v2"] = {"path": IRIS_MODEL, "status": "candidate"}
            write_registry(tmp_path, {"sentiment_analysis": sentiment(versions, rollout=CANARY_ALL), "iris": iris})
            report = engine.reload()
            assert report.ok, report.error
            health = engine.health()
            states = {f"{m.name}:{m.version}": m.state for m in health.models}
            assert states["sentiment_analysis:v2"] == "failed" and states["iris:v1"] == "ready"
            assert (health.status, health.ready, health.generation) == ("degraded", True, attempt + 2)
        # unpinned traffic still fails over to the default version
        assert asyncio.run(engine.predict(PredictRequest(texts=["ok"]))).model_version == "v1"


def _active_models(engine: InferenceEngine) -> float | None:
    return engine.metrics.registry.get_sample_value("active_models")


def test_active_models_counts_the_ready_versions_after_loads_reloads_evictions_and_retirements(tmp_path: Path, models_dir: Path) -> None:
    registry = write_registry(tmp_path, {"sentiment_analysis": sentiment(V1_ONLY)})
    with engine_for(registry, model_cache_size=3) as engine:
        assert _active_models(engine) == 1

        def ready() -> int:
            return len(engine.health().active_models)

        three = {**V1_ONLY, "v2": {"path": V2_MODEL, "status": "candidate"}, "v3": {"path": V2_MODEL, "status": "candidate"}}
        write_registry(tmp_path, {"sentiment_analysis": sentiment(three, rollout=CANARY_ALL | {"target_version": "v3"})})
        assert engine.reload().ok
        assert ready() == 3 and _active_models(engine) == 3  # v1 kept, v2 and v3 loaded before the switch
        four = {**three, "v4": {"path": V2_MODEL, "status": "candidate"}}
        write_registry(tmp_path, {"sentiment_analysis": sentiment(four, rollout=CANARY_ALL | {"target_version": "v3"})})
        assert engine.reload().ok
        asyncio.run(engine.predict(PredictRequest(texts=["ok"], model_version="v4")))  # evicts one: 3 at most
        assert ready() == 3 and _active_models(engine) == 3
        write_registry(tmp_path, {"sentiment_analysis": sentiment(V1_ONLY)})  # v2, v3, v4 leave
        assert engine.reload().ok
        assert ready() == 1 and _active_models(engine) == 1


def test_a_reload_loads_again_a_version_whose_files_changed_on_disk(tmp_path: Path, models_dir: Path) -> None:
    folder = tmp_path / "v1"
    folder.mkdir()
    for name in ("model.onnx", "model.onnx.data", "tokenizer.json", "labels.json"):
        shutil.copyfile(V1_DIR / name, folder / name)
    registry = write_registry(tmp_path, {"sentiment_analysis": sentiment({"v1": {"path": str(folder / "model.onnx")}})})
    texts = ["I love this product", "This is terrible"]
    with engine_for(registry, cache_backend="none") as engine:
        fp32 = asyncio.run(engine.predict(PredictRequest(texts=texts))).results
        (folder / "model.onnx.data").write_bytes(b"")  # truncated in place: no longer loads
        report = engine.reload()
        assert report.ok, report.error
        assert (report.kept_previous, report.unchanged, report.changed) == (["sentiment_analysis:v1"], ["sentiment_analysis:v1"], [])
        assert next(m for m in engine.health().models if m.version == "v1").files_changed
        again = asyncio.run(engine.predict(PredictRequest(texts=texts))).results
        assert [r.scores for r in again] == [r.scores for r in fp32]  # the copy it loaded still serves
        for name in ("model.onnx", "model.onnx.data"):  # the int8 model written over it
            shutil.copyfile(V2_DIR / name, folder / name)
        report = engine.reload()
        assert report.ok and (report.changed, report.kept_previous) == (["sentiment_analysis:v1"], [])
        health = engine.health()
        assert (health.status, next(m for m in health.models if m.version == "v1").files_changed) == ("active", False)
        int8 = asyncio.run(engine.predict(PredictRequest(texts=texts))).results
        assert any(abs(a.scores["positive"] - b.scores["positive"]) > 1e-6 for a, b in zip(int8, fp32, strict=True))
