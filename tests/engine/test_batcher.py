"""engine/batcher.py: continuous batching on a compute pool, over the real v1 model.

Where a test needs work to pile up behind a running batch, the run function waits at a
gate (a threading.Event the test opens) before calling the real model.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

import numpy as np
import pytest

from engine.batcher import BatchResult, ComputePool, RunFn, VersionQueue
from engine.errors import DeadlineExceeded, EngineError, Overloaded
from engine.kinds import ModelFiles
from engine.kinds.text_classification import TextClassifier
from engine.session import SessionConfig
from tests.conftest import V1_DIR, require_models

TIMEOUT = 60
TEXTS = [
    "An absolute triumph, I loved every minute.",
    "Dull, lifeless and far too long.",
    "The film follows a detective in 1940s Los Angeles.",
    "fine",
    "Not the worst thing I have seen this year, but close.",
    "A warm, funny and surprisingly moving story about family.",
    "The plot makes no sense and the acting is wooden.",
    "Two brothers travel across the country to find their father.",
]


@pytest.fixture(scope="module")
def classifier() -> TextClassifier:
    require_models()
    return TextClassifier(ModelFiles(V1_DIR / "model.onnx"), SessionConfig())


@pytest.fixture(scope="module")
def alone(classifier: TextClassifier) -> dict[str, np.ndarray]:
    """Each text's probabilities when run by itself."""
    return {text: classifier.run([text])[0] for text in TEXTS}


