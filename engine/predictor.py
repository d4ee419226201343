"""The predictor chain: the step between the facade and the runtime, inputs in, one output row each.

The facade calls one ``Predictor``; a layer such as the result cache wraps another without the
edges or the facade changing. The lifecycle tells the chain when a version is loaded
(``attach``) and unloaded (``detach``), so each layer keeps its own per-version state: the
batching layer a batcher, the cache layer a digest of the version's files.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from engine import tracing
from engine.batcher import BatchResult, ComputePool, PhasesFn, RunFn, VersionQueue
from engine.errors import DeadlineExceeded, InferenceFailed, ModelNotReady, Overloaded
from engine.kinds.base import RunsInPhases, WeighsInputs
from engine.loader import LoadedModel
from engine.metrics import Metrics
from engine.results import Output
from engine.schemas import CacheHealth


class ModelHooks(Protocol):
    """What the lifecycle calls as versions come and go. Both are blocking and called off the event loop."""

    def attach(self, model: LoadedModel) -> None:
        """A version is loaded and warm; it takes traffic once this returns."""
        ...

    def detach(self, model: LoadedModel) -> None:
        """A version is being unloaded: work already queued for it finishes first."""
        ...


class Predictor(ModelHooks, Protocol):
    async def predict(self, model: LoadedModel, inputs: Sequence[Any]) -> list[Output]:
        """One output per input, in input order, from a leased, attached version."""
        ...

    def health(self) -> CacheHealth:
        """The chain's result cache, as /health shows it (``none`` when it has no cache)."""
        ...

    async def invalidate(self, model: str | None, version: str | None) -> int:
        """Forget cached results of a model (and version), or of everything; how many were removed."""
        ...

    async def aclose(self) -> None:
        """Release what belongs to the running event loop (e.g. cache connections)."""
        ...

    def close(self) -> None:
        """Stop the chain's workers; called once every version is detached."""
        ...


BATCH_SHARE_OF_TOKENS = 4
"""A batch holds at most MAX_BATCH_TOKENS / 4 (estimated) tokens, and one job of a request half
of that: a large request runs as many such batches, interleaved with other requests' work, so a
short request waits behind about one of them, not behind the whole large request."""


def chunk(order: Sequence[int], costs: Sequence[float], *, max_inputs: int, max_cost: float) -> list[list[int]]:
    """Consecutive runs of ``order`` of at most ``max_inputs`` indexes and ``max_cost`` (a costlier index goes alone)."""
    chunks: list[list[int]] = []
    current: list[int] = []
    cost = 0.0
    for index in order:
        if current and (len(current) >= max_inputs or cost + costs[index] > max_cost):
            chunks.append(current)
            current, cost = [], 0.0
        current.append(index)
        cost += costs[index]
    if current:
        chunks.append(current)
    return chunks


