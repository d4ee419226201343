"""Helpers shared by the cache tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from engine.cache import CacheBackend

B = TypeVar("B", bound=CacheBackend)
T = TypeVar("T")


def run_with(factory: Callable[[], B], scenario: Callable[[B], Awaitable[T]]) -> T:
    """Build a cache inside a fresh event loop, run the scenario with it, close it in that loop."""

    async def main() -> T:
        cache = factory()
        try:
            return await scenario(cache)
        finally:
            await cache.close()

    return asyncio.run(main())


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