class Observed:
    """The observe callback: records the size and run time of every batch."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.run_ms: list[float] = []
        self._lock = threading.Lock()

    def __call__(self, size: int, run_ms: float) -> None:
        with self._lock:
            self.batches.append(size)
            self.run_ms.append(run_ms)


class GatedRun:
    """Runs the real model, but no batch starts before the test opens the gate."""

    def __init__(self, classifier: TextClassifier) -> None:
        self.classifier = classifier
        self.entered = threading.Event()
        self.gate = threading.Event()

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.entered.set()
        assert self.gate.wait(TIMEOUT), "test never opened the gate"
        return self.classifier.run(texts)


MakeBatcher = Callable[..., VersionQueue]


@pytest.fixture
def make_batcher() -> Iterator[MakeBatcher]:
    """Creates a version queue, each on a pool of its own (``slots``, default 1), and closes them
    after the test, even when it fails."""
    pools: list[ComputePool] = []

    def make(run: RunFn, *, slots: int = 1, max_delay_ms: float = 0.0, **kwargs: Any) -> VersionQueue:
        pool = ComputePool(slots, max_delay_ms=max_delay_ms, name=f"batcher-{kwargs['name']}")
        pools.append(pool)
        kwargs.setdefault("instances", slots)
        return pool.queue(run, **kwargs)

    yield make
    for pool in pools:
        pool.close()


def _result(future: Future[BatchResult]) -> BatchResult:
    return future.result(timeout=TIMEOUT)


def _batcher_threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(f"{name}-") and t.is_alive()]


def test_results_are_in_order_and_equal_to_each_text_alone(
    classifier: TextClassifier, alone: dict[str, np.ndarray], make_batcher: MakeBatcher
) -> None:
    batcher = make_batcher(classifier.run, max_batch=8, max_queued=64, name="order")
    result = _result(batcher.submit(TEXTS))
    assert result.outputs.shape == (len(TEXTS), 3)
    assert result.batch_size == len(TEXTS)
    assert result.run_ms > 0
    for row, text in zip(result.outputs, TEXTS, strict=True):
        np.testing.assert_allclose(row, alone[text], atol=1e-4)
    # Reversed order gives the rows reversed.
    reversed_rows = _result(batcher.submit(TEXTS[::-1])).outputs
    np.testing.assert_allclose(reversed_rows, result.outputs[::-1], atol=1e-4)


def test_concurrent_submissions_are_coalesced_and_each_gets_its_own_rows(
    classifier: TextClassifier, alone: dict[str, np.ndarray], make_batcher: MakeBatcher
) -> None:
    observed = Observed()
    run = GatedRun(classifier)
    batcher = make_batcher(run, max_batch=64, max_queued=256, name="coalesce", observe=observed)
    jobs = 64
    start = threading.Barrier(jobs)
    futures: list[Future[BatchResult] | None] = [None] * jobs
    texts = [TEXTS[i % len(TEXTS)] for i in range(jobs)]

    def submit(i: int) -> None:
        start.wait(TIMEOUT)
        futures[i] = batcher.submit([texts[i]])

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    run.gate.set()

    assert all(f is not None for f in futures)
    results = [_result(f) for f in futures if f is not None]
    for text, result in zip(texts, results, strict=True):
        assert result.outputs.shape == (1, 3)
        np.testing.assert_allclose(result.outputs[0], alone[text], atol=1e-4)
    assert sum(observed.batches) == jobs
    assert max(observed.batches) > 1
    assert len(observed.batches) < jobs
    assert max(r.batch_size for r in results) == max(observed.batches)


def test_max_batch_is_respected(classifier: TextClassifier, alone: dict[str, np.ndarray], make_batcher: MakeBatcher) -> None:
    observed = Observed()
    run = GatedRun(classifier)
    batcher = make_batcher(run, max_batch=5, max_queued=1000, name="maxbatch", observe=observed)
    submissions = [TEXTS[: 1 + i % 3] for i in range(40)]  # jobs of 1, 2 and 3 texts
    futures = [batcher.submit(texts) for texts in submissions]
    run.gate.set()
    for texts, future in zip(submissions, futures, strict=True):
        result = _result(future)
        assert result.batch_size <= 5
        assert result.outputs.shape == (len(texts), 3)
        np.testing.assert_allclose(result.outputs, np.stack([alone[t] for t in texts]), atol=1e-4)
    assert max(observed.batches) <= 5
    assert sum(observed.batches) == sum(len(t) for t in submissions)
    assert 5 in observed.batches  # it does fill batches up to the limit


def test_submit_rejects_empty_and_oversized_jobs(classifier: TextClassifier, make_batcher: MakeBatcher) -> None:
    batcher = make_batcher(classifier.run, max_batch=4, max_queued=100, name="sizes")
    assert batcher.max_batch == 4
    with pytest.raises(ValueError, match="submit between 1 and 4 inputs, got 0"):
        batcher.submit([])
    with pytest.raises(ValueError, match="submit between 1 and 4 inputs, got 5"):
        batcher.submit(TEXTS[:5])


def test_queue_bound_raises_overloaded(classifier: TextClassifier, alone: dict[str, np.ndarray], make_batcher: MakeBatcher) -> None:
    run = GatedRun(classifier)
    batcher = make_batcher(run, max_batch=4, max_queued=6, name="bound")
    running = batcher.submit(TEXTS[:1])
    assert run.entered.wait(TIMEOUT)  # taken off the queue: no longer counts as queued
    queued = [batcher.submit(TEXTS[:4]), batcher.submit(TEXTS[4:6])]  # 6 texts waiting
    with pytest.raises(Overloaded, match=r"6 inputs already queued for this model version \(MAX_QUEUED_INPUTS\); retry shortly") as info:
        batcher.submit(TEXTS[6:7])
    assert isinstance(info.value, EngineError)
    assert info.value.code == "overloaded"
    run.gate.set()
    np.testing.assert_allclose(_result(running).outputs[0], alone[TEXTS[0]], atol=1e-4)
    for future in queued:
        _result(future)
    # Once the queue drained, work is accepted again.
    np.testing.assert_allclose(_result(batcher.submit(TEXTS[6:7])).outputs[0], alone[TEXTS[6]], atol=1e-4)


def test_cancelled_future_is_skipped_and_the_worker_keeps_serving(
    classifier: TextClassifier, alone: dict[str, np.ndarray], make_batcher: MakeBatcher
) -> None:
    observed = Observed()
    run = GatedRun(classifier)
    batcher = make_batcher(run, max_batch=8, max_queued=100, name="cancel", observe=observed)
    first = batcher.submit(TEXTS[:1])
    assert run.entered.wait(TIMEOUT)
    cancelled = batcher.submit(TEXTS[1:4])
    kept = batcher.submit(TEXTS[4:5])
    assert cancelled.cancel()
    run.gate.set()
    _result(first)
    np.testing.assert_allclose(_result(kept).outputs[0], alone[TEXTS[4]], atol=1e-4)
    assert cancelled.cancelled()
    assert observed.batches == [1, 1]  # the cancelled job's three texts never ran

    # A batch made only of cancelled work is dropped and the worker goes on.
    run.gate.clear()
    run.entered.clear()
    blocker = batcher.submit(TEXTS[:1])
    assert run.entered.wait(TIMEOUT)
    lonely = batcher.submit(TEXTS[1:2])
    assert lonely.cancel()
    run.gate.set()
    _result(blocker)
    for text in TEXTS[5:8]:
        np.testing.assert_allclose(_result(batcher.submit([text])).outputs[0], alone[text], atol=1e-4)
    assert observed.batches == [1, 1, 1, 1, 1, 1]


def test_run_failure_reaches_the_job_and_the_worker_keeps_serving(
    classifier: TextClassifier, alone: dict[str, np.ndarray], make_batcher: MakeBatcher
) -> None:
    observed = Observed()
    batcher = make_batcher(classifier.run, max_batch=8, max_queued=100, name="failure", observe=observed)
    bad = batcher.submit([123, None])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        _result(bad)
    assert observed.batches == []  # a failed batch is not observed as served
    for text in TEXTS[:3]:
        np.testing.assert_allclose(_result(batcher.submit([text])).outputs[0], alone[text], atol=1e-4)
    # A second failure after successes is handled the same way.
    with pytest.raises(TypeError):
        _result(batcher.submit([3.5]))  # type: ignore[list-item]
    np.testing.assert_allclose(_result(batcher.submit(TEXTS[3:4])).outputs[0], alone[TEXTS[3]], atol=1e-4)
    assert observed.batches == [1, 1, 1, 1]


def test_close_stops_the_worker_threads(classifier: TextClassifier) -> None:
    pool = ComputePool(2, name="closing")
    batcher = pool.queue(classifier.run, name="closing-v1", max_batch=8, max_queued=100, instances=2)
    assert len(_batcher_threads("closing")) == 2
    _result(batcher.submit(TEXTS[:2]))
    pool.close()
    assert _batcher_threads("closing") == []
    with pytest.raises(RuntimeError, match="batcher is closed"):
        batcher.submit(TEXTS[:1])


def test_close_finishes_work_queued_before_it(classifier: TextClassifier, alone: dict[str, np.ndarray]) -> None:
    run = GatedRun(classifier)
    pool = ComputePool(1, name="draining")
    batcher = pool.queue(run, name="draining-v1", max_batch=3, max_queued=100, instances=1)
    futures = [batcher.submit([text]) for text in TEXTS]
    assert run.entered.wait(TIMEOUT)
    closer = threading.Thread(target=pool.close)
    closer.start()
    run.gate.set()
    closer.join(TIMEOUT)
    assert not closer.is_alive()
    assert _batcher_threads("draining") == []
    for text, future in zip(TEXTS, futures, strict=True):
        assert future.done()
        np.testing.assert_allclose(future.result(timeout=0).outputs[0], alone[text], atol=1e-4)


class ConcurrencyProbe:
    """A run function that records how many runs overlap, per version and in all."""

    def __init__(self, classifier: TextClassifier, hold_s: float = 0.05) -> None:
        self.classifier = classifier
        self.hold_s = hold_s
        self._lock = threading.Lock()
        self.now = 0
        self.peak = 0
        self.threads: set[str] = set()

    def run_for(self, peaks: dict[str, int], version: str) -> RunFn:
        running = {"now": 0}

        def run(texts: list[str]) -> np.ndarray:
            with self._lock:
                self.now += 1
                running["now"] += 1
                self.peak = max(self.peak, self.now)
                peaks[version] = max(peaks.get(version, 0), running["now"])
                self.threads.add(threading.current_thread().name)
            try:
                time.sleep(self.hold_s)  # holds the instance long enough for the others to pile up
                return self.classifier.run(texts)
            finally:
                with self._lock:
                    self.now -= 1
                    running["now"] -= 1

        return run


def test_instances_run_one_versions_batches_in_parallel_and_results_stay_exact(
    classifier: TextClassifier, alone: dict[str, np.ndarray]
) -> None:
    probe = ConcurrencyProbe(classifier)
    peaks: dict[str, int] = {}
    pool = ComputePool(3, name="instances")
    try:
        batcher = pool.queue(probe.run_for(peaks, "v1"), name="instances-v1", max_batch=2, max_queued=1000, instances=3)
        futures = [(text, batcher.submit([text])) for text in TEXTS * 3]
        for text, future in futures:
            np.testing.assert_allclose(_result(future).outputs[0], alone[text], atol=1e-4)
    finally:
        pool.close()
    assert peaks["v1"] == 3, peaks  # three instances at once, no more
    assert len(probe.threads) == 3


def test_one_cpu_budget_is_shared_by_every_version_and_the_registry_cap_holds(
    classifier: TextClassifier, alone: dict[str, np.ndarray]
) -> None:
    """Two versions (a canary split) on a pool of 2 slots never run more than 2 batches at once;
    a version capped at 1 instance never runs 2."""
    probe = ConcurrencyProbe(classifier)
    peaks: dict[str, int] = {}
    pool = ComputePool(2, name="budget")
    try:
        v1 = pool.queue(probe.run_for(peaks, "v1"), name="budget-v1", max_batch=2, max_queued=1000, instances=2)
        v2 = pool.queue(probe.run_for(peaks, "v2"), name="budget-v2", max_batch=2, max_queued=1000, instances=1)
        futures = [(text, (v1 if i % 3 else v2).submit([text])) for i, text in enumerate(TEXTS * 4)]
        for text, future in futures:
            np.testing.assert_allclose(_result(future).outputs[0], alone[text], atol=1e-4)
    finally:
        pool.close()
    assert probe.peak == 2, probe.peak
    assert peaks["v2"] == 1 and peaks["v1"] == 2, peaks


def test_versions_are_served_oldest_work_first(classifier: TextClassifier) -> None:
    """A free instance takes the version whose oldest job waited longest: a busy version cannot starve another."""
    order: list[str] = []
    gate = GatedRun(classifier)

    def tagged(tag: str) -> RunFn:
        def run(texts: list[str]) -> np.ndarray:
            order.append(tag)
            return classifier.run(texts)

        return run

    pool = ComputePool(1, name="fair")
    try:
        blocker = pool.queue(gate, name="fair-blocker", max_batch=1, max_queued=100, instances=1)
        v1 = pool.queue(tagged("v1"), name="fair-v1", max_batch=1, max_queued=100, instances=1)
        v2 = pool.queue(tagged("v2"), name="fair-v2", max_batch=1, max_queued=100, instances=1)
        first = blocker.submit(TEXTS[:1])
        assert gate.entered.wait(TIMEOUT)
        futures = [v1.submit([TEXTS[1]]), v1.submit([TEXTS[2]]), v2.submit([TEXTS[3]]), v1.submit([TEXTS[4]])]
        gate.gate.set()
        for future in [first, *futures]:
            _result(future)
    finally:
        pool.close()
    assert order == ["v1", "v1", "v2", "v1"]


def test_work_past_its_deadline_is_dropped_before_it_runs(classifier: TextClassifier, make_batcher: MakeBatcher) -> None:
    observed = Observed()
    run = GatedRun(classifier)
    batcher = make_batcher(run, max_batch=8, max_queued=100, name="deadline", observe=observed)
    first = batcher.submit(TEXTS[:1])
    assert run.entered.wait(TIMEOUT)
    late = batcher.submit(TEXTS[1:3], deadline=time.monotonic() + 0.05)
    kept = batcher.submit(TEXTS[3:4], deadline=time.monotonic() + TIMEOUT)
    time.sleep(0.1)
    run.gate.set()
    _result(first)
    _result(kept)
    with pytest.raises(DeadlineExceeded, match="deadline passed after"):
        _result(late)
    assert observed.batches == [1, 1]  # the late job's two texts never ran


def test_max_delay_waits_for_a_batch_to_fill_and_no_longer(classifier: TextClassifier, make_batcher: MakeBatcher) -> None:
    observed = Observed()
    batcher = make_batcher(classifier.run, max_batch=4, max_queued=100, name="delay", observe=observed, max_delay_ms=300)
    started = time.monotonic()
    lone = batcher.submit(TEXTS[:1])
    _result(lone)
    waited = time.monotonic() - started
    assert 0.25 <= waited < 5, waited  # a lone request waits out the delay, then runs
    started = time.monotonic()
    full = [batcher.submit([text]) for text in TEXTS[:4]]  # a full batch runs at once
    for future in full:
        assert _result(future).batch_size == 4
    assert time.monotonic() - started < 0.25
    assert observed.batches == [1, 4]


POISON = "\ud800 a lone surrogate"  # passes no text check here: the tokenizer cannot take it


def test_a_failing_batch_is_split_so_only_the_job_that_fails_fails(
    classifier: TextClassifier, alone: dict[str, np.ndarray], make_batcher: MakeBatcher
) -> None:
    with pytest.raises(TypeError):  # the real tokenizer refuses the poisoned text, whatever it is batched with
        classifier.run([TEXTS[0], POISON])
    observed = Observed()
    run = GatedRun(classifier)
    batcher = make_batcher(run, max_batch=32, max_queued=1000, name="split", observe=observed)
    blocker = batcher.submit(TEXTS[:1])
    assert run.entered.wait(TIMEOUT)
    jobs = [[TEXTS[i % len(TEXTS)], TEXTS[(i + 3) % len(TEXTS)]] for i in range(12)]
    jobs[4] = [TEXTS[1], POISON]
    jobs[9] = [POISON]
    futures = [batcher.submit(texts) for texts in jobs]
    run.gate.set()
    _result(blocker)
    for i, (texts, future) in enumerate(zip(jobs, futures, strict=True)):
        if i in (4, 9):
            with pytest.raises(TypeError):  # the tokenizer's own error, for the caller to map
                _result(future)
            continue
        np.testing.assert_allclose(_result(future).outputs, np.stack([alone[t] for t in texts]), atol=1e-4)
    assert sum(observed.batches) == 1 + 2 * 10  # every clean input ran once, the poisoned jobs never succeeded
    # The worker serves on.
    np.testing.assert_allclose(_result(batcher.submit(TEXTS[2:3])).outputs[0], alone[TEXTS[2]], atol=1e-4)


def test_poisoned_and_clean_submissions_under_concurrency_fail_no_clean_one(
    classifier: TextClassifier, alone: dict[str, np.ndarray], make_batcher: MakeBatcher
) -> None:
    batcher = make_batcher(classifier.run, slots=2, max_batch=32, max_queued=10_000, name="poison")
    failures = {"clean": 0, "poisoned_ok": 0}
    lock = threading.Lock()

    def client(worker: int) -> None:
        for i in range(40):
            poisoned = (worker + i) % 5 == 0
            text = POISON if poisoned else TEXTS[(worker + i) % len(TEXTS)]
            future = batcher.submit([text])
            try:
                row = _result(future).outputs[0]
            except Exception:
                if not poisoned:
                    with lock:
                        failures["clean"] += 1
                continue
            if poisoned:
                with lock:
                    failures["poisoned_ok"] += 1
            else:
                np.testing.assert_allclose(row, alone[text], atol=1e-4)

    threads = [threading.Thread(target=client, args=(w,)) for w in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert failures == {"clean": 0, "poisoned_ok": 0}


class Recorded:
    """A gated run that records each batch's inputs."""

    def __init__(self, classifier: TextClassifier) -> None:
        self.gated = GatedRun(classifier)
        self.batches: list[list[str]] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.batches.append(list(texts))
        return self.gated(texts)


