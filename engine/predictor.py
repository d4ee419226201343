"""The step between the facade and the runtime: texts in, per-text scores out.

The facade calls a ``Predictor``; layers such as a result cache wrap one ``Predictor`` in
another without the edges or the facade changing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from engine.batcher import BatchResult
from engine.errors import InferenceFailed, ModelNotReady
from engine.repository import ModelVersion


@dataclass(frozen=True)
class TextOutput:
    scores: dict[str, float]
    latency_ms: float


class Predictor(Protocol):
    async def predict(self, version: ModelVersion, texts: Sequence[str]) -> list[TextOutput]:
        """Scores for each text, in input order, from the given (READY) version."""
        ...


class BatchedPredictor:
    """Splits a request into runtime batches and submits them to the version's batcher.

    Texts are grouped by length first, so each batch pads little; results return in input order.
    """

    async def predict(self, version: ModelVersion, texts: Sequence[str]) -> list[TextOutput]:
        batcher = version.batcher
        if batcher is None:
            raise ModelNotReady(f"model {version.name!r} version {version.version!r} is not loaded")
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        chunks = [order[i : i + batcher.max_batch] for i in range(0, len(order), batcher.max_batch)]
        submitted = []
        try:
            for chunk in chunks:
                submitted.append(batcher.submit([texts[i] for i in chunk]))
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
        outputs: dict[int, TextOutput] = {}
        for chunk, result in zip(chunks, results, strict=True):
            latency_ms = round(result.run_ms, 3)
            for index, row in zip(chunk, result.outputs, strict=True):
                outputs[index] = TextOutput(scores=dict(zip(labels, map(float, row), strict=True)), latency_ms=latency_ms)
        return [outputs[i] for i in range(len(texts))]
