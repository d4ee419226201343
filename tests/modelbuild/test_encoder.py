"""modelbuild/encoder.py: the torch-free MiniLM graph against sentence-transformers' embeddings."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from safetensors.numpy import load_file

from engine.session import CPU_PROVIDER, SessionConfig, open_session
from engine.tokenization import TextTokenizer
from modelbuild.build import Sources, _sentiment_graph, locate_sources
from modelbuild.encoder import OPSET, BertConfig


@pytest.fixture(scope="module")
def sources() -> Sources:
    return locate_sources()


@pytest.fixture(scope="module")
def config(sources: Sources) -> BertConfig:
    return BertConfig.from_file(sources.encoder_dir / "config.json")


@pytest.fixture(scope="module")
def encoder_model(sources: Sources, config: BertConfig) -> onnx.ModelProto:
    return _sentiment_graph(load_file(str(sources.weights)), config, None)


@pytest.fixture(scope="module")
def encoder(encoder_model: onnx.ModelProto) -> ort.InferenceSession:
    return open_session(encoder_model.SerializeToString(), SessionConfig(providers=(CPU_PROVIDER,)))


@pytest.fixture(scope="module")
def tokenizer(sources: Sources, reference: dict[str, Any]) -> TextTokenizer:
    return TextTokenizer.from_file(sources.encoder_dir / "tokenizer.json", max_length=reference["max_seq_length"])


def _embed(encoder: ort.InferenceSession, tokenizer: TextTokenizer, texts: list[str]) -> np.ndarray:
    result: np.ndarray = encoder.run(["embeddings"], tokenizer.encode(texts).feeds())[0]
    return result


def test_config_is_minilm_l6(config: BertConfig) -> None:
    assert (config.hidden_size, config.num_heads, config.num_layers, config.intermediate_size) == (384, 12, 6, 1536)


def test_graph_interface(encoder_model: onnx.ModelProto, config: BertConfig) -> None:
    graph = encoder_model.graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask"]
    for value in graph.input:
        assert value.type.tensor_type.elem_type == onnx.TensorProto.INT64
        assert [d.dim_param for d in value.type.tensor_type.shape.dim] == ["batch", "sequence"]
    assert [o.name for o in graph.output] == ["embeddings"]
    dims = graph.output[0].type.tensor_type.shape.dim
    assert (dims[0].dim_param, dims[1].dim_value) == ("batch", config.hidden_size)
    assert encoder_model.opset_import[0].version == OPSET
    onnx.checker.check_model(encoder_model, full_check=True)


def test_token_ids_match_the_reference(tokenizer: TextTokenizer, reference: dict[str, Any]) -> None:
    for sentence in reference["sentences"]:
        encoded = tokenizer.encode([sentence["text"]])
        assert encoded.input_ids[0].tolist() == sentence["input_ids"], sentence["text"]


def test_embeddings_match_sentence_transformers(encoder: ort.InferenceSession, tokenizer: TextTokenizer, reference: dict[str, Any]) -> None:
    for sentence in reference["sentences"]:
        expected = np.array(sentence["embedding"], dtype=np.float32)
        got = _embed(encoder, tokenizer, [sentence["text"]])[0]
        assert got.shape == expected.shape == (384,)
        assert float(np.abs(got - expected).max()) < 1e-5, sentence["text"]
        cosine = float(got @ expected / (np.linalg.norm(got) * np.linalg.norm(expected)))
        assert cosine > 0.99999, sentence["text"]


def test_embeddings_are_unit_norm(encoder: ort.InferenceSession, tokenizer: TextTokenizer, reference: dict[str, Any]) -> None:
    embeddings = _embed(encoder, tokenizer, [s["text"] for s in reference["sentences"]])
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)


def test_batch_equals_one_at_a_time(encoder: ort.InferenceSession, tokenizer: TextTokenizer, reference: dict[str, Any]) -> None:
    texts = [s["text"] for s in reference["sentences"]]
    lengths = {len(s["input_ids"]) for s in reference["sentences"]}
    assert len(lengths) > 1  # so the batch really pads some rows
    batch = _embed(encoder, tokenizer, texts)
    assert batch.shape == (len(texts), 384)
    for row, text in zip(batch, texts, strict=True):
        np.testing.assert_allclose(row, _embed(encoder, tokenizer, [text])[0], atol=1e-5)
    # Also against the reference, row by row, when padded.
    expected = np.array([s["embedding"] for s in reference["sentences"]], dtype=np.float32)
    assert float(np.abs(batch - expected).max()) < 1e-5


def test_different_sentences_get_different_embeddings(encoder: ort.InferenceSession, tokenizer: TextTokenizer) -> None:
    a, b, c = _embed(encoder, tokenizer, ["I love this film", "I adore this movie", "The tax form is due in April"])
    assert float(a @ b) > float(a @ c) + 0.2
