"""The step between the facade and the runtime: inputs in, per-input scores out.

The facade calls a ``Predictor``; layers such as a result cache wrap one ``Predictor`` in
another without the edges or the facade changing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from engine.batcher import BatchResult
from engine.errors import InferenceFailed, ModelNotReady
from engine.repository import ModelVersion


@dataclass(frozen=True)
class Output:
    scores: dict[str, float]
    latency_ms: float
    cached: bool = False


class Predictor(Protocol):
    async def predict(self, version: ModelVersion, inputs: Sequence[Any]) -> list[Output]:
        """Scores for each input, in input order, from the given (leased, READY) version."""
        ...


def _size(item: Any) -> int:
    return len(item) if isinstance(item, str) else 0


class BatchedPredictor:
    """Splits a request into runtime batches and submits them to the version's batcher.

    Texts are grouped by length first, so each batch pads little; results return in input order.
    """

    async def predict(self, version: ModelVersion, inputs: Sequence[Any]) -> list[Output]:
        batcher = version.batcher
        if batcher is None:
            raise ModelNotReady(f"model {version.name!r} version {version.version!r} is not loaded")
        order = sorted(range(len(inputs)), key=lambda i: _size(inputs[i]))
        chunks = [order[i : i + batcher.max_batch] for i in range(0, len(order), batcher.max_batch)]
        submitted = []
        try:
            for chunk in chunks:
                submitted.append(batcher.submit([inputs[i] for i in chunk]))
        except Exception:
            for future in submitted:  # all or nothing: an overloaded queue refuses the whole request
                future.cancel()
            raise
        waiting = [asyncio.wrap_future(f) for f in submitted]
        try:
            results: list[BatchResult] = await asyncio.gather(*waiting)
        except Exception as exc:
            for pending in waiting:
                pending.cancel()
            raise InferenceFailed(f"inference failed for model {version.name!r} version {version.version!r}: {exc}") from exc
        labels = version.labels
        outputs: dict[int, Output] = {}
        for chunk, result in zip(chunks, results, strict=True):
            latency_ms = round(result.run_ms, 3)
            for index, row in zip(chunk, result.outputs, strict=True):
                outputs[index] = Output(scores=dict(zip(labels, map(float, row), strict=True)), latency_ms=latency_ms)
        return [outputs[i] for i in range(len(inputs))]
