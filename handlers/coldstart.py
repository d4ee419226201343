"""The one process-wide engine of a Lambda execution environment (or an emulator worker).

It is built and warmed once, during the init phase, through the same factory the server
uses; every invocation of the environment reuses it.
"""

from __future__ import annotations

import functools
import logging
import time

from engine.facade import InferenceEngine
from engine.factory import build_engine
from engine.settings import Settings

logger = logging.getLogger(__name__)


@functools.cache
def cold_start_settings() -> Settings:
    return Settings()


@functools.cache
def cold_start_engine() -> InferenceEngine:
    started = time.perf_counter()
    engine = build_engine(cold_start_settings())
    engine.load()
    logger.info("cold start: engine ready in %.0f ms (%s)", (time.perf_counter() - started) * 1000.0, engine.health().status)
    return engine
