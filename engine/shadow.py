"""Shadow runs: a second version answers the same inputs, out of the client's sight.

The primary's reply never waits on a background shadow, and a shadow's failure or slowness
never reaches the client: it is counted and logged. Inline mode (Lambda, where nothing runs
after the invocation returns) runs the shadow before the reply, within its time budget.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from engine import tracing
from engine.metrics import Metrics
from engine.results import Output

logger = logging.getLogger(__name__)

ShadowRun = Callable[[], Awaitable[list[Output]]]


@dataclass(frozen=True)
class ShadowJob:
    model: str
    primary: str
    shadow: str
    rows: Sequence[np.ndarray]
    """The primary's output row for each input."""
    agrees: Callable[[np.ndarray, np.ndarray], bool]
    """The model kind's test of whether a shadow row says the same as the primary's."""
    run: ShadowRun
    """Computes the shadow's outputs for the request's inputs."""


class ShadowRunner:
    def __init__(self, metrics: Metrics, *, mode: Literal["background", "inline"], timeout_ms: int) -> None:
        self._metrics = metrics
        self._mode = mode
        self._timeout_ms = timeout_ms
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, job: ShadowJob) -> None:
        """Inline: run it now. Background: start it and return at once."""
        if self._mode == "inline":
            await self._run(job)
            return
        task = asyncio.create_task(self._run(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, job: ShadowJob) -> None:
        """Run the shadow and record its agreement with the primary (as the kind defines it). Never raises."""
        with tracing.span("shadow") as span:
            if span.is_recording():
                attributes = {"model.name": job.model, "model.version": job.shadow, "shadow.primary_version": job.primary}
                tracing.set_attributes(span, attributes)
            await self._run_traced(job, span)

    async def _run_traced(self, job: ShadowJob, span: tracing.SpanLike) -> None:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout_ms / 1000.0):
                outputs = await job.run()
        except TimeoutError:
            self._metrics.shadow_failures.labels(job.model, job.shadow, "timeout").inc()
            logger.warning("shadow model=%s version=%s timed out after %d ms", job.model, job.shadow, self._timeout_ms)
            tracing.set_error(span, f"timed out after {self._timeout_ms} ms (SHADOW_TIMEOUT_MS)")
            return
        except Exception as exc:  # a shadow failure must never reach the client
            self._metrics.shadow_failures.labels(job.model, job.shadow, "error").inc()
            logger.warning("shadow model=%s version=%s failed: %s: %s", job.model, job.shadow, type(exc).__name__, exc)
            tracing.set_error(span, f"{type(exc).__name__}: {exc}")
            return
        agree = sum(job.agrees(row, out.row) for row, out in zip(job.rows, outputs, strict=True))
        self._metrics.shadow_predictions.labels(job.model, job.primary, job.shadow, "agree").inc(agree)
        self._metrics.shadow_predictions.labels(job.model, job.primary, job.shadow, "disagree").inc(len(job.rows) - agree)
        span.set_attribute("shadow.agreed", agree)
        logger.info(
            "shadow model=%s primary=%s shadow=%s agreement=%d/%d latency_ms=%.1f",
            job.model,
            job.primary,
            job.shadow,
            agree,
            len(job.rows),
            (time.perf_counter() - started) * 1000.0,
        )

    async def drain(self, timeout_s: float) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout_s)

    def cancel(self) -> None:
        for task in list(self._tasks):
            task.cancel()
