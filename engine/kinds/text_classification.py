"""The ``text_classification`` kind: tokenizer + encoder graph + labels; texts in, label probabilities out."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from engine.kinds.base import ModelFiles, argmax_agrees, check_width, label_sidecars, labels_of, require_files
from engine.kinds.text import TextModel
from engine.results import InputResult, Output, classification, classification_result
from engine.session import SessionConfig

if TYPE_CHECKING:
    from engine.registry import ModelSpec, VersionSpec

TextResult = classification_result("TextResult", "text", str, "One text's label probabilities.")


class TextClassifier(TextModel):
    """``model.onnx`` with ``tokenizer.json`` and ``labels.json`` beside it; one row of probabilities per text."""

    name: ClassVar[str] = "text_classification"
    result_type: ClassVar[type[InputResult]] = TextResult

    def __init__(self, files: ModelFiles, session_config: SessionConfig) -> None:
        if files.labels is None:
            require_files(files.beside("labels.json"))
        super().__init__(files, session_config)
        self.labels: tuple[str, ...] = labels_of(files)
        check_width(files.model, self._output_name, self._output_width, self.labels)
        self.width = len(self.labels)

    @classmethod
    def sidecars(cls, spec: VersionSpec, labels: tuple[str, ...] | None) -> tuple[str, ...]:
        return cls._text_sidecars(spec.tokenizer is not None) + label_sidecars(labels)

    @classmethod
    def check_spec(cls, spec: ModelSpec) -> None:
        return None

    def result(self, item: Any, output: Output) -> InputResult:
        return TextResult(text=item, **classification(self.labels, output.row), latency_ms=output.latency_ms, cached=output.cached)

    def agrees(self, primary: np.ndarray, shadow: np.ndarray) -> bool:
        return argmax_agrees(primary, shadow)
