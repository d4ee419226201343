"""modelbuild/embedding.py: the built sentence embedding's files, graph, vectors, card and manifest entry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from engine.session import CPU_PROVIDER, SessionConfig, open_session
from engine.sources import sha256_file
from engine.tokenization import TextTokenizer
from modelbuild import dataset, embedding
from modelbuild.build import (
    BUILD_COMMAND,
    EMBEDDING,
    ENCODER_PACKAGE,
    MANIFEST,
    VERSIONS,
    load_encoder,
    locate_sources,
    write_embedding_model,
)
from tests.modelbuild.conftest import built_folder, read_card

FILES = ("model.onnx", "model.onnx.data", "tokenizer.json", "model_card.json", "MODEL_CARD.md")
LABELS = ("negative", "neutral", "positive")
DIMENSIONS = 384


@pytest.fixture(scope="module")
def folder(models_dir: Path) -> Path:
    return built_folder(models_dir, embedding.FOLDER)


@pytest.fixture(scope="module")
def card(folder: Path) -> dict[str, Any]:
    return read_card(folder)


@pytest.fixture(scope="module")
def session(folder: Path) -> ort.InferenceSession:
    return open_session(folder / "model.onnx", SessionConfig(providers=(CPU_PROVIDER,)))


@pytest.fixture(scope="module")
def tokenizer(folder: Path) -> TextTokenizer:
    return TextTokenizer.from_file(folder / "tokenizer.json")


def _embed(session: ort.InferenceSession, tokenizer: TextTokenizer, texts: list[str]) -> np.ndarray:
    outputs = session.run(None, tokenizer.encode(texts).feeds())
    assert len(outputs) == 1
    result: np.ndarray = outputs[0]
    return result


def test_embedding_models_are_sentence_embedding_v1() -> None:
    assert EMBEDDING == {"sentence_embedding/v1": "embedding_v1"}


def test_folder_has_every_file_and_no_labels(folder: Path) -> None:
    for name in FILES:
        assert (folder / name).is_file(), folder / name
    assert not (folder / "labels.json").exists()


def test_graph_interface(folder: Path) -> None:
    model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    graph = model.graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask"]
    for value in graph.input:
        assert value.type.tensor_type.elem_type == onnx.TensorProto.INT64
        assert [d.dim_param for d in value.type.tensor_type.shape.dim] == ["batch", "sequence"]
    assert [o.name for o in graph.output] == ["embeddings"]
    output = graph.output[0].type.tensor_type
    assert output.elem_type == onnx.TensorProto.FLOAT
    assert (output.shape.dim[0].dim_param, output.shape.dim[1].dim_value) == ("batch", DIMENSIONS)
    assert graph.name == embedding.MODEL_NAME


def test_weights_are_external_and_readable(folder: Path) -> None:
    model, weights = folder / "model.onnx", folder / "model.onnx.data"
    assert model.stat().st_size < 1_000_000 < weights.stat().st_size
    assert weights.stat().st_mode & 0o044 == 0o044  # group and others can read it (a Lambda runtime user)


def test_tokenizer_is_the_sentiment_tokenizer(folder: Path, models_dir: Path, tokenizer: TextTokenizer, reference: dict[str, Any]) -> None:
    assert (folder / "tokenizer.json").read_bytes() == (models_dir / VERSIONS[0].folder / "tokenizer.json").read_bytes()
    assert tokenizer.max_length == reference["max_seq_length"]
    for sentence in reference["sentences"]:
        assert tokenizer.encode([sentence["text"]]).input_ids[0].tolist() == sentence["input_ids"], sentence["text"]


def test_rows_match_sentence_transformers(session: ort.InferenceSession, tokenizer: TextTokenizer, reference: dict[str, Any]) -> None:
    for sentence in reference["sentences"]:
        expected = np.array(sentence["embedding"], dtype=np.float32)
        got = _embed(session, tokenizer, [sentence["text"]])[0]
        assert got.dtype == np.float32 and got.shape == expected.shape == (DIMENSIONS,)
        assert float(np.abs(got - expected).max()) < 1e-5, sentence["text"]
        cosine = float(got @ expected / (np.linalg.norm(got) * np.linalg.norm(expected)))
        assert cosine > 0.99999, sentence["text"]


def test_a_padded_batch_matches(session: ort.InferenceSession, tokenizer: TextTokenizer, reference: dict[str, Any]) -> None:
    texts = [s["text"] for s in reference["sentences"]]
    assert len({len(s["input_ids"]) for s in reference["sentences"]}) > 1  # so the batch really pads some rows
    batch = _embed(session, tokenizer, texts)
    assert batch.shape == (len(texts), DIMENSIONS)
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    expected = np.array([s["embedding"] for s in reference["sentences"]], dtype=np.float32)
    assert float(np.abs(batch - expected).max()) < 1e-5


def test_manifest_entry_matches_the_files(models_dir: Path, folder: Path, card: dict[str, Any]) -> None:
    manifest = json.loads((models_dir / MANIFEST).read_text())
    entry = manifest["embedding"]["sentence_embedding/v1"]
    assert entry["folder"] == embedding.FOLDER
    assert entry["sha256"] == sha256_file(folder / "model.onnx") == card["sha256"]
    assert entry["weights_sha256"] == sha256_file(folder / "model.onnx.data") == card["weights_sha256"]
    assert entry["nearest_centroid_accuracy"] == card["evaluation"]["nearest_centroid"]["accuracy"]


def test_card_describes_the_model(folder: Path, card: dict[str, Any], reference: dict[str, Any]) -> None:
    assert (card["model"], card["version"], card["kind"]) == ("sentence_embedding", "v1", "text_embedding")
    assert "all-MiniLM-L6-v2" in card["encoder"] and ENCODER_PACKAGE in card["encoder"]
    assert "mean" in card["pooling"] and "L2" in card["pooling"]
    assert card["dimensions"] == DIMENSIONS
    assert card["max_tokens"] == reference["max_seq_length"]
    assert [i["name"] for i in card["inputs"]] == ["input_ids", "attention_mask"]
    assert card["output"] == {"name": "embeddings", "dtype": "float32", "shape": ["batch", DIMENSIONS]}
    assert card["build_command"] == BUILD_COMMAND
    assert "onnxruntime" in card["libraries"]
    markdown = (folder / "MODEL_CARD.md").read_text()
    assert markdown.startswith("# sentence_embedding v1 (text embedding, fp32)")
    for text in (card["sha256"], card["weights_sha256"], BUILD_COMMAND, card["encoder"], card["evaluation"]["split"]):
        assert text in markdown, text


def test_card_evaluation_is_on_the_held_out_movies(folder: Path, card: dict[str, Any]) -> None:
    split = dataset.split_by_movie(dataset.load_corpus(dataset.corpus_path()))
    evaluation = card["evaluation"]
    assert "Rotten Tomatoes" in evaluation["data_source"] and "no movie in both" in evaluation["split"]
    centroid = evaluation["nearest_centroid"]
    assert centroid["examples"] == len(split.test)
    confusion = centroid["confusion"]
    assert set(confusion) == set(LABELS)
    assert {t: sum(row.values()) for t, row in confusion.items()} == {t: [e.label for e in split.test].count(t) for t in LABELS}
    assert round(sum(confusion[t][t] for t in LABELS) / len(split.test), 4) == centroid["accuracy"]
    # Without any fitted head the embedding alone separates the classes better than guessing the commonest.
    assert centroid["majority_class_accuracy"] < centroid["accuracy"] < 1.0
    cosines = evaluation["cosine_similarity"]
    assert -1.0 < cosines["across_classes"] < cosines["within_class"] < 1.0
    markdown = (folder / "MODEL_CARD.md").read_text()
    assert f"{centroid['accuracy']:.4f} on {centroid['examples']} held-out texts" in markdown


def test_nearest_centroid_labels_by_the_closest_class_mean() -> None:
    train = np.array([[1, 0], [0.8, 0.6], [0, 1], [-0.6, 0.8]], dtype=np.float32)
    test = np.array([[0.96, 0.28], [0.28, 0.96], [0.6, 0.8]], dtype=np.float32)
    report = embedding.nearest_centroid(train, ["a", "a", "b", "b"], test, ["a", "b", "b"], ["a", "b"])
    # Centroid a points at (0.9, 0.3), centroid b at (-0.3, 0.9): (0.6, 0.8) is nearer to a.
    assert report["confusion"] == {"a": {"a": 1, "b": 0}, "b": {"a": 1, "b": 1}}
    assert report["accuracy"] == round(2 / 3, 4)
    assert report["majority_class_accuracy"] == round(2 / 3, 4)


def test_class_cosines_equal_the_pairwise_means() -> None:
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(40, 8)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    truth = [LABELS[i] for i in rng.integers(0, 3, size=40)]
    similarity = rows.astype(np.float64) @ rows.T.astype(np.float64)
    same = np.equal.outer(truth, truth)
    off_diagonal = ~np.eye(40, dtype=bool)
    got = embedding.class_cosines(rows, truth, LABELS)
    assert got["within_class"] == pytest.approx(similarity[same & off_diagonal].mean(), abs=1e-4)
    assert got["across_classes"] == pytest.approx(similarity[~same].mean(), abs=1e-4)
    assert got["gap"] == pytest.approx(got["within_class"] - got["across_classes"], abs=2e-4)


def test_a_fresh_build_gives_the_same_files(folder: Path, tmp_path: Path) -> None:
    cfg, tokenizer, weights = load_encoder(locate_sources())
    model = write_embedding_model(tmp_path / embedding.FOLDER, weights, cfg, tokenizer)
    for name in ("model.onnx", "model.onnx.data", "tokenizer.json"):
        assert sha256_file(model.with_name(name)) == sha256_file(folder / name), name
