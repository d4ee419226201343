"""Continuous batching over one CPU budget: a pool of model instances shared by every version.

Each loaded version has one queue (``VersionQueue``). The process has one ``ComputePool`` of
``slots`` worker threads: at most that many batches run at once, whichever versions they
belong to, so a canary or an A/B split never oversubscribes the cores. A free worker takes the
queue whose oldest job has waited longest, and from it everything waiting, up to
``max_batch`` inputs. A version runs at most ``instances`` batches at once (the registry's
``instances:``), each on its own worker thread over the version's one session: ONNX Runtime
and ``tokenizers`` release the GIL, so one process uses every core.

At low load a request runs at once, with no added wait; under load, batches grow by
themselves. ``max_delay_ms`` > 0 lets a worker wait that long for a batch to fill. Work whose
caller gave up (a cancelled future: its client went away) or whose deadline passed is dropped
before it runs. Results are batch-invariant: an input's output never depends on the requests
it was batched with.

Workers are threads, not asyncio tasks, so batching works under any event loop (uvicorn,
Mangum, a test's loop) and inference never runs on the loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.errors import DeadlineExceeded, Overloaded

logger = logging.getLogger(__name__)

_CLOSE_TIMEOUT_S = 30.0


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
    enqueued: float
    deadline: float | None


RunFn = Callable[[list[Any]], np.ndarray]
ObserveFn = Callable[[int, float], None]
DepthFn = Callable[[int], None]


@dataclass
class _Picked:
    queue: VersionQueue
    jobs: list[_Job]
    expired: list[_Job] = field(default_factory=list)


class VersionQueue:
    """One version's queue in the pool: ``run(inputs) -> rows`` on the pool's workers."""

    def __init__(
        self,
        pool: ComputePool,
        run: RunFn,
        *,
        name: str,
        max_batch: int,
        max_queued: int,
        instances: int,
        observe: ObserveFn | None = None,
        on_depth: DepthFn | None = None,
    ) -> None:
        self.name = name
        self._pool = pool
        self._run = run
        self._max_batch = max_batch
        self._max_queued = max_queued
        self.instances = max(1, min(instances, pool.slots))
        self._observe = observe
        self._on_depth = on_depth
        # Guarded by the pool's condition:
        self._jobs: deque[_Job] = deque()
        self._queued = 0
        self._running = 0
        self._closed = False

    @property
    def max_batch(self) -> int:
        return self._max_batch

    def submit(self, inputs: Sequence[Any], deadline: float | None = None) -> Future[BatchResult]:
        """Queue at most ``max_batch`` inputs; raises Overloaded when the queue is full.

        ``deadline`` is a ``time.monotonic()`` instant: work still queued then is dropped and its
        future fails with DeadlineExceeded."""
        if not 0 < len(inputs) <= self._max_batch:
            raise ValueError(f"submit between 1 and {self._max_batch} inputs, got {len(inputs)}")
        job = _Job(inputs, Future(), time.monotonic(), deadline)
        with self._pool.condition:
            if self._closed:
                raise RuntimeError("batcher is closed")
            if self._queued + len(inputs) > self._max_queued:
                raise Overloaded(f"{self._queued} inputs already queued for this model version (MAX_QUEUED_INPUTS); retry shortly")
            self._queued += len(inputs)
            self._jobs.append(job)
            depth = self._queued
            self._pool.condition.notify()
        self._report_depth(depth)
        return job.future

    def close(self) -> None:
        """Refuse new work, let what is queued run, then leave the pool."""
        with self._pool.condition:
            self._closed = True
            self._pool.condition.notify_all()
            drained = self._pool.condition.wait_for(lambda: not self._jobs and self._running == 0, timeout=_CLOSE_TIMEOUT_S)
        if not drained:
            logger.warning("batcher %s closed with work still queued or running after %.0f s", self.name, _CLOSE_TIMEOUT_S)
        self._pool.remove(self)

    # -- called by the pool's workers, under its condition ----------------------------------

    def _ready_at(self, now: float, delay_s: float) -> float | None:
        """When this queue's next batch may start (``now`` or later), or None when it cannot."""
        if not self._jobs or self._running >= self.instances:
            return None
        if delay_s <= 0 or self._closed or self._queued >= self._max_batch:
            return now
        return max(now, self._jobs[0].enqueued + delay_s)

    def _oldest(self) -> float:
        return self._jobs[0].enqueued

    def _take(self, now: float, share: int) -> _Picked:
        """Jobs for one batch: at most ``max_batch`` inputs, and about ``share`` of them when
        other instances are free to take the rest at once."""
        picked = _Picked(self, [])
        size = 0
        limit = min(self._max_batch, max(1, share))
        while self._jobs and (size == 0 or size + len(self._jobs[0].inputs) <= limit):
            job = self._jobs.popleft()
            self._queued -= len(job.inputs)
            if job.deadline is not None and job.deadline <= now:
                picked.expired.append(job)
            elif job.future.set_running_or_notify_cancel():  # False: its caller gave up; drop it
                picked.jobs.append(job)
                size += len(job.inputs)
        if picked.jobs:
            self._running += 1
        return picked

    def _finished(self) -> None:
        self._running -= 1

    # -- called by the pool's workers, outside its condition --------------------------------

    def _report_depth(self, depth: int) -> None:
        if self._on_depth is not None:
            try:
                self._on_depth(depth)
            except Exception:  # a metrics failure must not fail a request
                logger.exception("queue depth observer failed")

    def _execute(self, picked: _Picked) -> None:
        self._report_depth(self._queued)
        for job in picked.expired:
            if job.future.set_running_or_notify_cancel():  # False: its caller already gave up
                waited_ms = (time.monotonic() - job.enqueued) * 1000.0
                job.future.set_exception(DeadlineExceeded(f"the request's deadline passed after {waited_ms:.0f} ms in the queue"))
        jobs = picked.jobs
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


