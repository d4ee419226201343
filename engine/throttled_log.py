"""Log lines that would come once per event under load (a shed request, a failing input), at most
once per key and interval: the lines held back are counted into the next one. The metrics count
every event; the log only has to say that it is happening."""

from __future__ import annotations

import logging
import threading
import time


class ThrottledLog:
    """At most one record per key every ``interval_s`` on ``logger``; the next one says how many
    were held back since."""

    def __init__(self, logger: logging.Logger, interval_s: float) -> None:
        self._logger = logger
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def log(self, level: int, key: str, message: str, *args: object, exc_info: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval_s:
                self._held[key] = self._held.get(key, 0) + 1
                return
            self._last[key] = now
            held = self._held.pop(key, 0)
        self._logger.log(
            level, message + " (%d more like it not logged in the last %g s)", *args, held, self._interval_s, exc_info=exc_info
        )
