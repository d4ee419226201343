"""The ``text_embedding`` kind on the built ``sentence_embedding`` model, and through the engine.

The vectors must be the reference sentence-transformers embeddings of all-MiniLM-L6-v2
(``tests/engine/fixtures/minilm_reference.json``), and the engine's result cache, batching,
rollout and limits apply to them as to any kind.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine.errors import InvalidInput, PayloadTooLarge
from engine.facade import InferenceEngine
from engine.kinds import KINDS, Limits, ModelFiles
from engine.kinds.text_embedding import TextEmbedder
from engine.registry import RegistryError, load_registry
from engine.results import Output
from engine.schemas import PredictRequest
from engine.session import SessionConfig
from tests.conftest import MODELS_DIR, require_models
from tests.registries import engine_for, write_registry

EMBEDDING_DIR = MODELS_DIR / "embedding_v1"
EMBEDDING_MODEL = EMBEDDING_DIR / "model.onnx"
REFERENCE = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "minilm_reference.json").read_text())
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def embedder() -> TextEmbedder:
    require_models(EMBEDDING_MODEL)
    return TextEmbedder(ModelFiles(EMBEDDING_MODEL), SessionConfig())


def _reference() -> tuple[list[str], np.ndarray]:
    texts = [s["text"] for s in REFERENCE["sentences"]]
    return texts, np.array([s["embedding"] for s in REFERENCE["sentences"]], dtype=np.float32)


def test_vectors_match_sentence_transformers(embedder: TextEmbedder) -> None:
    texts, expected = _reference()
    assert embedder.width == 384 and embedder.labels == ()
    got = embedder.run(texts)
    assert got.shape == (len(texts), 384)
    assert float(np.abs(got - expected).max()) < TOLERANCE
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_vectors_are_batch_invariant(embedder: TextEmbedder) -> None:
    texts, _ = _reference()
    texts = [*texts, "x", "a much longer sentence that pads the others in a naive batch " * 5]
    alone = np.stack([embedder.run([t])[0] for t in texts])
    assert float(np.abs(embedder.run(texts) - alone).max()) < TOLERANCE
    assert float(np.abs(embedder.run(texts[::-1])[::-1] - alone).max()) < TOLERANCE


def test_result_shape_checks_and_agreement(embedder: TextEmbedder) -> None:
    assert KINDS["text_embedding"] is TextEmbedder and TextEmbedder.request_field == "texts"
    row = embedder.run(["hello"])[0]
    result = embedder.result("hello", Output(row=row, latency_ms=2.0)).model_dump()
    assert list(result) == ["text", "embedding", "latency_ms", "cached"]
    assert len(result["embedding"]) == 384 and result["embedding"] == pytest.approx(row.tolist())
    other = embedder.run(["a completely different topic: tax law in the nineteenth century"])[0]
    assert embedder.agrees(row, row) and not embedder.agrees(row, other)
    with pytest.raises(PayloadTooLarge, match="MAX_TEXT_CHARS"):
        embedder.check(["ok", "x" * 11], Limits(max_inputs=8, max_text_chars=10))
    with pytest.raises(InvalidInput, match="must be a string"):
        embedder.check([1.5], Limits(max_inputs=8, max_text_chars=10))


def test_an_embedding_model_takes_no_labels(tmp_path: Path) -> None:
    entry = {"kind": "text_embedding", "default_version": "v1", "versions": {"v1": {"path": str(EMBEDDING_MODEL)}}, "labels": ["a", "b"]}
    with pytest.raises(RegistryError, match="has no labels"):
        load_registry(write_registry(tmp_path, {"sentence_embedding": entry}))


def _embed(engine: InferenceEngine, texts: list[str], **fields: Any) -> Any:
    return asyncio.run(engine.predict(PredictRequest.model_validate({"model": "sentence_embedding", "texts": texts, **fields})))


def test_the_engine_answers_one_vector_per_text(engine: InferenceEngine) -> None:
    texts, expected = _reference()
    response = _embed(engine, texts)
    assert (response.model, response.model_version, response.rollout.strategy) == ("sentence_embedding", "v1", "pinned")
    assert [r.text for r in response.results] == texts
    got = np.array([r.embedding for r in response.results], dtype=np.float32)
    assert float(np.abs(got - expected).max()) < TOLERANCE


def test_cache_batching_rollout_and_limits_apply(tmp_path: Path) -> None:
    require_models(EMBEDDING_MODEL)
    versions = {"v1": {"path": str(EMBEDDING_MODEL)}, "v2": {"path": str(EMBEDDING_MODEL), "status": "candidate"}}
    rollout = {"type": "canary", "canary_percentage": 50, "target_version": "v2"}
    entry = {"kind": "text_embedding", "default_version": "v1", "versions": versions, "rollout_strategy": rollout}
    registry = write_registry(tmp_path, {"sentence_embedding": entry})
    with engine_for(registry, max_text_chars=100, cache_backend="memory") as engine:
        texts = [f"sentence number {i} about the weather" for i in range(40)]
        first = _embed(engine, texts, model_version="v1")
        again = _embed(engine, texts, model_version="v1")
        assert not any(r.cached for r in first.results) and all(r.cached for r in again.results)
        assert [r.embedding for r in again.results] == [r.embedding for r in first.results]
        batches = engine.metrics.registry.get_sample_value(
            "inference_batch_size_count", {"model": "sentence_embedding", "model_version": "v1"}
        )
        assert batches == 2  # 40 misses in runtime batches of at most BATCH_SIZE=32
        arms = {_embed(engine, ["hello"], id=f"req-{i}").model_version for i in range(40)}
        assert arms == {"v1", "v2"}
        with pytest.raises(PayloadTooLarge, match="MAX_TEXT_CHARS"):
            _embed(engine, ["x" * 101])
