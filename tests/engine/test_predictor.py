"""engine/predictor.py and the compute budget as the factory wires them: real engines over the built models."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from engine.errors import DeadlineExceeded
from engine.facade import InferenceEngine
from engine.schemas import PredictRequest
from tests.registries import V1_MODEL, V2_MODEL, engine_for, sentiment, write_registry

LONG = " ".join(["an honest, patient and quietly moving film about two brothers"] * 8)


def batch_inputs(engine: InferenceEngine, version: str) -> float:
    """Inputs the runtime actually ran for a version (the batch-size histogram's sum)."""
    value = engine.metrics.registry.get_sample_value("inference_batch_size_sum", {"model": "sentiment_analysis", "model_version": version})
    return value or 0.0


def runtime_threads() -> set[threading.Thread]:
    """The live compute-pool threads (objects: other engines' pools use the same names)."""
    return {t for t in threading.enumerate() if t.name.startswith("batcher-")}


def test_default_budget_is_one_single_threaded_instance_per_cpu(models_dir: Path, tmp_path: Path) -> None:
    registry = write_registry(tmp_path, {"sentiment_analysis": sentiment()})
    before = runtime_threads()
    with engine_for(registry, instances=2) as engine:
        assert len(runtime_threads() - before) == 2  # one worker thread per instance, shared by every version
        model = engine.models.current.entries()[("sentiment_analysis", "v1")].loaded
        assert model is not None
        assert model.runtime._session.get_session_options().intra_op_num_threads == 1  # type: ignore[attr-defined]
    assert runtime_threads() - before == set()  # closing the engine stops them


def test_registry_instances_and_threads_per_version(models_dir: Path, tmp_path: Path) -> None:
    versions = {
        "v1": {"path": V1_MODEL, "instances": 1, "intra_op_threads": 2},
        "v2": {"path": V2_MODEL, "status": "candidate"},
    }
    registry = write_registry(
        tmp_path,
        {"sentiment_analysis": sentiment(versions=versions, rollout={"type": "canary", "target_version": "v2", "canary_percentage": 50})},
    )
    with engine_for(registry, instances=2) as engine:
        entries = engine.models.current.entries()
        v1, v2 = entries[("sentiment_analysis", "v1")].loaded, entries[("sentiment_analysis", "v2")].loaded
        assert v1 is not None and v2 is not None
        assert v1.instances == 1 and v2.instances is None
        assert v1.runtime._session.get_session_options().intra_op_num_threads == 2  # type: ignore[attr-defined]
        assert v2.runtime._session.get_session_options().intra_op_num_threads == 1  # type: ignore[attr-defined]


def test_a_request_past_its_deadline_fails_and_its_queued_work_never_runs(models_dir: Path, tmp_path: Path) -> None:
    registry = write_registry(tmp_path, {"sentiment_analysis": sentiment()})
    with engine_for(registry, instances=1, intra_op_threads=1, request_timeout_ms=300, batch_size=8, max_batch_tokens=100_000) as engine:

        async def both() -> list[object]:
            big = engine.predict(PredictRequest(texts=[f"{LONG} {i}" for i in range(256)], model_version="v1"))
            small = engine.predict(PredictRequest(texts=["short"], model_version="v1"))
            return await asyncio.gather(big, small, return_exceptions=True)

        results = asyncio.run(both())
        assert all(isinstance(r, DeadlineExceeded) for r in results), results
        assert str(results[1]).startswith("the request's deadline passed") or "REQUEST_TIMEOUT_MS" in str(results[1])
        ran = batch_inputs(engine, "v1")
        assert 0 < ran < 256, ran  # the first batches ran; the rest was dropped at its deadline
        # The engine serves again at once.
        reply = asyncio.run(engine.predict(PredictRequest(texts=["a fine film"], model_version="v1")))
        assert reply.results[0].prediction == "positive"  # type: ignore[union-attr]


def test_a_cancelled_request_drops_its_queued_work(models_dir: Path, tmp_path: Path) -> None:
    registry = write_registry(tmp_path, {"sentiment_analysis": sentiment()})
    with engine_for(registry, instances=1, intra_op_threads=1, batch_size=8) as engine:

        async def cancel_one() -> None:
            blocker = asyncio.ensure_future(engine.predict(PredictRequest(texts=[f"{LONG} {i}" for i in range(64)], model_version="v1")))
            await asyncio.sleep(0.05)
            left = asyncio.ensure_future(engine.predict(PredictRequest(texts=[f"{LONG} x{i}" for i in range(64)], model_version="v1")))
            await asyncio.sleep(0.05)
            left.cancel()
            await blocker
            with pytest.raises(asyncio.CancelledError):
                await left

        asyncio.run(cancel_one())
        assert batch_inputs(engine, "v1") < 128
        cancelled = engine.metrics.registry.get_sample_value(
            "inference_requests_total", {"model": "sentiment_analysis", "model_version": "v1", "outcome": "cancelled"}
        )
        assert cancelled == 1
        assert engine.metrics.registry.get_sample_value("inference_in_flight_requests") == 0
