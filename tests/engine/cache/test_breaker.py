from __future__ import annotations

import pytest

from engine.cache import BreakerPosition, CircuitBreaker
from tests.engine.cache.support import FakeClock


def make(threshold: int = 3, cooldown_s: float = 5.0) -> tuple[CircuitBreaker, FakeClock]:
    clock = FakeClock()
    return CircuitBreaker(threshold, cooldown_s, clock=clock), clock


def test_it_opens_after_consecutive_failures_only() -> None:
    breaker, _ = make()
    assert breaker.state == "ok"
    breaker.record_failure()
    breaker.record_failure()
    assert (breaker.position, breaker.state) == (BreakerPosition.CLOSED, "degraded")
    breaker.record_success()  # a success resets the run
    assert breaker.state == "ok" and breaker.consecutive_failures == 0
    for _ in range(3):
        assert breaker.allow()
        breaker.record_failure()
    assert (breaker.position, breaker.state) == (BreakerPosition.OPEN, "open")
    assert not breaker.allow()


def test_after_the_cooldown_one_probe_goes_through_and_success_closes() -> None:
    breaker, clock = make()
    for _ in range(3):
        breaker.record_failure()
    clock.advance(4.9)
    assert not breaker.allow()
    clock.advance(0.1)
    assert breaker.position is BreakerPosition.HALF_OPEN and breaker.state == "degraded"
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # everyone else waits for its outcome
    breaker.record_success()
    assert (breaker.position, breaker.state) == (BreakerPosition.CLOSED, "ok")
    assert breaker.allow()


def test_a_failed_probe_reopens_for_a_full_cooldown() -> None:
    breaker, clock = make()
    for _ in range(3):
        breaker.record_failure()
    clock.advance(5)
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.position is BreakerPosition.OPEN
    clock.advance(4.9)
    assert not breaker.allow()
    clock.advance(0.1)
    assert breaker.allow()


def test_a_lost_probe_is_replaced_after_a_cooldown() -> None:
    breaker, clock = make()
    for _ in range(3):
        breaker.record_failure()
    clock.advance(5)
    assert breaker.allow()  # this probe's caller is cancelled and never reports
    clock.advance(4.9)
    assert not breaker.allow()
    clock.advance(0.1)
    assert breaker.allow()


def test_a_threshold_of_one_opens_at_the_first_failure() -> None:
    breaker, _ = make(threshold=1)
    breaker.record_failure()
    assert breaker.state == "open"


@pytest.mark.parametrize(("threshold", "cooldown_s"), [(0, 1.0), (1, -1.0)])
def test_nonsense_settings_are_refused(threshold: int, cooldown_s: float) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(threshold, cooldown_s)


def test_failures_of_one_operation_open_it_even_when_another_succeeds() -> None:
    breaker, _ = make()
    for _ in range(2):
        breaker.record_failure("get")
        breaker.record_success("set")  # ends the overall run, not the reads'
        assert breaker.position is BreakerPosition.CLOSED and breaker.state == "degraded"
    breaker.record_failure("get")
    assert breaker.state == "open"


def test_failures_of_every_operation_together_open_it() -> None:
    breaker, _ = make()
    breaker.record_failure("get")
    breaker.record_failure("set")
    assert breaker.position is BreakerPosition.CLOSED
    breaker.record_failure("get")
    assert breaker.state == "open"


def test_a_probe_that_succeeds_forgets_every_failure_run() -> None:
    breaker, clock = make()
    for _ in range(3):
        breaker.record_failure("get")
    clock.advance(5)
    assert breaker.allow()
    breaker.record_success("get")
    assert (breaker.state, breaker.consecutive_failures) == ("ok", 0)