def test_a_large_request_is_interleaved_and_a_short_one_runs_in_the_next_batch(
    classifier: TextClassifier, make_batcher: MakeBatcher
) -> None:
    run = Recorded(classifier)
    batcher = make_batcher(run, max_batch=8, max_queued=1000, name="interleave")
    big_jobs = [[f"{TEXTS[0]} {i} {j}" for j in range(4)] for i in range(10)]  # 10 jobs of 4 texts
    big = batcher.submit_many(big_jobs)
    assert run.gated.entered.wait(TIMEOUT)  # the first batch runs: two of its jobs (8 texts)
    short = batcher.submit(["short"])
    other = batcher.submit_many([["other 1", "other 2"], ["other 3"]])
    run.gated.gate.set()
    _result(short)
    for future in [*big, *other]:
        _result(future)
    assert run.batches[0] == [*big_jobs[0], *big_jobs[1]]
    # The next batch takes one job of each request, the one that waited longest since its last
    # progress first, then another turn while they fit: the short request runs in it.
    assert run.batches[1] == [*big_jobs[2], "short", "other 1", "other 2", "other 3"]
    assert run.batches[2] == [*big_jobs[3], *big_jobs[4]]
    assert sum(len(b) for b in run.batches) == 40 + 4
    assert all(len(b) <= 8 for b in run.batches)


