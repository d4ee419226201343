"""modelbuild/iris.py: the built iris model's files, card and graph interface."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from engine.sources import sha256_file
from modelbuild import iris
from modelbuild.build import BUILD_COMMAND
from tests.modelbuild.conftest import built_folder, read_card

FILES = ("model.onnx", "labels.json", "model_card.json", "MODEL_CARD.md")
FEATURES = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
LABELS = ["setosa", "versicolor", "virginica"]


@pytest.fixture(scope="module")
def folder(models_dir: Path) -> Path:
    return built_folder(models_dir, iris.FOLDER)


@pytest.fixture(scope="module")
def card(folder: Path) -> dict[str, Any]:
    return read_card(folder)


@pytest.fixture(scope="module")
def graph(folder: Path) -> onnx.GraphProto:
    return onnx.load(str(folder / "model.onnx")).graph


def test_folder_has_every_file(folder: Path) -> None:
    assert folder.name == "iris_v1"
    for name in FILES:
        assert (folder / name).is_file(), folder / name
    assert json.loads((folder / "labels.json").read_text()) == LABELS


def test_card_fields(card: dict[str, Any], folder: Path) -> None:
    assert (card["model"], card["version"], card["kind"]) == ("iris", "v1", "tabular")
    assert card["labels"] == LABELS
    assert card["features"] == FEATURES
    assert card["input"] == {"name": "features", "dtype": "float32", "shape": ["batch", 4]}
    assert card["output"] == {"name": "probabilities", "dtype": "float32", "shape": ["batch", 3]}
    assert "load_iris" in card["data_source"] and "scikit-learn" in card["data_source"]
    assert "test_size=0.3" in card["split"] and "random_state=42" in card["split"] and "stratified" in card["split"]
    assert "105 train rows, 45 test rows" in card["split"]
    assert "StandardScaler" in card["pipeline"] and "LogisticRegression" in card["pipeline"]
    assert card["build_command"] == BUILD_COMMAND
    assert "skl2onnx" in card["libraries"]
    evaluation = card["evaluation"]
    assert evaluation["examples"] == 45
    assert 0.85 < evaluation["accuracy"] <= 1.0
    confusion = evaluation["confusion"]
    assert sorted(confusion) == LABELS
    assert all(sum(row.values()) == 15 for row in confusion.values())
    assert round(sum(confusion[label][label] for label in LABELS) / 45, 4) == evaluation["accuracy"]
    markdown = (folder / "MODEL_CARD.md").read_text()
    assert markdown.startswith("# iris v1 (tabular")
    for text in (card["data_source"], card["split"], BUILD_COMMAND, ", ".join(FEATURES), f"{evaluation['accuracy']:.4f} on 45 rows"):
        assert text in markdown, text


def test_card_sha256_is_the_file_sha256(card: dict[str, Any], folder: Path) -> None:
    sha = sha256_file(folder / "model.onnx")
    assert card["sha256"] == sha
    assert f"`{sha}`" in (folder / "MODEL_CARD.md").read_text()


def _dims(value: onnx.ValueInfoProto) -> list[tuple[str | None, int | str]]:
    return [(d.WhichOneof("value"), d.dim_value if d.HasField("dim_value") else d.dim_param) for d in value.type.tensor_type.shape.dim]


def test_graph_input_is_float_with_a_symbolic_batch(graph: onnx.GraphProto) -> None:
    assert [i.name for i in graph.input] == ["features"]
    value = graph.input[0]
    assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert _dims(value) == [("dim_param", "batch"), ("dim_value", 4)]


def test_graph_outputs_include_plain_probabilities(graph: onnx.GraphProto) -> None:
    outputs = {o.name: o for o in graph.output}
    assert set(outputs) == {"label", "probabilities"}
    probabilities = outputs["probabilities"]
    assert probabilities.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert _dims(probabilities) == [("dim_param", "batch"), ("dim_value", 3)]
    # zipmap off: no sequence-of-maps output, no ZipMap node.
    assert all(o.type.WhichOneof("value") == "tensor_type" for o in graph.output)
    assert "ZipMap" not in {n.op_type for n in graph.node}


def test_the_split_is_deterministic_and_stratified() -> None:
    first, second = iris.iris_split(), iris.iris_split()
    np.testing.assert_array_equal(first.x_test, second.x_test)
    np.testing.assert_array_equal(first.y_test, second.y_test)
    assert first.x_test.dtype == np.float32 and first.x_test.shape == (45, 4) and first.x_train.shape == (105, 4)
    assert np.bincount(first.y_test).tolist() == [15, 15, 15]


def test_a_fresh_build_gives_the_same_file(folder: Path, tmp_path: Path) -> None:
    card = iris.build_iris(tmp_path / "iris_v1", BUILD_COMMAND)
    assert card["sha256"] == sha256_file(folder / "model.onnx")
