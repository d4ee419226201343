"""Continuous batching: one worker thread per model version coalesces queued work.

While a batch runs, new requests queue up; when the worker is free it takes everything
waiting (up to ``max_batch`` inputs) as the next batch. At low load a request runs at once,
with no added wait; under load, batches grow by themselves. Results are batch-invariant, so
an input's output never depends on the requests it was batched with.

The worker is a thread, not an asyncio task, so the batcher works under any event loop
(uvicorn, Mangum, a test's loop) and inference never runs on the loop.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.errors import Overloaded

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchResult:
    """The rows computed for one submission, and the run that computed them."""

    outputs: np.ndarray
    run_ms: float
    batch_size: int


@dataclass
class _Job:
    inputs: Sequence[Any]
    future: Future[BatchResult]


RunFn = Callable[[list[Any]], np.ndarray]
ObserveFn = Callable[[int, float], None]


class ContinuousBatcher:
    """Runs ``run(inputs) -> rows`` on a worker thread, merging submissions that queue up."""

    def __init__(self, run: RunFn, *, max_batch: int, max_queued: int, name: str, observe: ObserveFn | None = None) -> None:
        self._run = run
        self._max_batch = max_batch
        self._max_queued = max_queued
        self._observe = observe
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._queued = 0
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._work, name=f"batcher-{name}", daemon=True)
        self._thread.start()

    @property
    def max_batch(self) -> int:
        return self._max_batch

    def submit(self, inputs: Sequence[Any]) -> Future[BatchResult]:
        """Queue at most ``max_batch`` inputs; raises Overloaded when the queue is full."""
        if not 0 < len(inputs) <= self._max_batch:
            raise ValueError(f"submit between 1 and {self._max_batch} inputs, got {len(inputs)}")
        with self._lock:
            if self._closed:
                raise RuntimeError("batcher is closed")
            if self._queued + len(inputs) > self._max_queued:
                raise Overloaded(f"{self._queued} inputs already queued for this model version (MAX_QUEUED_INPUTS); retry shortly")
            self._queued += len(inputs)
            # Queued under the lock, so a concurrent close() cannot put its sentinel ahead of it.
            job = _Job(inputs, Future())
            self._queue.put(job)
        return job.future

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _take_batch(self, first: _Job, carry: list[_Job]) -> tuple[list[_Job], bool]:
        jobs, size, stop = [first], len(first.inputs), False
        while size < self._max_batch:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                stop = True
                break
            if size + len(job.inputs) > self._max_batch:
                carry.append(job)
                break
            jobs.append(job)
            size += len(job.inputs)
        return jobs, stop

    def _work(self) -> None:
        carry: list[_Job] = []
        stop = False
        while True:
            first = carry.pop() if carry else (None if stop else self._queue.get())
            if first is None:
                return
            jobs, stopping = self._take_batch(first, carry)
            stop = stop or stopping
            self._execute(jobs)

    def _execute(self, jobs: list[_Job]) -> None:
        with self._lock:
            self._queued -= sum(len(job.inputs) for job in jobs)
        # A caller that gave up (e.g. its client disconnected) cancelled its future: skip its inputs.
        jobs = [job for job in jobs if job.future.set_running_or_notify_cancel()]
        if not jobs:
            return
        inputs = [item for job in jobs for item in job.inputs]
        started = time.perf_counter()
        try:
            outputs = self._run(inputs)
        except Exception as exc:  # handed to every waiting caller, who maps it
            logger.exception("batch of %d inputs failed", len(inputs))
            for job in jobs:
                job.future.set_exception(exc)
            return
        run_ms = (time.perf_counter() - started) * 1000.0
        if self._observe is not None:
            try:
                self._observe(len(inputs), run_ms)
            except Exception:  # a metrics failure must not kill the worker
                logger.exception("batch observer failed")
        offset = 0
        for job in jobs:
            rows = outputs[offset : offset + len(job.inputs)]
            offset += len(job.inputs)
            job.future.set_result(BatchResult(outputs=rows, run_ms=run_ms, batch_size=len(inputs)))
