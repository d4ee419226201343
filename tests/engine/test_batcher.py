"""engine/batcher.py: continuous batching over the real v1 model.

Where a test needs work to pile up behind a running batch, the run function waits at a
gate (a threading.Event the test opens) before calling the real model.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

import numpy as np
import pytest

from engine.batcher import BatchResult, ContinuousBatcher, RunFn
from engine.errors import EngineError, Overloaded
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


MakeBatcher = Callable[..., ContinuousBatcher]


@pytest.fixture
def make_batcher() -> Iterator[MakeBatcher]:
    """Creates batchers and closes them after the test, even when it fails."""
    created: list[ContinuousBatcher] = []

    def make(run: RunFn, **kwargs: Any) -> ContinuousBatcher:
        batcher = ContinuousBatcher(run, **kwargs)
        created.append(batcher)
        return batcher

    yield make
    for batcher in created:
        batcher.close()


def _result(future: Future[BatchResult]) -> BatchResult:
    return future.result(timeout=TIMEOUT)


def _batcher_threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"batcher-{name}" and t.is_alive()]


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


def test_close_stops_the_worker_thread(classifier: TextClassifier) -> None:
    batcher = ContinuousBatcher(classifier.run, max_batch=8, max_queued=100, name="closing")
    assert len(_batcher_threads("closing")) == 1
    _result(batcher.submit(TEXTS[:2]))
    batcher.close()
    assert _batcher_threads("closing") == []
    with pytest.raises(RuntimeError, match="batcher is closed"):
        batcher.submit(TEXTS[:1])


def test_close_finishes_work_queued_before_it(classifier: TextClassifier, alone: dict[str, np.ndarray]) -> None:
    run = GatedRun(classifier)
    batcher = ContinuousBatcher(run, max_batch=3, max_queued=100, name="draining")
    futures = [batcher.submit([text]) for text in TEXTS]
    assert run.entered.wait(TIMEOUT)
    closer = threading.Thread(target=batcher.close)
    closer.start()
    run.gate.set()
    closer.join(TIMEOUT)
    assert not closer.is_alive()
    assert _batcher_threads("draining") == []
    for text, future in zip(TEXTS, futures, strict=True):
        assert future.done()
        np.testing.assert_allclose(future.result(timeout=0).outputs[0], alone[text], atol=1e-4)
