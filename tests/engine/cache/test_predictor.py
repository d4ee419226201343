"""The caching layer in the engine: per-input lookups, misses only, single-flight, rollout, faults."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from engine.facade import InferenceEngine
from engine.factory import build_engine
from engine.schemas import PredictRequest, PredictResponse
from tests.conftest import V1_DIR, V2_DIR, make_settings
from tests.engine.cache.redis_server import RedisServer
from tests.registries import sentiment, write_registry


@contextmanager
def engine_with(registry: Path | None = None, **settings: object) -> Iterator[InferenceEngine]:
    extra = {"model_registry_path": registry} if registry is not None else {}
    engine = build_engine(make_settings(**extra, **settings))
    engine.load()
    try:
        yield engine
    finally:
        engine.close()


def _runs(engine: InferenceEngine, version: str = "v1") -> float:
    """Texts the runtime computed for this version so far (the batch-size histogram's sum)."""
    value = engine.metrics.registry.get_sample_value("inference_batch_size_sum", {"model": "sentiment_analysis", "model_version": version})
    return value or 0.0


def _ask(engine: InferenceEngine, texts: list[str], version: str = "v1") -> PredictResponse:
    return asyncio.run(engine.predict(PredictRequest(texts=texts, model_version=version)))


def test_only_the_misses_run_and_results_say_cached(models_dir: Path) -> None:
    with engine_with() as engine:
        warm_runs = _runs(engine)
        first = _ask(engine, ["I love this product", "This is terrible"])
        assert [r.cached for r in first.results] == [False, False]
        assert _runs(engine) - warm_runs == 2
        second = _ask(engine, ["This is terrible", "A brand new text", "I love this product"])
        assert [r.cached for r in second.results] == [True, False, True]
        assert _runs(engine) - warm_runs == 3  # only the new text ran
        assert second.results[0].scores == first.results[1].scores
        labels = {"model": "sentiment_analysis", "model_version": "v1"}
        assert engine.metrics.registry.get_sample_value("cache_hits_total", labels) == 2
        assert engine.metrics.registry.get_sample_value("cache_tier_hits_total", {**labels, "tier": "memory"}) == 2
        assert engine.metrics.registry.get_sample_value("cache_misses_total", labels) == 3


def test_text_is_used_exactly_as_given(models_dir: Path) -> None:
    with engine_with() as engine:
        _ask(engine, ["Great film"])
        assert [r.cached for r in _ask(engine, ["Great film", "great film", "Great film "]).results] == [True, False, False]


def test_concurrent_identical_misses_run_once(models_dir: Path) -> None:
    with engine_with() as engine:
        before = _runs(engine)

        async def burst() -> list[PredictResponse]:
            return list(
                await asyncio.gather(*(engine.predict(PredictRequest(texts=["one shared text"], model_version="v1")) for _ in range(16)))
            )

        responses = asyncio.run(burst())
        assert _runs(engine) - before == 1
        assert len({tuple(r.results[0].scores.items()) for r in responses}) == 1


def test_cached_results_never_bypass_rollout(models_dir: Path) -> None:
    with engine_with() as engine:
        _ask(engine, ["sticky text"], "v1")
        response = _ask(engine, ["sticky text"], "v2")
        assert (response.model_version, response.results[0].cached) == ("v2", False)


def test_cache_backend_none_caches_nothing(models_dir: Path) -> None:
    with engine_with(cache_backend="none") as engine:
        _ask(engine, ["again"])
        assert _ask(engine, ["again"]).results[0].cached is False
        assert engine.health().cache is not None and engine.health().cache.backend == "none"


def _ask_in_one_loop(engine: InferenceEngine, texts: list[str]) -> PredictResponse:
    """One request, then close the Redis connections in the loop that opened them."""

    async def run() -> PredictResponse:
        try:
            return await engine.predict(PredictRequest(texts=texts, model_version="v1"))
        finally:
            await engine.aclose()

    return asyncio.run(run())


def _redis_settings(server: RedisServer) -> dict[str, object]:
    return {"cache_backend": "redis", "redis_host": "127.0.0.1", "redis_port": server.port, "redis_timeout_ms": 200}


def test_replacing_a_model_file_invalidates_its_entries(
    tmp_path: Path, models_dir: Path, redis_server: RedisServer, raw_redis: object
) -> None:
    folder = tmp_path / "model"
    shutil.copytree(V1_DIR, folder)
    registry = write_registry(tmp_path, {"sentiment_analysis": sentiment({"v1": {"path": str(folder / "model.onnx")}})})
    with engine_with(registry, **_redis_settings(redis_server)) as engine:
        _ask_in_one_loop(engine, ["shared across processes"])
    with engine_with(registry, **_redis_settings(redis_server)) as engine:  # a second process, same Redis
        assert _ask_in_one_loop(engine, ["shared across processes"]).results[0].cached is True
    for name in ("model.onnx", "model.onnx.data"):  # a new model under the same name
        shutil.copyfile(V2_DIR / name, folder / name)
    with engine_with(registry, **_redis_settings(redis_server)) as engine:
        assert _ask_in_one_loop(engine, ["shared across processes"]).results[0].cached is False


def test_invalidation_by_model_and_version(models_dir: Path, redis_server: RedisServer, raw_redis: object) -> None:
    with engine_with(**_redis_settings(redis_server)) as engine:

        async def scenario() -> None:
            await engine.predict(PredictRequest(texts=["a", "b"], model_version="v1"))
            await engine.predict(PredictRequest(texts=["a"], model_version="v2"))
            assert await engine.invalidate_cache("sentiment_analysis", "v2") == 1
            again = await engine.predict(PredictRequest(texts=["a", "b"], model_version="v1"))
            assert [r.cached for r in again.results] == [True, True]
            assert await engine.invalidate_cache("sentiment_analysis", None) == 2
            assert await engine.invalidate_cache(None, None) == 0
            await engine.aclose()

        asyncio.run(scenario())


def test_redis_killed_while_requests_flow_loses_no_request(own_redis_server: RedisServer, models_dir: Path) -> None:
    server = own_redis_server
    texts = [f"review number {i % 12}" for i in range(12)]
    with engine_with(**_redis_settings(server)) as engine:

        async def client(stop: asyncio.Event, failures: list[BaseException], served: list[int]) -> None:
            for i in range(2_000):  # bounded; the stop event ends it much sooner
                if stop.is_set():
                    return
                try:
                    await engine.predict(PredictRequest(texts=[texts[i % len(texts)]], model_version="v1"))
                    served.append(1)
                except BaseException as exc:  # noqa: BLE001 - any failure is what this test counts
                    failures.append(exc)
                await asyncio.sleep(0.002)

        async def scenario() -> tuple[list[BaseException], int, bool]:
            stop, failures, served = asyncio.Event(), [], []
            clients = [asyncio.create_task(client(stop, failures, served)) for _ in range(4)]
            await asyncio.sleep(0.5)
            server.kill()
            await asyncio.sleep(1.0)
            assert engine.health().cache is not None and engine.health().cache.state in ("open", "degraded")
            server.start()
            hits_back = False
            for _ in range(100):  # up to ~10 s for the breaker's probe to close it
                await engine.predict(PredictRequest(texts=["after restart"], model_version="v1"))
                if (await engine.predict(PredictRequest(texts=["after restart"], model_version="v1"))).results[0].cached:
                    hits_back = True
                    break
                await asyncio.sleep(0.1)
            stop.set()
            await asyncio.gather(*clients)
            await engine.aclose()
            return failures, len(served), hits_back

        failures, served, hits_back = asyncio.run(scenario())
        assert failures == []
        assert served > 50
        assert hits_back
        assert (engine.metrics.registry.get_sample_value("cache_errors_total", {"operation": "get"}) or 0) > 0


@pytest.mark.parametrize("backend", ["memory", "tiered"])
def test_health_shows_the_backend(backend: str, models_dir: Path, redis_server: RedisServer, raw_redis: object) -> None:
    with engine_with(**{**_redis_settings(redis_server), "cache_backend": backend}) as engine:

        async def run() -> None:
            response = await engine.predict(PredictRequest(texts=["x"], model_version="v1"))
            assert response.results[0].cached is False
            cache = engine.health().cache
            assert cache is not None and (cache.backend, cache.state) == (backend, "ok")
            await engine.aclose()

        asyncio.run(run())
