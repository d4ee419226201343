"""Continuous batching over one CPU budget: a pool of model instances shared by every version.

Each loaded version has one queue (``VersionQueue``). The process has one ``ComputePool`` of
``slots`` worker threads: at most that many batches run at once, whichever versions they
belong to, so a canary or an A/B split never oversubscribes the cores. A free worker takes the
queue whose work has waited longest, and from it a batch of at most ``max_batch`` inputs (and
at most ``max_batch_cost``, e.g. padded tokens). A version runs at most ``instances`` batches at
once (the registry's ``instances:``), each on its own worker thread over the version's one
session: ONNX Runtime and ``tokenizers`` release the GIL, so one process uses every core.

A request is one *stream* of jobs (``submit_many``). A batch takes one job per stream in turn,
the stream that waited longest since its last progress first, so a large request runs as many
small batches interleaved with everyone else's work and a single-text request waits behind
about one batch, never behind a whole large request.

At low load a request runs at once, with no added wait; under load, batches grow by
themselves. ``max_delay_ms`` > 0 lets a worker wait that long for a batch to fill. Work is
dropped before it runs when its caller gave up (a cancelled future: its client went away), its
deadline passed (DeadlineExceeded), or its stream waited ``max_queue_ms`` without progress
(Overloaded). A request is refused at once (Overloaded, with a ``retry_after_s``) when the
queue is full (``max_queued`` inputs) or when, at the measured drain rate, the work ahead of it
would keep it waiting longer than ``max_queue_ms``. Sheds are counted (``on_shed``), not logged.

A batch that fails is split in halves and each half retried, down to single jobs, so one input
the runtime cannot take fails only its own request. Results are batch-invariant: an input's
output never depends on the requests it was batched with.

Workers are threads, not asyncio tasks, so batching works under any event loop (uvicorn,
Mangum, a test's loop) and inference never runs on the loop.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.errors import DeadlineExceeded, Overloaded
from engine.throttled_log import ThrottledLog

logger = logging.getLogger(__name__)

_CLOSE_TIMEOUT_S = 30.0
_RATE_SMOOTHING = 0.2  # weight of the newest batch in the drain-rate average
_FAILURE_LOG_INTERVAL_S = 10.0
_MAX_SKIPPED = 64  # streams a batch looks past for one that still fits, before it stops looking

SHED_REASONS = ("queue_full", "queue_wait", "queue_timeout", "deadline", "cancelled")
"""Why work was shed: the queue's input bound, the estimated wait at admission, the wait in the
queue (``max_queue_ms``), the request's deadline, or the caller gone."""


@dataclass(frozen=True, slots=True)
class BatchResult:
    """The rows computed for one submission, and the run that computed them. The instants are
    ``time.monotonic()`` readings: a request draws its trace spans from them (``engine.tracing``)."""

    outputs: np.ndarray
    run_ms: float
    batch_size: int
    enqueued: float
    """When the job was queued."""
    started: float
    """When the batch that ran it started."""
    prepared: float | None
    """When the batch's inputs were prepared (texts tokenised); None for a kind without that phase."""
    ended: float
    """When the batch's run ended."""


@dataclass
class _Stream:
    """One request's queued jobs. ``progressed`` is when it arrived or a batch with a job of it
    last finished; while one runs (``running``), the request is making progress."""

    jobs: deque[_Job]
    progressed: float
    cost: float
    running: int = 0


@dataclass
class _Job:
    inputs: Sequence[Any]
    future: Future[BatchResult]
    enqueued: float
    deadline: float | None
    cost: float
    stream: _Stream | None = None


RunFn = Callable[[list[Any]], np.ndarray | tuple[np.ndarray, float]]
"""Output rows for the inputs; or the rows and the ``time.monotonic()`` instant the inputs were
prepared (texts tokenised), for a kind that splits its run in those two phases."""
ObserveFn = Callable[[int, float], None]
PhasesFn = Callable[[float | None, float], None]
"""Called once per batch with its preparation (tokenisation) time, None for a kind without that
phase, and its run time, in milliseconds."""
DepthFn = Callable[[int], None]
ShedFn = Callable[[str, int], None]
WaitFn = Callable[[float], None]


