"""The predictor chain: the step between the facade and the runtime, inputs in, one output row each.

The facade calls one ``Predictor``; a layer such as the result cache wraps another without the
edges or the facade changing. The lifecycle tells the chain when a version is loaded
(``attach``) and unloaded (``detach``), so each layer keeps its own per-version state: the
batching layer a batcher, the cache layer a digest of the version's files.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from engine.batcher import BatchResult, ComputePool, VersionQueue
from engine.errors import DeadlineExceeded, InferenceFailed, ModelNotReady
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


def _size(item: Any) -> int:
    return len(item) if isinstance(item, str) else 0


class BatchedPredictor:
    """The chain's last layer: one queue per loaded version in the process's compute pool.

    A request is split into runtime batches of at most ``max_batch`` inputs, grouped by length
    first so each batch pads little; results return in input order. A request that is not
    answered within ``timeout_s`` fails with DeadlineExceeded, and its work still queued is dropped.
    """

    def __init__(self, metrics: Metrics, pool: ComputePool, *, max_batch: int, max_queued: int, timeout_s: float) -> None:
        self._metrics = metrics
        self._pool = pool
        self._max_batch = max_batch
        self._max_queued = max_queued
        self._timeout_s = timeout_s
        self._queues: dict[LoadedModel, VersionQueue] = {}

    def attach(self, model: LoadedModel) -> None:
        self._queues[model] = self._pool.queue(
            model.runtime.run,
            name=f"{model.name}-{model.version}",
            max_batch=self._max_batch,
            max_queued=self._max_queued,
            instances=model.instances or self._pool.slots,
            observe=self._observer(model),
            on_depth=self._metrics.queued_inputs.labels(model.name, model.version).set,
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

    async def predict(self, model: LoadedModel, inputs: Sequence[Any]) -> list[Output]:
        queue = self._queues.get(model)
        if queue is None:
            raise ModelNotReady(f"model {model.name!r} version {model.version!r} is not loaded")
        order = sorted(range(len(inputs)), key=lambda i: _size(inputs[i]))
        chunks = [order[i : i + self._max_batch] for i in range(0, len(order), self._max_batch)]
        deadline = time.monotonic() + self._timeout_s
        submitted = []
        try:
            for chunk in chunks:
                submitted.append(queue.submit([inputs[i] for i in chunk], deadline=deadline))
        except Exception:
            for future in submitted:  # all or nothing: an overloaded queue refuses the whole request
                future.cancel()
            raise
        waiting = [asyncio.wrap_future(f) for f in submitted]
        try:
            async with asyncio.timeout(self._timeout_s):
                results: list[BatchResult] = await asyncio.gather(*waiting)
        except TimeoutError:
            raise DeadlineExceeded(
                f"no answer from model {model.name!r} version {model.version!r} within {self._timeout_s * 1000:.0f} ms (REQUEST_TIMEOUT_MS)"
            ) from None
        except DeadlineExceeded:
            raise
        except Exception as exc:
            raise InferenceFailed(f"inference failed for model {model.name!r} version {model.version!r}: {exc}") from exc
        finally:
            for pending in waiting:  # a caller that left (cancelled, timed out, failed) drops its queued work
                pending.cancel()
        outputs: dict[int, Output] = {}
        for chunk, result in zip(chunks, results, strict=True):
            latency_ms = round(result.run_ms, 3)
            for index, row in zip(chunk, result.outputs, strict=True):
                outputs[index] = Output(row=row, latency_ms=latency_ms)
        return [outputs[i] for i in range(len(inputs))]

    def health(self) -> CacheHealth:
        return CacheHealth(backend="none", state="ok")

    async def invalidate(self, model: str | None, version: str | None) -> int:
        return 0

    async def aclose(self) -> None:
        return None
