"""handlers/v2/dataplane.py: the V2 calls over a real, loaded engine (the repository's registry)."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from engine.errors import InvalidInput, ModelNotFound, PayloadTooLarge, VersionNotFound
from engine.facade import InferenceEngine
from engine.schemas import PredictRequest, PredictResponse
from handlers.v2.dataplane import V2DataPlane
from handlers.v2.tensors import InferRequest, InferResult, Tensor, TensorSpec, from_json_data
from tests.conftest import require_models
from tests.handlers.v2.conftest import MODEL_FILES


@pytest.fixture(scope="module")
def plane(engine: InferenceEngine) -> V2DataPlane:
    require_models(*MODEL_FILES)
    return V2DataPlane(engine)


def texts_tensor(texts: list[str], shape: tuple[int, ...] | None = None) -> Tensor:
    shape = shape or (len(texts),)
    return Tensor("text", "BYTES", shape, from_json_data("BYTES", list(shape), texts))


def infer(plane: V2DataPlane, model: str, version: str | None, *inputs: Tensor, outputs: list[str] | None = None) -> InferResult:
    return asyncio.run(plane.infer(model, version, InferRequest(id="dp-1", inputs=list(inputs), outputs=outputs)))


def predict(engine: InferenceEngine, **fields: Any) -> PredictResponse:
    return asyncio.run(engine.predict(PredictRequest.model_validate({"model_version": "v1", **fields})))


def test_server_metadata_and_health(plane: V2DataPlane) -> None:
    metadata = plane.server_metadata()
    assert metadata["name"] == "ml-inference-system" and metadata["extensions"] == ["binary_tensor_data"]
    assert isinstance(metadata["version"], str) and metadata["version"]
    assert plane.live() and plane.ready()


def test_model_ready_names_unknown_models_and_versions(plane: V2DataPlane) -> None:
    assert plane.model_ready("iris", None) and plane.model_ready("sentiment_analysis", "v2")
    with pytest.raises(ModelNotFound, match="unknown model 'nope'"):
        plane.model_ready("nope", None)
    with pytest.raises(VersionNotFound, match="'v9' does not exist"):
        plane.model_ready("iris", "v9")


def test_metadata_comes_from_the_loaded_version(plane: V2DataPlane, engine: InferenceEngine) -> None:
    iris = asyncio.run(plane.model_metadata("iris", None))
    assert iris.inputs == [TensorSpec("features", "FP32", (-1, 4))]
    assert iris.outputs == [TensorSpec("label", "BYTES", (-1,)), TensorSpec("probabilities", "FP32", (-1, 3))]
    assert iris.parameters == {"kind": "tabular", "version": "v1", "labels": ["setosa", "versicolor", "virginica"]}
    sentiment = asyncio.run(plane.model_metadata("sentiment_analysis", "v2"))
    assert sentiment.versions == ["v1", "v2", "v3", "v4"] and sentiment.parameters["version"] == "v2"
    embedding = asyncio.run(plane.model_metadata("sentence_embedding", None))
    assert embedding.outputs == [TensorSpec("embedding", "FP32", (-1, 384))] and embedding.parameters["labels"] == []
    with pytest.raises(VersionNotFound):
        asyncio.run(plane.model_metadata("iris", "v9"))


def test_text_classification_equals_the_engine(plane: V2DataPlane, engine: InferenceEngine) -> None:
    texts = ["I love it", "awful, just awful"]
    result = infer(plane, "sentiment_analysis", "v1", texts_tensor(texts, (2, 1)))
    assert (result.model_name, result.model_version, result.id) == ("sentiment_analysis", "v1", "dp-1")
    label, probabilities = result.outputs
    expected = predict(engine, texts=texts).results
    assert (label.name, label.datatype, label.shape) == ("label", "BYTES", (2,))
    assert [b.decode() for b in label.data] == [r.prediction for r in expected]
    assert (probabilities.datatype, probabilities.shape) == ("FP32", (2, 3))
    np.testing.assert_allclose(probabilities.data, [list(r.scores.values()) for r in expected], rtol=1e-6)


def test_tabular_accepts_any_numeric_datatype(plane: V2DataPlane, engine: InferenceEngine) -> None:
    rows = [[5, 3, 1, 0], [7, 3, 5, 2]]
    expected = [r.prediction for r in predict(engine, model="iris", instances=rows).results]
    for datatype, dtype in (("INT64", np.int64), ("FP64", np.float64), ("FP16", np.float16), ("UINT8", np.uint8)):
        tensor = Tensor("features", datatype, (2, 4), np.array(rows, dtype=dtype))
        result = infer(plane, "iris", "v1", tensor, outputs=["label"])
        assert [o.name for o in result.outputs] == ["label"]
        assert [b.decode() for b in result.outputs[0].data] == expected, datatype


def test_embedding_equals_the_engine(plane: V2DataPlane, engine: InferenceEngine) -> None:
    result = infer(plane, "sentence_embedding", None, texts_tensor(["a sentence to embed"]))
    (embedding,) = result.outputs
    assert (embedding.name, embedding.shape, embedding.data.dtype) == ("embedding", (1, 384), np.float32)
    expected = predict(engine, model="sentence_embedding", texts=["a sentence to embed"]).results[0]
    np.testing.assert_allclose(embedding.data[0], expected.embedding, rtol=1e-5, atol=1e-6)


def test_a_v2_id_the_native_api_refuses_is_still_echoed(plane: V2DataPlane) -> None:
    request = InferRequest(id="id with ünïcode\n", inputs=[texts_tensor(["fine"])])
    assert asyncio.run(plane.infer("sentiment_analysis", "v1", request)).id == "id with ünïcode\n"


@pytest.mark.parametrize(
    ("model", "tensors", "outputs", "error", "message"),
    [
        ("iris", [Tensor("features", "FP32", (1, 5), np.zeros((1, 5), np.float32))], None, InvalidInput, r"rows of 4 finite numbers"),
        ("iris", [Tensor("features", "FP32", (4,), np.zeros(4, np.float32))], None, InvalidInput, r"\[N, n_features\]"),
        ("iris", [Tensor("features", "BOOL", (1, 4), np.zeros((1, 4), np.bool_))], None, InvalidInput, "numeric datatype"),
        ("iris", [Tensor("features", "FP32", (1, 4), np.array([[1, 2, np.nan, 4]], np.float32))], None, InvalidInput, "finite"),
        ("iris", [Tensor("rows", "FP32", (1, 4), np.zeros((1, 4), np.float32))], None, InvalidInput, "unknown input 'rows'"),
        ("sentiment_analysis", [], None, InvalidInput, "exactly one input"),
        ("sentiment_analysis", [texts_tensor(["a"]), texts_tensor(["b"])], None, InvalidInput, "exactly one input"),
        ("sentiment_analysis", [Tensor("text", "BYTES", (1,), np.array([b"\xff"], dtype=object))], None, InvalidInput, "UTF-8"),
        ("sentiment_analysis", [texts_tensor(["a"])], ["logits"], InvalidInput, "unknown output 'logits'"),
        ("sentiment_analysis", [texts_tensor(["a"] * 257)], None, PayloadTooLarge, "MAX_TEXTS_PER_REQUEST"),
        ("no_such_model", [texts_tensor(["a"])], None, ModelNotFound, "no_such_model"),
    ],
)
def test_bad_requests_raise_engine_errors(
    plane: V2DataPlane, model: str, tensors: list[Tensor], outputs: list[str] | None, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        infer(plane, model, "v1" if model == "iris" else None, *tensors, outputs=outputs)