def test_batches_respect_the_cost_budget(classifier: TextClassifier, make_batcher: MakeBatcher) -> None:
    run = Recorded(classifier)
    batcher = make_batcher(run, max_batch=32, max_queued=1000, name="cost", max_batch_cost=100)
    blocker = batcher.submit(["block"])
    assert run.gated.entered.wait(TIMEOUT)
    futures = [batcher.submit([f"{TEXTS[0]} {i}"], cost=30) for i in range(7)]
    huge = batcher.submit(["huge"], cost=500)  # costlier than a batch: runs alone
    run.gated.gate.set()
    for future in [blocker, *futures, huge]:
        _result(future)
    assert [len(b) for b in run.batches] == [1, 3, 3, 1, 1]
    assert run.batches[-1] == ["huge"]


def _measured(batcher: VersionQueue, run: GatedRun) -> float:
    """Run two jobs that do not fit one batch, so the queue measures its drain rate under a backlog."""
    assert batcher.drain_rate is None  # an idle queue's small batches are not measured
    run.gate.clear()
    run.entered.clear()
    blocker = batcher.submit(TEXTS[:1], cost=1)
    assert run.entered.wait(TIMEOUT)
    size = batcher.max_batch // 2 + 1
    backlog = [batcher.submit(TEXTS[:size], cost=size) for _ in range(2)]
    run.gate.set()
    for future in [blocker, *backlog]:
        _result(future)
    rate = batcher.drain_rate
    assert rate is not None and rate > 0
    run.gate.clear()
    run.entered.clear()
    return rate


