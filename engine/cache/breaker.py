"""A circuit breaker: stop calling a failing backend, probe it again after a cool-down."""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable

from engine.cache.base import CacheState

logger = logging.getLogger(__name__)


class BreakerPosition(enum.Enum):
    """CLOSED: calls go through. OPEN: calls are skipped. HALF_OPEN: one probe call goes through."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Opens after ``failure_threshold`` consecutive failures of one operation; after ``cooldown_s``
    lets one probe through.

    Failures are counted overall and per operation (e.g. ``get`` and ``set``): a success ends the
    overall run but only its own operation's, so a backend whose writes succeed while every read
    fails still opens it.
    A successful probe closes it, a failed one re-opens it for another cool-down. A probe whose
    outcome is never recorded (its caller was cancelled) stops blocking after one cool-down.
    Callers ask ``allow()`` before a call and report with ``record_success`` / ``record_failure``.
    """

    def __init__(
        self,
        failure_threshold: int = 5,
        cooldown_s: float = 5.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        name: str = "cache",
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if cooldown_s < 0:
            raise ValueError("cooldown_s must not be negative")
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._name = name
        self._lock = threading.Lock()
        self._position = BreakerPosition.CLOSED
        self._failures: dict[str, int] = {}  # per operation
        self._run = 0  # any operation, since the last success of any
        self._opened_at = 0.0
        self._probe_started_at: float | None = None

    @property
    def position(self) -> BreakerPosition:
        with self._lock:
            if self._position is BreakerPosition.OPEN and self._clock() - self._opened_at >= self.cooldown_s:
                return BreakerPosition.HALF_OPEN  # the next allow() will probe
            return self._position

    @property
    def consecutive_failures(self) -> int:
        """The longest current run of failures: of every operation together, or of one."""
        with self._lock:
            return max(self._run, *self._failures.values(), 0)

    @property
    def state(self) -> CacheState:
        position = self.position
        if position is BreakerPosition.OPEN:
            return "open"
        if position is BreakerPosition.HALF_OPEN or self.consecutive_failures:
            return "degraded"
        return "ok"

    def allow(self) -> bool:
        """Whether the caller may call the backend now. In HALF_OPEN, only one caller is let through."""
        with self._lock:
            if self._position is BreakerPosition.CLOSED:
                return True
            now = self._clock()
            if self._position is BreakerPosition.OPEN:
                if now - self._opened_at < self.cooldown_s:
                    return False
                self._position = BreakerPosition.HALF_OPEN
                self._probe_started_at = now
                return True
            # HALF_OPEN: a probe is out; a lost one (never recorded) is replaced after a cool-down
            if self._probe_started_at is None or now - self._probe_started_at >= self.cooldown_s:
                self._probe_started_at = now
                return True
            return False

    def record_success(self, operation: str = "call") -> None:
        """``operation`` succeeded: its failure run ends; a probe's success closes the circuit."""
        with self._lock:
            if self._position is not BreakerPosition.CLOSED:
                logger.info("%s: backend answered again (%s), circuit closed", self._name, operation)
                self._failures.clear()
            self._position = BreakerPosition.CLOSED
            self._failures.pop(operation, None)
            self._run = 0
            self._probe_started_at = None

    def record_failure(self, operation: str = "call") -> None:
        with self._lock:
            self._run += 1
            self._failures[operation] = self._failures.get(operation, 0) + 1
            failures = max(self._run, self._failures[operation])
            if self._position is BreakerPosition.HALF_OPEN or (
                self._position is BreakerPosition.CLOSED and failures >= self.failure_threshold
            ):
                if self._position is BreakerPosition.CLOSED:
                    logger.warning(
                        "%s: %d consecutive %s failures, circuit open for %.1f s", self._name, failures, operation, self.cooldown_s
                    )
                self._position = BreakerPosition.OPEN
                self._opened_at = self._clock()
                self._probe_started_at = None
