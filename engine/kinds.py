"""Model kinds: what a loaded model version can do, whatever its inputs are.

Each kind lives in its own module (``engine/text_classifier.py``, ``engine/tabular.py``)
and is created by ``load_model`` from the registry's ``kind`` field.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from engine.session import SessionConfig

ModelKindName = Literal["text_classification", "tabular"]


class ClassifierModel(Protocol):
    """A loaded classifier: inputs in, one row of label probabilities per input out."""

    labels: tuple[str, ...]

    @property
    def providers(self) -> list[str]:
        """ONNX Runtime execution providers the session uses."""
        ...

    def validate(self, inputs: Sequence[Any]) -> None:
        """Raise ``engine.errors.InvalidInput`` (with details) when inputs do not fit the model."""
        ...

    def run(self, inputs: list[Any]) -> np.ndarray:
        """Probabilities, shape (len(inputs), len(labels)), rows in input order."""
        ...

    def warm_up(self) -> None:
        """Run once so the first request does not pay for lazy allocations."""
        ...


def load_model(
    kind: ModelKindName,
    model_path: Path,
    session_config: SessionConfig,
    labels: Sequence[str] | None = None,
    tokenizer_path: Path | None = None,
) -> ClassifierModel:
    """Open a model file as the given kind; ``labels`` overrides the labels.json beside it, and
    ``tokenizer_path`` the tokenizer.json beside a text model."""
    if kind == "text_classification":
        from engine.text_classifier import TextClassifier

        return TextClassifier(model_path, session_config, labels=labels, tokenizer_path=tokenizer_path)
    if kind == "tabular":
        from engine.tabular import TabularClassifier

        model: ClassifierModel = TabularClassifier(model_path, session_config, labels=labels)
        return model
    raise ValueError(f"unknown model kind {kind!r}")