class ComputePool:
    """The process's CPU budget: ``slots`` worker threads that run every version's batches."""

    def __init__(self, slots: int, *, max_delay_ms: float = 0.0, name: str = "batcher") -> None:
        if slots < 1:
            raise ValueError(f"a compute pool needs at least one slot, got {slots}")
        self.slots = slots
        self._delay_s = max(0.0, max_delay_ms) / 1000.0
        self.condition = threading.Condition()
        self._queues: list[VersionQueue] = []
        self._closed = False
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(slots)]
        for thread in self._threads:
            thread.start()

    def queue(self, run: RunFn, **options: Any) -> VersionQueue:
        """A new version's queue; ``options`` are ``VersionQueue``'s (name, max_batch, max_queued, instances, ...)."""
        created = VersionQueue(self, run, **options)
        with self.condition:
            if self._closed:
                raise RuntimeError("compute pool is closed")
            self._queues.append(created)
        return created

    def remove(self, queue: VersionQueue) -> None:
        with self.condition:
            if queue in self._queues:
                self._queues.remove(queue)

    def close(self) -> None:
        """Stop the workers once the queued work has run."""
        for queue in list(self._queues):
            queue.close()
        with self.condition:
            self._closed = True
            self.condition.notify_all()
        for thread in self._threads:
            thread.join(timeout=_CLOSE_TIMEOUT_S)

    def _pick(self) -> tuple[_Picked | None, float | None]:
        """The next batch (oldest waiting job first, across versions), else how long to wait."""
        now = time.monotonic()
        best: VersionQueue | None = None
        wake: float | None = None
        for queue in self._queues:
            ready = queue._ready_at(now, self._delay_s)
            if ready is None:
                continue
            if ready > now:
                wake = ready if wake is None else min(wake, ready)
            elif best is None or queue._oldest() < best._oldest():
                best = queue
        if best is not None:
            # Free instances split what is queued, so they all start now instead of one taking everything.
            running = sum(queue._running for queue in self._queues)
            free = min(self.slots - running, best.instances - best._running)
            return best._take(now, share=-(-best._queued // max(1, free))), None
        return None, (None if wake is None else wake - now)

    def _work(self) -> None:
        while True:
            with self.condition:
                while True:
                    picked, wait = self._pick()
                    if picked is not None:
                        break
                    if self._closed:
                        return
                    self.condition.wait(wait)
            try:
                picked.queue._execute(picked)
            except Exception:  # the worker must outlive anything a batch does
                logger.exception("batcher worker: batch of %s failed outside the run", picked.queue.name)
            finally:
                with self.condition:
                    if picked.jobs:
                        picked.queue._finished()
                    # A worker may be waiting for this version's instance cap, or for a drain.
                    self.condition.notify_all()
