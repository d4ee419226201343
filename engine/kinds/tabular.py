"""The ``tabular`` model kind: rows of numeric features in, label probabilities out.

The graph takes one float tensor ``[batch, n_features]`` and returns probabilities ``[batch, n_labels]``
(the shape scikit-learn classifiers have once skl2onnx converts them with ``zipmap`` disabled).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from engine.errors import InvalidInput
from engine.kinds.base import (
    MAX_DETAILS,
    Limits,
    ModelFiles,
    argmax_agrees,
    check_count,
    check_width,
    label_sidecars,
    labels_of,
    require_files,
)
from engine.results import InputResult, Output, classification, classification_result
from engine.session import SessionConfig, open_session

if TYPE_CHECKING:
    from engine.registry import ModelSpec, VersionSpec

PROBABILITIES_OUTPUT = "probabilities"
_FLOAT_TYPES: dict[str, type[np.floating[Any]]] = {"tensor(float)": np.float32, "tensor(double)": np.float64}

InstanceResult = classification_result("InstanceResult", "instance", list[Any], "One feature row's label probabilities.")


class TabularClassifier:
    """Loads ``model.onnx`` with the ``labels.json`` beside it (unless the registry lists labels).

    ``run`` maps rows of ``n_features`` numbers to one row of probabilities per input, in ``labels`` order.
    """

    name: ClassVar[str] = "tabular"
    request_field: ClassVar[str] = "instances"
    request_schema: ClassVar[Any] = list[list[Any]]
    request_description: ClassVar[str] = "Feature rows for a tabular model (limit: MAX_TEXTS_PER_REQUEST rows)."
    result_type: ClassVar[type[InputResult]] = InstanceResult

    def __init__(self, files: ModelFiles, session_config: SessionConfig) -> None:
        model_path = files.model
        require_files(model_path, *(files.beside(name) for name in label_sidecars(files.labels)))
        self.labels: tuple[str, ...] = labels_of(files)
        self._session = open_session(model_path, session_config)

        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            names = [i.name for i in inputs]
            raise ValueError(f"{model_path}: a tabular model takes exactly one input tensor [batch, n_features], graph has {names}")
        feed = inputs[0]
        if feed.type not in _FLOAT_TYPES:
            raise ValueError(f"{model_path}: input {feed.name!r} is {feed.type}; a tabular model takes tensor(float) or tensor(double)")
        if len(feed.shape) != 2 or not isinstance(feed.shape[1], int) or feed.shape[1] < 1:
            raise ValueError(
                f"{model_path}: input {feed.name!r} has shape {feed.shape}; a tabular model takes [batch, n_features] "
                "with a fixed number of features"
            )
        self._input = feed.name
        self._dtype: type[np.floating[Any]] = _FLOAT_TYPES[feed.type]
        self.n_features: int = feed.shape[1]

        candidates = [o for o in self._session.get_outputs() if o.type in _FLOAT_TYPES and len(o.shape) == 2]
        named = [o for o in candidates if o.name == PROBABILITIES_OUTPUT]
        if named:
            output = named[0]
        elif len(candidates) == 1:
            output = candidates[0]
        else:
            described = [(o.name, o.type, o.shape) for o in self._session.get_outputs()]
            raise ValueError(
                f"{model_path}: expected one float probabilities output [batch, n_labels] "
                f"(skl2onnx with zipmap disabled names it {PROBABILITIES_OUTPUT!r}); graph outputs are {described}"
            )
        check_width(model_path, output.name, output.shape[1], self.labels)
        self._output = output.name
        self.width = len(self.labels)

    @classmethod
    def sidecars(cls, spec: VersionSpec, labels: tuple[str, ...] | None) -> tuple[str, ...]:
        return label_sidecars(labels)

    @classmethod
    def check_spec(cls, spec: ModelSpec) -> None:
        if any(v.tokenizer for v in spec.versions.values()):
            raise ValueError("a tabular model takes no tokenizer")

    @property
    def providers(self) -> list[str]:
        return list(self._session.get_providers())

    def check(self, inputs: Sequence[Any], limits: Limits) -> None:
        check_count(inputs, limits)
        problems: list[dict[str, Any]] = []
        bad = 0
        for index, row in enumerate(inputs):
            problem = self._row_problem(row)
            if problem is not None:
                bad += 1
                if len(problems) < MAX_DETAILS:
                    problems.append({"index": index, "problem": problem})
        if bad:
            raise InvalidInput(
                f"this model takes rows of {self.n_features} finite numbers; {bad} of {len(inputs)} inputs are not",
                details=problems,
            )

    def _row_problem(self, row: Any) -> str | None:
        if isinstance(row, np.ndarray):
            if row.ndim != 1:
                return f"expected a list of {self.n_features} numbers, got an array of shape {list(row.shape)}"
            row = row.tolist()
        if not isinstance(row, list | tuple):
            return f"expected a list of {self.n_features} numbers, got {type(row).__name__}"
        if len(row) != self.n_features:
            return f"expected {self.n_features} features, got {len(row)}"
        limit = float(np.finfo(self._dtype).max)
        for position, value in enumerate(row):
            if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
                return f"feature {position} is not a number ({type(value).__name__})"
            try:
                number = float(value)
            except OverflowError:
                return f"feature {position} is too large"
            if math.isnan(number):
                return f"feature {position} is NaN"
            if math.isinf(number):
                return f"feature {position} is infinite"
            if abs(number) > limit:
                return f"feature {position} is out of range for {np.dtype(self._dtype).name}"
        return None

    def run(self, rows: list[Any]) -> np.ndarray:
        """Probabilities for each row, in input order, as float32 ``(len(rows), len(labels))``."""
        if not rows:
            return np.empty((0, len(self.labels)), dtype=np.float32)
        features = np.asarray(rows, dtype=self._dtype).reshape(len(rows), self.n_features)
        probabilities = self._session.run([self._output], {self._input: features})[0]
        return np.asarray(probabilities, dtype=np.float32)

    def warm_up(self) -> None:
        """Run once so the first request does not pay for the runtime's lazy allocations."""
        self.run([[0.0] * self.n_features])

    def result(self, item: Any, output: Output) -> InputResult:
        return InstanceResult(instance=item, **classification(self.labels, output.row), latency_ms=output.latency_ms, cached=output.cached)

    def agrees(self, primary: np.ndarray, shadow: np.ndarray) -> bool:
        return argmax_agrees(primary, shadow)
