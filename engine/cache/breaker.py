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
    """Opens after ``failure_threshold`` consecutive failures; after ``cooldown_s`` lets one probe through.

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
        self._failures = 0
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
        return self._failures

    @property
    def state(self) -> CacheState:
        position = self.position
        if position is BreakerPosition.OPEN:
            return "open"
        if position is BreakerPosition.HALF_OPEN or self._failures:
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

    def record_success(self) -> None:
        with self._lock:
            if self._position is not BreakerPosition.CLOSED:
                logger.info("%s: backend answered again, circuit closed", self._name)
            self._position = BreakerPosition.CLOSED
            self._failures = 0
            self._probe_started_at = None

    def record_failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self._position is BreakerPosition.HALF_OPEN or (
                self._position is BreakerPosition.CLOSED and self._failures >= self.failure_threshold
            ):
                if self._position is BreakerPosition.CLOSED:
                    logger.warning("%s: %d consecutive failures, circuit open for %.1f s", self._name, self._failures, self.cooldown_s)
                self._position = BreakerPosition.OPEN
                self._opened_at = self._clock()
                self._probe_started_at = None
