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
from modelbuild import dataset, everyday
from modelbuild.build import (
    BUILD_COMMAND,
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


def test_versions_are_v1_fp32_and_v2_int8() -> None:
    assert [(s.version, s.folder, s.precision) for s in VERSIONS] == [("v1", "sentiment_v1", "fp32"), ("v2", "sentiment_v2", "int8")]


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
    assert cards["v1"]["sha256"] != cards["v2"]["sha256"]


def test_card_names_source_split_accuracy_and_build_command(models_dir: Path, cards: dict[str, dict[str, Any]]) -> None:
    for spec in VERSIONS:
        card = cards[spec.version]
        markdown = (models_dir / spec.folder / "MODEL_CARD.md").read_text()
        assert card["model"] == MODEL_NAME and card["version"] == spec.version
        assert card["labels"] == ["negative", "neutral", "positive"]
        assert "Rotten Tomatoes" in card["data_source"] and dataset.CORPUS_PACKAGE in card["data_source"]
        assert "by movie" in card["split"] and "no movie in both" in card["split"]
        assert card["build_command"] == BUILD_COMMAND
        evaluation = card["evaluation"]
        assert 0.6 < evaluation["accuracy"] < 1.0
        # The accuracy is the confusion matrix's diagonal over its total.
        confusion = evaluation["confusion"]
        total = sum(sum(row.values()) for row in confusion.values())
        assert total == evaluation["examples"]
        assert round(sum(confusion[label][label] for label in confusion) / total, 4) == evaluation["accuracy"]
        for text in (card["data_source"], card["split"], BUILD_COMMAND, f"{evaluation['accuracy']:.4f} on {evaluation['examples']} texts"):
            assert text in markdown, text
        # Precision is the confusion matrix's diagonal over its column.
        for label in confusion:
            column = sum(confusion[truth][label] for truth in confusion)
            assert evaluation["per_class_precision"][label] == round(confusion[label][label] / max(1, column), 4)
        on_everyday = card["everyday"]
        assert "everyday.csv" in on_everyday["source"] and on_everyday["examples"] == len(everyday.load())
        assert f"accuracy {on_everyday['accuracy']:.4f} on {on_everyday['examples']} texts" in markdown
        assert set(on_everyday["per_rule"]) == set(everyday.RULES)
        assert json.dumps(card["seed_examples"]) in markdown
        assert markdown.startswith(f"# {MODEL_NAME} {spec.version} ({spec.precision})")


def test_card_split_counts_match_the_dataset(cards: dict[str, dict[str, Any]]) -> None:
    split = dataset.split_by_movie(dataset.load_corpus(dataset.corpus_path()))
    test_movies = len({e.movie for e in split.test})
    expected = f"{len(split.train)} train texts, {len(split.test)} test texts from {test_movies} movies"
    for card in cards.values():
        assert expected in card["split"]
        assert card["evaluation"]["examples"] == len(split.test)


def test_v2_is_quantised_and_v1_is_not(graphs: dict[str, onnx.ModelProto]) -> None:
    v1_ops = Counter(n.op_type for n in graphs["v1"].graph.node)
    v2_ops = Counter(n.op_type for n in graphs["v2"].graph.node)
    assert not QDQ_OPS & set(v1_ops)
    assert v2_ops["QuantizeLinear"] > 0 and v2_ops["DequantizeLinear"] > 0
    v1_int8 = [t.name for t in graphs["v1"].graph.initializer if t.data_type in INT8_TYPES]
    v2_int8_weights = [t for t in graphs["v2"].graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 2]
    assert v1_int8 == []
    assert len(v2_int8_weights) >= 6 * 5  # per layer at least Q, K, V, attention output and FFN-in projections
    # Every int8 weight is dequantised in the graph.
    dequantised = {n.input[0] for n in graphs["v2"].graph.node if n.op_type == "DequantizeLinear"}
    assert {t.name for t in v2_int8_weights} <= dequantised


@pytest.mark.parametrize("version", ["v1", "v2"])
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


def test_v2_accuracy_within_one_and_a_half_points_of_v1(cards: dict[str, dict[str, Any]]) -> None:
    v1 = cards["v1"]["evaluation"]["accuracy"]
    v2 = cards["v2"]["evaluation"]["accuracy"]
    assert abs(v1 - v2) <= 0.015, (v1, v2)


def test_v2_weights_are_smaller_than_v1(models_dir: Path) -> None:
    v1 = (models_dir / "sentiment_v1" / "model.onnx.data").stat().st_size
    v2 = (models_dir / "sentiment_v2" / "model.onnx.data").stat().st_size
    assert v2 < v1


def test_weights_are_external_readable_and_in_the_manifest(models_dir: Path) -> None:
    manifest = json.loads((models_dir / "manifest.json").read_text())
    for spec in VERSIONS:
        model = models_dir / spec.folder / "model.onnx"
        weights = model.with_name("model.onnx.data")
        assert model.stat().st_size < 1_000_000 < weights.stat().st_size  # the graph alone is small
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
