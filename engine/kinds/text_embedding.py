"""The ``text_embedding`` kind: tokenizer + encoder graph; texts in, one vector per text out.

The job text-embeddings-inference does. The graph's first output is ``[batch, dimensions]``
(the default ``sentence_embedding`` model: MiniLM-L6, mean-pooled and L2-normalised, 384
floats). Rows are returned as the graph computes them: normalising is the graph's business.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import Field

from engine.kinds.base import ModelFiles
from engine.kinds.text import TextModel
from engine.results import InputResult, Output, result_model
from engine.session import SessionConfig

if TYPE_CHECKING:
    from engine.registry import ModelSpec, VersionSpec

AGREEMENT_COSINE = 0.99
"""A shadow's embedding agrees with the primary's when their cosine similarity is at least this."""

EmbeddingResult = result_model(
    "EmbeddingResult",
    "One text's embedding.",
    text=(str, ...),
    embedding=(list[float], Field(description="The text's vector, as the model computes it (the default model: unit length).")),
)


class TextEmbedder(TextModel):
    """``model.onnx`` with ``tokenizer.json`` beside it; one ``dimensions``-float vector per text."""

    name: ClassVar[str] = "text_embedding"
    result_type: ClassVar[type[InputResult]] = EmbeddingResult
    labels: tuple[str, ...] = ()

    def __init__(self, files: ModelFiles, session_config: SessionConfig) -> None:
        super().__init__(files, session_config)
        if not isinstance(self._output_width, int) or self._output_width < 1:
            raise ValueError(f"{files.model}: output {self._output_name!r} needs a fixed size, got {self._output_width!r}")
        self.width = self._output_width

    @classmethod
    def sidecars(cls, spec: VersionSpec, labels: tuple[str, ...] | None) -> tuple[str, ...]:
        return cls._text_sidecars(spec.tokenizer is not None)

    @classmethod
    def check_spec(cls, spec: ModelSpec) -> None:
        if spec.labels is not None:
            raise ValueError("a text_embedding model has no labels")

    def result(self, item: Any, output: Output) -> InputResult:
        return EmbeddingResult(text=item, embedding=output.row.tolist(), latency_ms=output.latency_ms, cached=output.cached)

    def agrees(self, primary: np.ndarray, shadow: np.ndarray) -> bool:
        norms = float(np.linalg.norm(primary) * np.linalg.norm(shadow))
        return norms > 0 and float(np.dot(primary, shadow)) / norms >= AGREEMENT_COSINE