class Sheds:
    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def __call__(self, reason: str, inputs: int) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + inputs


def test_admission_refuses_a_request_whose_wait_passes_max_queue_ms_and_admits_a_small_one(
    classifier: TextClassifier, alone: dict[str, np.ndarray], make_batcher: MakeBatcher
) -> None:
    sheds = Sheds()
    run = GatedRun(classifier)
    batcher = make_batcher(run, max_batch=8, max_queued=1000, name="admission", max_queue_ms=10_000, on_shed=sheds)
    rate = _measured(batcher, run)
    blocker = batcher.submit(TEXTS[:1], cost=1)
    assert run.entered.wait(TIMEOUT)
    work = rate * 30  # 30 s of work at the measured rate: over MAX_QUEUE_MS
    flood = batcher.submit_many([TEXTS[:4]] * 5, costs=[work / 5] * 5)
    with pytest.raises(Overloaded, match=r"ms of work is queued ahead of this request .*\(MAX_QUEUE_MS\)") as info:
        batcher.submit_many([TEXTS[:4]] * 5, costs=[work / 5] * 5)
    assert info.value.code == "overloaded"
    assert info.value.retry_after_s is not None and 15 <= info.value.retry_after_s <= 25  # ~30 s ahead, less the 10 s allowed
    small = batcher.submit(TEXTS[5:6], cost=1)  # its fair share is a turn: admitted
    for future in flood:
        future.cancel()
    run.gate.set()
    _result(blocker)
    np.testing.assert_allclose(_result(small).outputs[0], alone[TEXTS[5]], atol=1e-4)
    assert sheds.counts == {"queue_wait": 20, "cancelled": 20}


