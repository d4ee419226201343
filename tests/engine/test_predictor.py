"""engine/predictor.py and the compute budget as the factory wires them: real engines over the built models."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from pathlib import Path

import pytest

from engine.errors import DeadlineExceeded, Overloaded
from engine.facade import InferenceEngine
from engine.predictor import chunk
from engine.schemas import PredictRequest, PredictResponse
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
    with engine_for(registry, instances=1, intra_op_threads=1, request_timeout_ms=1000, batch_size=8, max_batch_tokens=100_000) as engine:

        async def both() -> list[object]:
            big = engine.predict(PredictRequest(texts=[f"{LONG} {i}" for i in range(256)], model_version="v1"))
            small = engine.predict(PredictRequest(texts=["short"], model_version="v1"))
            return await asyncio.gather(big, small, return_exceptions=True)

        big, small = asyncio.run(both())
        assert isinstance(big, DeadlineExceeded), big
        assert str(big).startswith("the request's deadline passed") or "REQUEST_TIMEOUT_MS" in str(big)
        assert isinstance(small, PredictResponse), small  # served in turn, not held behind the large request
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


HUGE = " ".join(["an honest, patient and quietly moving film about two brothers who travel"] * 140)[:9_990]


def test_chunk_bounds_inputs_and_cost_and_a_costlier_input_goes_alone() -> None:
    costs = [1.0, 1.0, 5.0, 1.0, 50.0, 2.0]
    order = sorted(range(len(costs)), key=costs.__getitem__)
    assert chunk(order, costs, max_inputs=3, max_cost=10) == [[0, 1, 3], [5, 2], [4]]
    assert chunk(order, costs, max_inputs=32, max_cost=float("inf")) == [order]
    assert chunk([], [], max_inputs=3, max_cost=10) == []


def test_a_large_request_runs_as_token_budgeted_jobs_and_a_short_request_waits_about_one_batch(models_dir: Path, tmp_path: Path) -> None:
    """256 texts of 10,000 characters (256 tokens each) and, once they run, a short request: it is
    answered after about one batch (a quarter of MAX_BATCH_TOKENS), long before the large one."""
    registry = write_registry(tmp_path, {"sentiment_analysis": sentiment()})
    settings = {"instances": 1, "intra_op_threads": 1, "cache_backend": "none", "request_timeout_ms": 8000, "max_queue_ms": 5000}
    with engine_for(registry, **settings) as engine:

        async def both() -> tuple[float, int]:
            big = asyncio.ensure_future(engine.predict(PredictRequest(texts=[f"{HUGE} {i}" for i in range(256)], model_version="v1")))
            while batch_inputs(engine, "v1") == 0:  # the large request runs
                await asyncio.sleep(0.01)
            started = time.monotonic()
            reply = await engine.predict(PredictRequest(texts=["a short one"], model_version="v1"))
            waited = time.monotonic() - started
            assert reply.results[0].prediction in {"positive", "neutral", "negative"}  # type: ignore[union-attr]
            assert not big.done()
            big.cancel()
            with pytest.raises(asyncio.CancelledError):
                await big
            return waited, engine.metrics.registry.get_sample_value(
                "inference_batch_size_count", {"model": "sentiment_analysis", "model_version": "v1"}
            ) or 0

        waited, batches = asyncio.run(both())
        assert waited < 3.0, waited
        sizes = engine.metrics.registry.get_sample_value("inference_batch_size_sum", {"model": "sentiment_analysis", "model_version": "v1"})
        assert sizes is not None and sizes / batches <= 9  # batches of about 2048 tokens: 8 long texts (or a short one)


def test_work_queued_past_max_queue_ms_is_dropped_with_overloaded(models_dir: Path, tmp_path: Path) -> None:
    """Behind a batch that runs for seconds (a large token budget), a short request that waits
    past MAX_QUEUE_MS fails with Overloaded (503), not after REQUEST_TIMEOUT_MS, and never runs."""
    registry = write_registry(tmp_path, {"sentiment_analysis": sentiment()})
    settings = {"instances": 1, "intra_op_threads": 1, "max_batch_tokens": 100_000, "max_queue_ms": 200, "request_timeout_ms": 30_000}
    with engine_for(registry, **settings) as engine:

        async def behind() -> tuple[BaseException | None, float]:
            big = asyncio.ensure_future(engine.predict(PredictRequest(texts=[f"{HUGE} {i}" for i in range(96)], model_version="v1")))
            await asyncio.sleep(0.2)
            started = time.monotonic()
            try:
                await engine.predict(PredictRequest(texts=["short"], model_version="v1"))
            except Overloaded as exc:
                failed: BaseException | None = exc
            else:
                failed = None
            waited = time.monotonic() - started
            big.cancel()
            with contextlib.suppress(asyncio.CancelledError, Overloaded):
                await big
            return failed, waited

        failed, waited = asyncio.run(behind())
        assert isinstance(failed, Overloaded) and not isinstance(failed, DeadlineExceeded), failed
        assert "MAX_QUEUE_MS" in str(failed)
        assert waited < 20, waited
        shed = engine.metrics.registry.get_sample_value(
            "inference_shed_inputs_total", {"model": "sentiment_analysis", "model_version": "v1", "reason": "queue_timeout"}
        )
        assert shed is not None and shed >= 1