@dataclass
class _Picked:
    queue: VersionQueue
    jobs: list[_Job]
    dropped: list[tuple[_Job, Exception]] = field(default_factory=list)
    cancelled: int = 0
    size: int = 0
    cost: float = 0.0
    backlog: bool = False  # work was left queued: the batch shows what an instance drains under load


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
        max_batch_cost: float | None = None,
        max_queue_ms: float | None = None,
        observe: ObserveFn | None = None,
        on_depth: DepthFn | None = None,
        on_shed: ShedFn | None = None,
        on_wait: WaitFn | None = None,
        on_phases: PhasesFn | None = None,
    ) -> None:
        self.name = name
        self._pool = pool
        self._run = run
        self._max_batch = max_batch
        self._max_queued = max_queued
        self._max_cost = max_batch_cost if max_batch_cost is not None else math.inf
        self._max_queue_s = max_queue_ms / 1000.0 if max_queue_ms is not None else None
        self.instances = max(1, min(instances, pool.slots))
        self._observe = observe
        self._on_depth = on_depth
        self._on_shed = on_shed
        self._on_wait = on_wait
        self._on_phases = on_phases
        self._failures = ThrottledLog(logger, _FAILURE_LOG_INTERVAL_S)
        # Guarded by the pool's condition:
        self._streams: deque[_Stream] = deque()
        self._queued = 0
        self._queued_cost = 0.0
        self._running = 0
        self._closed = False
        self._rate: float | None = None  # cost one instance drains per second (moving average)

    @property
    def max_batch(self) -> int:
        return self._max_batch

    @property
    def drain_rate(self) -> float | None:
        """Cost per second this version drains with all its instances busy, as measured on batches
        taken while more work waited; None before such a batch ran (nothing is refused on it then)."""
        return None if self._rate is None else self._rate * self.instances

    def submit(self, inputs: Sequence[Any], deadline: float | None = None, cost: float | None = None) -> Future[BatchResult]:
        """Queue one job of at most ``max_batch`` inputs (a request of its own); see ``submit_many``."""
        return self.submit_many([inputs], deadline=deadline, costs=None if cost is None else [cost])[0]

    def submit_many(
        self, jobs: Sequence[Sequence[Any]], deadline: float | None = None, costs: Sequence[float] | None = None
    ) -> list[Future[BatchResult]]:
        """Queue one request's jobs (each of 1 to ``max_batch`` inputs), all or none.

        ``costs`` are the jobs' costs in the unit of ``max_batch_cost`` (default: their input
        counts). ``deadline`` is a ``time.monotonic()`` instant: work still queued then is dropped
        and its future fails with DeadlineExceeded. Raises Overloaded, with ``retry_after_s``,
        when the queue is full or the wait ahead is over ``max_queue_ms``."""
        if not jobs:
            raise ValueError("submit at least one job")
        for inputs in jobs:
            if not 0 < len(inputs) <= self._max_batch:
                raise ValueError(f"submit between 1 and {self._max_batch} inputs, got {len(inputs)}")
        job_costs = [float(len(inputs)) for inputs in jobs] if costs is None else [float(c) for c in costs]
        now = time.monotonic()
        count = sum(len(inputs) for inputs in jobs)
        total = sum(job_costs)
        stream = _Stream(deque(), now, total)
        queued = [_Job(inputs, Future(), now, deadline, cost, stream) for inputs, cost in zip(jobs, job_costs, strict=True)]
        stream.jobs.extend(queued)
        with self._pool.condition:
            if self._closed:
                raise RuntimeError("batcher is closed")
            refused = self._refusal(count, total)
            if refused is None:
                self._queued += count
                self._queued_cost += total
                self._streams.append(stream)
                depth = self._queued
                self._pool.condition.notify()
        if refused is not None:
            self._shed(refused[0], count)
            raise refused[1]
        self._report_depth(depth)
        return [job.future for job in queued]

    def _refusal(self, count: int, cost: float) -> tuple[str, Overloaded] | None:
        """Why a request of ``count`` inputs costing ``cost`` is refused now, if it is (under the condition)."""
        rate = self.drain_rate
        if self._queued + count > self._max_queued:
            retry = None if rate is None else self._queued_cost / rate
            message = f"{self._queued} inputs already queued for this model version (MAX_QUEUED_INPUTS); retry shortly"
            return "queue_full", Overloaded(message, retry_after_s=retry)
        if rate is None or self._max_queue_s is None or not self._streams:
            return None
        # Each queued request is served one job per turn, like this one: until this one is done,
        # each other request gets about as much as this one needs, or all it has left.
        wait_s = sum(min(stream.cost, cost) for stream in self._streams) / rate
        if wait_s <= self._max_queue_s:
            return None
        message = (
            f"about {wait_s * 1000:.0f} ms of work is queued ahead of this request for this model version, "
            f"over the {self._max_queue_s * 1000:.0f} ms limit (MAX_QUEUE_MS); retry later"
        )
        return "queue_wait", Overloaded(message, retry_after_s=wait_s - self._max_queue_s)

    def close(self) -> None:
        """Refuse new work, let what is queued run, then leave the pool."""
        with self._pool.condition:
            self._closed = True
            self._pool.condition.notify_all()
            drained = self._pool.condition.wait_for(lambda: not self._streams and self._running == 0, timeout=_CLOSE_TIMEOUT_S)
        if not drained:
            logger.warning("batcher %s closed with work still queued or running after %.0f s", self.name, _CLOSE_TIMEOUT_S)
        self._pool.remove(self)

    # -- called by the pool's workers, under its condition ----------------------------------

    def _ready_at(self, now: float, delay_s: float) -> float | None:
        """When this queue's next batch may start (``now`` or later), or None when it cannot."""
        if not self._streams or self._running >= self.instances:
            return None
        if delay_s <= 0 or self._closed or self._queued >= self._max_batch:
            return now
        return max(now, self._streams[0].jobs[0].enqueued + delay_s)

    def _oldest(self) -> float:
        return self._streams[0].progressed

    def _dequeue(self, stream: _Stream, job: _Job) -> None:
        stream.jobs.popleft()
        stream.cost -= job.cost
        self._queued -= len(job.inputs)
        self._queued_cost -= job.cost

    def _drop_stale(self, stream: _Stream, now: float, picked: _Picked) -> None:
        """Drop a stream's leading jobs that must not run: the caller left, the deadline or the queue time passed."""
        stale = self._max_queue_s is not None and stream.running == 0 and now - stream.progressed >= self._max_queue_s
        while stream.jobs:
            job = stream.jobs[0]
            if job.future.cancelled():
                picked.cancelled += len(job.inputs)
            elif job.deadline is not None and job.deadline <= now:
                waited_ms = (now - job.enqueued) * 1000.0
                picked.dropped.append((job, DeadlineExceeded(f"the request's deadline passed after {waited_ms:.0f} ms in the queue")))
            elif stale:
                waited_ms = (now - stream.progressed) * 1000.0
                rate = self.drain_rate
                retry = None if rate is None else max(0.0, self._queued_cost / rate - (self._max_queue_s or 0.0))
                message = f"the request's work waited {waited_ms:.0f} ms in the queue (MAX_QUEUE_MS); retry later"
                picked.dropped.append((job, Overloaded(message, retry_after_s=retry)))
            else:
                return
            self._dequeue(stream, job)

    def _take(self, now: float, share: int) -> _Picked:
        """Jobs for one batch: one per stream in turn, longest-waiting stream first, up to
        ``max_batch`` inputs (about ``share`` when other instances are free to take the rest at
        once) and ``max_batch_cost``."""
        picked = _Picked(self, [])
        limit = min(self._max_batch, max(1, share))
        served: list[_Stream] = []
        kept: list[_Stream] = []  # streams this batch looked at but did not serve, in their order
        skipped = 0
        while self._streams and not self._full(picked, limit) and skipped < _MAX_SKIPPED:
            stream = self._streams.popleft()
            self._drop_stale(stream, now, picked)
            if not stream.jobs:
                continue
            if self._offer(stream, picked, limit):
                served.append(stream)
            else:
                kept.append(stream)
                skipped += 1
        self._streams.extendleft(reversed(kept))
        # Room left: the streams served take one more job each, in turn, while they fit.
        more = served
        while more and not self._full(picked, limit):
            more = [stream for stream in more if stream.jobs and self._offer(stream, picked, limit)]
        for job in picked.jobs:
            if job.stream is not None:
                job.stream.running += 1
        # Served streams with work left go to the back: every other stream waited longer than they did.
        self._streams.extend(stream for stream in served if stream.jobs)
        picked.backlog = bool(self._streams)
        if picked.jobs:
            self._running += 1
        return picked

    def _full(self, picked: _Picked, limit: int) -> bool:
        return picked.size >= limit or picked.cost >= self._max_cost

    def _offer(self, stream: _Stream, picked: _Picked, limit: int) -> bool:
        """Take the stream's next job into the batch if it fits (a first job always does); whether it left the queue."""
        job = stream.jobs[0]
        if picked.jobs and (picked.size + len(job.inputs) > limit or picked.cost + job.cost > self._max_cost):
            return False
        self._dequeue(stream, job)
        if not job.future.set_running_or_notify_cancel():  # its caller gave up: drop it
            picked.cancelled += len(job.inputs)
            return True
        picked.jobs.append(job)
        picked.size += len(job.inputs)
        picked.cost += job.cost
        return True

    def _finished(self, picked: _Picked) -> None:
        self._running -= 1
        now = time.monotonic()
        for job in picked.jobs:
            if job.stream is not None:
                job.stream.running -= 1
                job.stream.progressed = now

    # -- called by the pool's workers, outside its condition --------------------------------

    def _report_depth(self, depth: int) -> None:
        if self._on_depth is not None:
            try:
                self._on_depth(depth)
            except Exception:  # a metrics failure must not fail a request
                logger.exception("queue depth observer failed")

    def _shed(self, reason: str, inputs: int) -> None:
        if self._on_shed is not None and inputs:
            try:
                self._on_shed(reason, inputs)
            except Exception:  # a metrics failure must not fail a request
                logger.exception("shed observer failed")

    def _execute(self, picked: _Picked) -> None:
        self._report_depth(self._queued)
        self._shed("cancelled", picked.cancelled)
        for job, error in picked.dropped:
            self._shed("deadline" if isinstance(error, DeadlineExceeded) else "queue_timeout", len(job.inputs))
            if job.future.set_running_or_notify_cancel():  # False: its caller already gave up
                job.future.set_exception(error)
        if not picked.jobs:
            return
        if self._on_wait is not None:
            started = time.monotonic()
            try:
                for job in picked.jobs:
                    self._on_wait((started - job.enqueued) * 1000.0)
            except Exception:  # a metrics failure must not fail a request
                logger.exception("queue wait observer failed")
        self._run_jobs(picked.jobs, measure=picked.backlog)

    def _run_jobs(self, jobs: list[_Job], *, measure: bool = False) -> None:
        """Run jobs as one batch; if it fails, run each half on its own, so only a failing job fails."""
        inputs = [item for job in jobs for item in job.inputs]
        started = time.monotonic()
        try:
            ran = self._run(inputs)
        except Exception as exc:
            if len(jobs) > 1:
                middle = len(jobs) // 2
                self._run_jobs(jobs[:middle])
                self._run_jobs(jobs[middle:])
                return
            self._failures.log(
                logging.ERROR, "job", "batcher %s: a job of %d inputs failed on its own", self.name, len(inputs), exc_info=True
            )
            jobs[0].future.set_exception(exc)  # its caller maps it
            return
        ended = time.monotonic()
        outputs, prepared = ran if isinstance(ran, tuple) else (ran, None)
        run_s = ended - started
        if measure:  # a batch taken from a backlog: small batches of an idle queue would understate the rate
            self._measured(sum(job.cost for job in jobs), run_s)
        if self._observe is not None or self._on_phases is not None:
            try:
                if self._observe is not None:
                    self._observe(len(inputs), run_s * 1000.0)
                if self._on_phases is not None:
                    if prepared is None:
                        self._on_phases(None, run_s * 1000.0)
                    else:
                        self._on_phases((prepared - started) * 1000.0, (ended - prepared) * 1000.0)
            except Exception:  # a metrics failure must not kill the worker
                logger.exception("batch observer failed")
        offset = 0
        for job in jobs:
            rows = outputs[offset : offset + len(job.inputs)]
            offset += len(job.inputs)
            result = BatchResult(rows, run_s * 1000.0, len(inputs), job.enqueued, started, prepared, ended)
            job.future.set_result(result)

    def _measured(self, cost: float, run_s: float) -> None:
        if run_s <= 0:
            return
        sample = cost / run_s
        with self._pool.condition:
            self._rate = sample if self._rate is None else (1 - _RATE_SMOOTHING) * self._rate + _RATE_SMOOTHING * sample


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
        """The next batch (longest-waiting work first, across versions), else how long to wait."""
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
                        picked.queue._finished(picked)
                    # A worker may be waiting for this version's instance cap, or for a drain.
                    self.condition.notify_all()
