"""The ``tabular`` kind on the built iris model: clear cases, held-out accuracy, batch invariance, validation."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine.errors import InvalidInput, PayloadTooLarge
from engine.kinds import KINDS, Limits, ModelFiles
from engine.kinds.base import MAX_DETAILS
from engine.kinds.tabular import TabularClassifier
from engine.registry import VersionSpec
from engine.results import Output
from engine.session import SessionConfig
from modelbuild import iris as iris_build
from tests.conftest import MODELS_DIR, V1_DIR, require_models

IRIS_DIR = MODELS_DIR / "iris_v1"
IRIS_MODEL = IRIS_DIR / "model.onnx"
LIMITS = Limits(max_inputs=256, max_text_chars=10_000)

CLEAR_CASES = {
    "setosa": [[5.1, 3.5, 1.4, 0.2], [4.9, 3.0, 1.4, 0.2], [5.0, 3.6, 1.4, 0.2]],
    "versicolor": [[5.9, 3.0, 4.2, 1.5], [6.0, 2.9, 4.5, 1.5], [5.7, 2.8, 4.1, 1.3]],
    "virginica": [[6.7, 3.0, 5.2, 2.3], [7.7, 3.8, 6.7, 2.2], [6.3, 3.3, 6.0, 2.5]],
}


@pytest.fixture(scope="module")
def classifier() -> TabularClassifier:
    require_models(IRIS_MODEL)
    return TabularClassifier(ModelFiles(IRIS_MODEL), SessionConfig())


def _invalid(classifier: TabularClassifier, inputs: list[Any]) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        classifier.check(inputs, LIMITS)
    return caught.value


def test_signature_is_read_from_the_graph(classifier: TabularClassifier) -> None:
    assert classifier.n_features == 4
    assert classifier.labels == ("setosa", "versicolor", "virginica")
    assert "CPUExecutionProvider" in classifier.providers


@pytest.mark.parametrize("label", sorted(CLEAR_CASES))
def test_clear_cut_rows_get_their_species(classifier: TabularClassifier, label: str) -> None:
    probabilities = classifier.run(CLEAR_CASES[label])
    assert probabilities.dtype == np.float32 and probabilities.shape == (3, 3)
    assert [classifier.labels[i] for i in probabilities.argmax(axis=1)] == [label] * 3
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert (probabilities >= 0).all()


def test_the_classic_setosa_is_confident(classifier: TabularClassifier) -> None:
    scores = dict(zip(classifier.labels, classifier.run([[5.1, 3.5, 1.4, 0.2]])[0], strict=True))
    assert scores["setosa"] > 0.9


def test_ints_tuples_and_arrays_are_accepted(classifier: TabularClassifier) -> None:
    rows: list[Any] = [[5, 3, 1, 0], (6.7, 3.0, 5.2, 2.3), np.array([5.9, 3.0, 4.2, 1.5]), [np.float32(5.1), np.int64(3), 1.4, 0.2]]
    classifier.check(rows, LIMITS)
    predicted = [classifier.labels[i] for i in classifier.run(rows).argmax(axis=1)]
    assert predicted == ["setosa", "virginica", "versicolor", "setosa"]


def test_scores_are_batch_invariant(classifier: TabularClassifier) -> None:
    rows = [row for cases in CLEAR_CASES.values() for row in cases] + [[0.0, 0.0, 0.0, 0.0], [100.0, -5.0, 3.3, 1e6]]
    alone = np.stack([classifier.run([row])[0] for row in rows])
    together = classifier.run(rows)
    reversed_rows = classifier.run(rows[::-1])[::-1]
    repeated = classifier.run(rows * 50)[: len(rows)]
    for batched in (together, reversed_rows, repeated):
        assert np.abs(batched - alone).max() <= 1e-6


def test_empty_batch_and_warm_up(classifier: TabularClassifier) -> None:
    assert classifier.run([]).shape == (0, 3)
    classifier.warm_up()


def test_model_card_accuracy_reproduces_on_the_held_out_split(classifier: TabularClassifier) -> None:
    card = json.loads((IRIS_DIR / "model_card.json").read_text())
    split = iris_build.iris_split()
    probabilities = classifier.run(split.x_test.tolist())
    accuracy = float(np.mean(probabilities.argmax(axis=1) == split.y_test))
    assert card["evaluation"]["examples"] == len(split.y_test) == 45
    assert accuracy == pytest.approx(card["evaluation"]["accuracy"], abs=1e-4)
    assert accuracy > 0.85


def test_the_kind_is_registered_under_its_registry_name() -> None:
    assert KINDS["tabular"] is TabularClassifier
    assert TabularClassifier.request_field == "instances"
    assert TabularClassifier.sidecars(VersionSpec(path="m.onnx"), None) == ("labels.json",)
    assert TabularClassifier.sidecars(VersionSpec(path="m.onnx"), ("a", "b")) == ()


def test_a_result_echoes_the_row_with_its_scores(classifier: TabularClassifier) -> None:
    row = classifier.run([[5.1, 3.5, 1.4, 0.2]])[0]
    result = classifier.result([5.1, 3.5, 1.4, 0.2], Output(row=row, latency_ms=0.5))
    assert result.model_dump() == {
        "instance": [5.1, 3.5, 1.4, 0.2],
        "prediction": "setosa",
        "scores": dict(zip(classifier.labels, map(float, row), strict=True)),
        "latency_ms": 0.5,
        "cached": False,
    }


def test_more_rows_than_the_limit_are_too_large(classifier: TabularClassifier) -> None:
    with pytest.raises(PayloadTooLarge, match="MAX_TEXTS_PER_REQUEST"):
        classifier.check([[1.0, 2.0, 3.0, 4.0]] * 3, Limits(max_inputs=2, max_text_chars=10))


def test_labels_override_the_labels_file() -> None:
    require_models(IRIS_MODEL)
    model = TabularClassifier(ModelFiles(IRIS_MODEL, labels=("a", "b", "c")), SessionConfig())
    assert model.labels == ("a", "b", "c")
    with pytest.raises(ValueError, match="3 columns but there are 2 labels"):
        TabularClassifier(ModelFiles(IRIS_MODEL, labels=("a", "b")), SessionConfig())


def test_a_text_model_is_not_a_tabular_model() -> None:
    require_models(IRIS_MODEL)
    with pytest.raises(ValueError, match="exactly one input tensor") as caught:
        TabularClassifier(ModelFiles(V1_DIR / "model.onnx"), SessionConfig())
    assert "input_ids" in str(caught.value)


def test_missing_files_name_make_models(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="make models"):
        TabularClassifier(ModelFiles(tmp_path / "model.onnx"), SessionConfig())
    (tmp_path / "model.onnx").write_bytes(IRIS_MODEL.read_bytes())
    with pytest.raises(FileNotFoundError, match=r"labels\.json is missing .*make models"):
        TabularClassifier(ModelFiles(tmp_path / "model.onnx"), SessionConfig())


def test_valid_rows_pass(classifier: TabularClassifier) -> None:
    classifier.check([[5.1, 3.5, 1.4, 0.2], [-1e30, 0, 1e30, 2]], LIMITS)
    classifier.check([], LIMITS)


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ([5.1, 3.5, 1.4], "expected 4 features, got 3"),
        ([5.1, 3.5, 1.4, 0.2, 9.9], "expected 4 features, got 5"),
        ([], "expected 4 features, got 0"),
        (["5.1", 3.5, 1.4, 0.2], "feature 0 is not a number (str)"),
        ([5.1, True, 1.4, 0.2], "feature 1 is not a number (bool)"),
        ([5.1, 3.5, None, 0.2], "feature 2 is not a number (NoneType)"),
        ([5.1, 3.5, 1.4, [0.2]], "feature 3 is not a number (list)"),
        ([5.1, 3.5, math.nan, 0.2], "feature 2 is NaN"),
        ([5.1, math.inf, 1.4, 0.2], "feature 1 is infinite"),
        ([-math.inf, 3.5, 1.4, 0.2], "feature 0 is infinite"),
        ([5.1, 3.5, 1.4, 1e300], "feature 3 is out of range for float32"),
        ([5.1, 3.5, 1.4, 10**400], "feature 3 is too large"),
        ("5.1,3.5,1.4,0.2", "expected a list of 4 numbers, got str"),
        (5.1, "expected a list of 4 numbers, got float"),
        ({"sepal": 5.1}, "expected a list of 4 numbers, got dict"),
        (None, "expected a list of 4 numbers, got NoneType"),
        (np.zeros((2, 4)), "expected a list of 4 numbers, got an array of shape [2, 4]"),
    ],
)
def test_invalid_rows_are_rejected_with_details(classifier: TabularClassifier, row: Any, problem: str) -> None:
    error = _invalid(classifier, [[5.1, 3.5, 1.4, 0.2], row])
    assert error.code == "invalid_input"
    assert "4 finite numbers" in error.message and "1 of 2 inputs" in error.message
    assert error.details == [{"index": 1, "problem": problem}]


def test_details_list_every_bad_row_up_to_the_cap(classifier: TabularClassifier) -> None:
    rows: list[Any] = [[1.0, 2.0, 3.0, 4.0] if i % 2 == 0 else [1.0] for i in range(60)]
    error = _invalid(classifier, rows)
    assert "30 of 60 inputs" in error.message
    assert isinstance(error.details, list) and len(error.details) == MAX_DETAILS == 20
    assert [d["index"] for d in error.details] == list(range(1, 40, 2))
