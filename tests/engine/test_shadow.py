"""The shadow runner's bookkeeping: agreement, failures and time-outs are counted, never raised.

The model-backed cases (a real v2 shadow, a shadow failing inside ONNX Runtime) are in
tests/engine/test_facade_rollout.py; here the shadow's outputs are given directly.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from engine.kinds.base import argmax_agrees
from engine.metrics import Metrics
from engine.results import Output, top_label
from engine.shadow import ShadowJob, ShadowRunner

LABELS = {"model": "m", "primary_version": "v1", "shadow_version": "v2"}
COLUMNS = ("a", "b", "c")


def _row(top: str) -> np.ndarray:
    return np.array([0.9 if label == top else 0.05 for label in COLUMNS], dtype=np.float32)


def _outputs(*tops: str) -> list[Output]:
    return [Output(row=_row(top), latency_ms=1.0) for top in tops]


def _job(run: object, predictions: list[str]) -> ShadowJob:
    rows = [_row(top) for top in predictions]
    return ShadowJob(model="m", primary="v1", shadow="v2", rows=rows, agrees=argmax_agrees, run=run)  # type: ignore[arg-type]


def test_top_label() -> None:
    assert top_label({"a": 0.2, "b": 0.7, "c": 0.1}) == "b"


def test_inline_agreement_is_counted() -> None:
    metrics = Metrics()

    async def run() -> list[Output]:
        return _outputs("a", "b", "c")

    asyncio.run(ShadowRunner(metrics, mode="inline", timeout_ms=1000).submit(_job(run, ["a", "b", "a"])))
    assert metrics.registry.get_sample_value("shadow_predictions_total", {**LABELS, "agreement": "agree"}) == 2
    assert metrics.registry.get_sample_value("shadow_predictions_total", {**LABELS, "agreement": "disagree"}) == 1


@pytest.mark.parametrize(("mode", "reason"), [("inline", "error"), ("background", "error"), ("inline", "timeout")])
def test_failures_are_counted_not_raised(mode: str, reason: str) -> None:
    metrics = Metrics()
    runner = ShadowRunner(metrics, mode=mode, timeout_ms=50)  # type: ignore[arg-type]

    async def run() -> list[Output]:
        if reason == "timeout":
            await asyncio.sleep(5)
        raise RuntimeError("shadow broke")

    async def scenario() -> None:
        await runner.submit(_job(run, ["a"]))
        await runner.drain(timeout_s=5)

    asyncio.run(scenario())
    assert metrics.registry.get_sample_value("shadow_failures_total", {"model": "m", "shadow_version": "v2", "reason": reason}) == 1


def test_background_returns_before_the_shadow_finishes() -> None:
    metrics = Metrics()
    runner = ShadowRunner(metrics, mode="background", timeout_ms=5000)
    release = asyncio.Event()

    async def run() -> list[Output]:
        await release.wait()
        return _outputs("a")

    async def scenario() -> float | None:
        await runner.submit(_job(run, ["a"]))
        before = metrics.registry.get_sample_value("shadow_predictions_total", {**LABELS, "agreement": "agree"})
        release.set()
        await runner.drain(timeout_s=5)
        return before

    assert asyncio.run(scenario()) is None  # nothing recorded when submit returned
    assert metrics.registry.get_sample_value("shadow_predictions_total", {**LABELS, "agreement": "agree"}) == 1