def test_work_that_waits_past_max_queue_ms_is_dropped_with_overloaded(classifier: TextClassifier, make_batcher: MakeBatcher) -> None:
    sheds = Sheds()
    observed = Observed()
    run = GatedRun(classifier)
    batcher = make_batcher(run, max_batch=8, max_queued=100, name="queuetime", max_queue_ms=100, observe=observed, on_shed=sheds)
    _measured(batcher, run)
    observed.batches.clear()
    blocker = batcher.submit(TEXTS[:1])
    assert run.entered.wait(TIMEOUT)
    late = batcher.submit_many([TEXTS[1:3], TEXTS[3:5]])
    time.sleep(0.3)
    fresh = batcher.submit(TEXTS[5:6])
    run.gate.set()
    _result(blocker)
    _result(fresh)
    for future in late:
        with pytest.raises(Overloaded, match=r"waited \d+ ms in the queue \(MAX_QUEUE_MS\)") as info:
            _result(future)
        assert not isinstance(info.value, DeadlineExceeded)
        assert info.value.retry_after_s is not None and info.value.retry_after_s >= 0
    assert observed.batches == [1, 1]  # the late request's four texts never ran
    assert sheds.counts == {"queue_timeout": 4}


def test_a_full_queue_refusal_is_counted_and_carries_a_retry_hint(classifier: TextClassifier, make_batcher: MakeBatcher) -> None:
    sheds = Sheds()
    run = GatedRun(classifier)
    batcher = make_batcher(run, max_batch=4, max_queued=6, name="full", on_shed=sheds)
    _measured(batcher, run)
    blocker = batcher.submit(TEXTS[:1])
    assert run.entered.wait(TIMEOUT)
    queued = batcher.submit(TEXTS[:4])
    with pytest.raises(Overloaded, match="MAX_QUEUED_INPUTS") as info:
        batcher.submit_many([TEXTS[:2], TEXTS[2:3]])
    assert info.value.retry_after_s is not None and info.value.retry_after_s > 0
    run.gate.set()
    _result(blocker)
    _result(queued)
    assert sheds.counts == {"queue_full": 3}


def test_a_request_whose_batch_runs_longer_than_max_queue_ms_keeps_its_queued_jobs(
    classifier: TextClassifier, alone: dict[str, np.ndarray], make_batcher: MakeBatcher
) -> None:
    """The queue-time clock of a request stops while a job of it runs: a slow batch of its own
    does not get the rest of it dropped."""
    run = GatedRun(classifier)
    batcher = make_batcher(run, max_batch=2, max_queued=100, name="progress", max_queue_ms=100)
    futures = batcher.submit_many([TEXTS[0:2], TEXTS[2:4], TEXTS[4:6]])
    assert run.entered.wait(TIMEOUT)
    time.sleep(0.3)  # the first batch runs for three times MAX_QUEUE_MS
    run.gate.set()
    for i, future in enumerate(futures):
        np.testing.assert_allclose(_result(future).outputs, np.stack([alone[t] for t in TEXTS[2 * i : 2 * i + 2]]), atol=1e-4)
