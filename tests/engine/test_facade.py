"""The engine facade: limits, resolution, auth, results, health and listing."""

from __future__ import annotations

import asyncio

import pytest

from engine.errors import InvalidInput, ModelNotFound, PayloadTooLarge, VersionNotFound
from engine.facade import InferenceEngine
from engine.factory import build_engine
from engine.schemas import PredictRequest
from tests.conftest import make_settings


def _predict(engine: InferenceEngine, **fields: object) -> object:
    return asyncio.run(engine.predict(PredictRequest.model_validate(fields)))


def test_results_follow_the_seed_contract(engine: InferenceEngine) -> None:
    response = asyncio.run(engine.predict(PredictRequest(id="req-7", texts=["I love this product", "This is terrible"])))
    assert response.request_id == "req-7"
    assert (response.model, response.model_version) == ("sentiment_analysis", "v1")
    assert [r.prediction for r in response.results] == ["positive", "negative"]
    for result in response.results:
        assert result.prediction == max(result.scores, key=result.scores.__getitem__)
        assert sum(result.scores.values()) == pytest.approx(1.0, abs=1e-5)
        assert result.latency_ms > 0
    assert response.latency_ms >= max(r.latency_ms for r in response.results)


def test_request_ids_are_generated_and_unique(engine: InferenceEngine) -> None:
    ids = {asyncio.run(engine.predict(PredictRequest(texts=["ok"]))).request_id for _ in range(3)}
    assert len(ids) == 3


def test_large_request_runs_in_chunks_and_keeps_order(engine: InferenceEngine) -> None:
    texts = [("great " * (i % 7 + 1)) + f"film {i}" if i % 2 else f"awful film {i}" + " really" * (i % 5) for i in range(100)]
    response = asyncio.run(engine.predict(PredictRequest(texts=texts, model_version="v1")))
    assert [r.text for r in response.results] == texts
    solo = [asyncio.run(engine.predict(PredictRequest(texts=[t], model_version="v1"))).results[0] for t in texts[:10]]
    for got, expected in zip(response.results[:10], solo, strict=True):
        for label in expected.scores:
            assert got.scores[label] == pytest.approx(expected.scores[label], abs=1e-4)


def test_concurrent_requests_are_batched_without_mixing_results(engine: InferenceEngine) -> None:
    texts = [f"{w} story number {i}" for i, w in enumerate(["a delightful", "a dreadful", "an ordinary"] * 20)]

    async def many() -> list[object]:
        return list(await asyncio.gather(*(engine.predict(PredictRequest(texts=[t], model_version="v1")) for t in texts)))

    responses = asyncio.run(many())
    together = asyncio.run(engine.predict(PredictRequest(texts=texts, model_version="v1"))).results
    for response, expected in zip(responses, together, strict=True):
        (result,) = response.results  # type: ignore[attr-defined]
        assert result.text == expected.text
        for label in expected.scores:
            assert result.scores[label] == pytest.approx(expected.scores[label], abs=1e-4)


def test_limits_give_payload_too_large(models_dir: object) -> None:
    small = build_engine(make_settings(max_texts_per_request=3, max_text_chars=20))
    with pytest.raises(PayloadTooLarge, match="MAX_TEXTS_PER_REQUEST"):
        asyncio.run(small.predict(PredictRequest(texts=["a"] * 4)))
    with pytest.raises(PayloadTooLarge, match="MAX_TEXT_CHARS") as caught:
        asyncio.run(small.predict(PredictRequest(texts=["ok", "x" * 21])))
    assert caught.value.details == {"indexes": [1]}


def test_unknown_model_or_version(engine: InferenceEngine) -> None:
    with pytest.raises(ModelNotFound, match="available: \\['iris', 'sentence_embedding', 'sentiment_analysis'\\]"):
        asyncio.run(engine.predict(PredictRequest(texts=["a"], model="other")))
    with pytest.raises(VersionNotFound, match="servable versions: \\['v1', 'v2', 'v3', 'v4'\\]"):
        asyncio.run(engine.predict(PredictRequest(texts=["a"], model_version="v9")))


def test_health_and_models(engine: InferenceEngine) -> None:
    health = engine.health()
    assert (health.status, health.ready) == ("active", True)
    # MODEL_CACHE_SIZE=5: the defaults, the rollout's target (v3), then v2; v4 loads when named.
    assert health.active_models == [
        "sentiment_analysis:v1",
        "sentiment_analysis:v2",
        "sentiment_analysis:v3",
        "iris:v1",
        "sentence_embedding:v1",
    ]
    assert health.providers == ["CPUExecutionProvider"]
    assert all(m.load_ms is not None and m.load_ms > 0 for m in health.models if m.state == "ready")
    assert [(m.version, m.load_ms) for m in health.models if m.state != "ready"] == [("v4", None)]
    listing = engine.list_models()
    assert listing.total == 6
    assert [(m.name, m.version, m.status, m.default, m.kind) for m in listing.models] == [
        ("sentiment_analysis", "v1", "active", True, "text_classification"),
        ("sentiment_analysis", "v2", "candidate", False, "text_classification"),
        ("sentiment_analysis", "v3", "candidate", False, "text_classification"),
        ("sentiment_analysis", "v4", "candidate", False, "text_classification"),
        ("iris", "v1", "active", True, "tabular"),
        ("sentence_embedding", "v1", "active", True, "text_embedding"),
    ]
    assert listing.models[0].labels == ["negative", "neutral", "positive"]


def test_a_request_field_that_is_not_the_models_kind_is_refused(engine: InferenceEngine) -> None:
    with pytest.raises(InvalidInput, match="'iris' is a tabular model: send 'instances'"):
        _predict(engine, model="iris", texts=["a"])
    with pytest.raises(InvalidInput, match="'sentence_embedding' is a text_embedding model: send 'texts'"):
        _predict(engine, model="sentence_embedding", instances=[[1.0]])
    failed = engine.metrics.registry.get_sample_value("inference_errors_total", {"code": "invalid_input"})
    assert failed is not None and failed >= 2
