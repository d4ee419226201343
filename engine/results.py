"""What the predictor chain returns for each input, and the result shapes the kinds build from it.

Every kind's result echoes its input under the kind's own field (``text``, ``instance``) and
ends with ``latency_ms`` and ``cached``; a classifier's also carries the top label and the
score of each label (``classification_result``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, Field, create_model


@dataclass(frozen=True)
class Output:
    """One input's row of model output (scores, an embedding), and how it was obtained."""

    row: np.ndarray
    latency_ms: float
    cached: bool = False


def top_label(scores: Mapping[str, float]) -> str:
    return max(scores, key=scores.__getitem__)


class InputResult(BaseModel):
    """Base of every kind's per-input result; each one ends with ``TIMING_FIELDS``."""


TIMING_FIELDS: dict[str, Any] = {
    "latency_ms": (float, Field(description="Runtime time of the batch that computed this input (lookup time when cached).")),
    "cached": (bool, Field(False, description="True when the result came from the result cache.")),
}


def result_model(name: str, description: str, **fields: Any) -> type[InputResult]:
    """A kind's result class: its own fields (the input echoed first), then ``TIMING_FIELDS``."""
    model: type[InputResult] = create_model(name, __base__=InputResult, __doc__=description, **fields, **TIMING_FIELDS)
    return model


def classification_result(name: str, echo: str, echo_type: Any, description: str) -> type[InputResult]:
    """A classifier's result: the input echoed as ``echo``, then ``prediction`` and ``scores``."""
    return result_model(
        name,
        description,
        **{echo: (echo_type, ...)},
        prediction=(str, Field(description="The label with the highest score.")),
        scores=(dict[str, float], Field(description="Probability of each label; they sum to 1.")),
    )


def classification(labels: tuple[str, ...], row: np.ndarray) -> dict[str, Any]:
    """``prediction`` and ``scores`` of one classifier output row."""
    scores = dict(zip(labels, map(float, row), strict=True))
    return {"prediction": top_label(scores), "scores": scores}
