"""engine/throttled_log.py: one record per key and interval, the held-back ones counted into the next."""

from __future__ import annotations

import logging
import time

import pytest

from engine.throttled_log import ThrottledLog


def test_one_record_per_key_per_interval_and_the_next_counts_the_rest(caplog: pytest.LogCaptureFixture) -> None:
    log = ThrottledLog(logging.getLogger("tests.throttled"), interval_s=0.3)
    with caplog.at_level(logging.INFO, logger="tests.throttled"):
        for i in range(100):
            log.log(logging.WARNING, "a", "event a %d", i)
            log.log(logging.ERROR, "b", "event b %d", i)
        time.sleep(0.35)
        log.log(logging.WARNING, "a", "event a %d", 100)
    records = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "tests.throttled"]
    assert records == [
        (logging.WARNING, "event a 0 (0 more like it not logged in the last 0.3 s)"),
        (logging.ERROR, "event b 0 (0 more like it not logged in the last 0.3 s)"),
        (logging.WARNING, "event a 100 (99 more like it not logged in the last 0.3 s)"),
    ]