class BatchedPredictor:
    """The chain's last layer: one queue per loaded version in the process's compute pool.

    A request is split into jobs of at most ``max_batch`` inputs and half a batch's token budget
    (``max_batch_tokens / BATCH_SHARE_OF_TOKENS``), grouped by length first so each batch pads
    little; results return in input order. The queue serves requests in turn, refuses one whose
    wait would pass ``max_queue_ms`` and drops work that waited that long (Overloaded, with a
    retry hint from the drain rate). A request that is not answered within ``timeout_s`` fails
    with DeadlineExceeded, and its work still queued is dropped.
    """

    def __init__(
        self,
        metrics: Metrics,
        pool: ComputePool,
        *,
        max_batch: int,
        max_queued: int,
        timeout_s: float,
        max_queue_ms: float | None = None,
        max_batch_tokens: int | None = None,
    ) -> None:
        self._metrics = metrics
        self._pool = pool
        self._max_batch = max_batch
        self._max_queued = max_queued
        self._timeout_s = timeout_s
        self._max_queue_ms = max_queue_ms
        self._batch_cost = None if max_batch_tokens is None else max(1.0, max_batch_tokens / BATCH_SHARE_OF_TOKENS)
        self._queues: dict[LoadedModel, VersionQueue] = {}

    def attach(self, model: LoadedModel) -> None:
        labels = (model.name, model.version)
        shed = self._metrics.shed_inputs
        runtime = model.runtime
        phased = isinstance(runtime, RunsInPhases)
        run: RunFn = runtime.run_phased if isinstance(runtime, RunsInPhases) else runtime.run  # isinstance again: mypy narrows on it
        self._queues[model] = self._pool.queue(
            run,
            name=f"{model.name}-{model.version}",
            max_batch=self._max_batch,
            max_queued=self._max_queued,
            instances=model.instances or self._pool.slots,
            max_batch_cost=self._batch_cost,
            max_queue_ms=self._max_queue_ms,
            observe=self._observer(model),
            on_depth=self._metrics.queued_inputs.labels(*labels).set,
            on_shed=lambda reason, inputs: shed.labels(*labels, reason).inc(inputs),
            on_wait=self._metrics.queue_wait.labels(*labels).observe,
            on_phases=self._phase_observer(model, phased),
        )

    def detach(self, model: LoadedModel) -> None:
        queue = self._queues.pop(model, None)
        if queue is not None:
            queue.close()
            self._metrics.queued_inputs.labels(model.name, model.version).set(0)

    def close(self) -> None:
        """Stop the pool's workers once queued work has run (after every version is detached)."""
        self._pool.close()

    def _observer(self, model: LoadedModel) -> Callable[[int, float], None]:
        size_metric = self._metrics.batch_size.labels(model.name, model.version)
        latency_metric = self._metrics.batch_latency.labels(model.name, model.version)

        def observe(size: int, run_ms: float) -> None:
            size_metric.observe(size)
            latency_metric.observe(run_ms)

        return observe

    def _phase_observer(self, model: LoadedModel, phased: bool) -> PhasesFn:
        # A kind without a preparation phase (tabular) reports only its run: no empty tokenize series.
        tokenize_metric = self._metrics.batch_phase.labels(model.name, model.version, "tokenize") if phased else None
        run_metric = self._metrics.batch_phase.labels(model.name, model.version, "run")

        def observe(tokenize_ms: float | None, run_ms: float) -> None:
            if tokenize_ms is not None and tokenize_metric is not None:
                tokenize_metric.observe(tokenize_ms)
            run_metric.observe(run_ms)

        return observe

    def _jobs(self, model: LoadedModel, inputs: Sequence[Any]) -> tuple[list[list[int]], list[float]]:
        """The request's jobs (input indexes, cheapest first) and each job's cost."""
        runtime = model.runtime
        costs = [1.0] * len(inputs)
        if isinstance(runtime, WeighsInputs):
            costs = [float(runtime.input_cost(item)) for item in inputs]
        order = sorted(range(len(inputs)), key=costs.__getitem__)
        job_cost = math.inf if self._batch_cost is None else self._batch_cost / 2
        chunks = chunk(order, costs, max_inputs=self._max_batch, max_cost=job_cost)
        return chunks, [sum(costs[i] for i in c) for c in chunks]

    async def predict(self, model: LoadedModel, inputs: Sequence[Any]) -> list[Output]:
        queue = self._queues.get(model)
        if queue is None:
            raise ModelNotReady(f"model {model.name!r} version {model.version!r} is not loaded")
        chunks, costs = self._jobs(model, inputs)
        deadline = time.monotonic() + self._timeout_s
        # All or nothing: a full or overloaded queue refuses the whole request (Overloaded).
        submitted = queue.submit_many([[inputs[i] for i in c] for c in chunks], deadline=deadline, costs=costs)
        waiting = [asyncio.wrap_future(f) for f in submitted]
        try:
            async with asyncio.timeout(self._timeout_s):
                results: list[BatchResult] = await asyncio.gather(*waiting)
        except TimeoutError:
            raise DeadlineExceeded(
                f"no answer from model {model.name!r} version {model.version!r} within {self._timeout_s * 1000:.0f} ms (REQUEST_TIMEOUT_MS)"
            ) from None
        except Overloaded:  # its work was dropped in the queue (MAX_QUEUE_MS, REQUEST_TIMEOUT_MS)
            raise
        except Exception as exc:
            raise InferenceFailed(f"inference failed for model {model.name!r} version {model.version!r}: {exc}") from exc
        finally:
            for pending in waiting:  # a caller that left (cancelled, timed out, failed) drops its queued work
                pending.cancel()
        tracing.batch_spans(results)
        outputs: dict[int, Output] = {}
        for indexes, result in zip(chunks, results, strict=True):
            latency_ms = round(result.run_ms, 3)
            for index, row in zip(indexes, result.outputs, strict=True):
                outputs[index] = Output(row=row, latency_ms=latency_ms)
        return [outputs[i] for i in range(len(inputs))]

    def health(self) -> CacheHealth:
        return CacheHealth(backend="none", state="ok")

    async def invalidate(self, model: str | None, version: str | None) -> int:
        return 0

    async def aclose(self) -> None:
        return None
