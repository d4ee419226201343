"""An in-process LRU with per-entry TTL and a bound on entries."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence

from engine.cache.base import CacheState, Hit


class MemoryCache:
    """Least-recently-used eviction past ``max_entries``; entries expire ``ttl_s`` after they are set.

    Safe from several threads and tasks: no method awaits while it holds the lock.
    """

    def __init__(self, max_entries: int = 10_000, *, clock: Callable[[], float] = time.monotonic) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()  # key -> (expires_at, value)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, keys: Sequence[str]) -> list[bytes | None]:
        """Synchronous ``get_many``: the memory tier never waits."""
        now = self._clock()
        found: list[bytes | None] = []
        with self._lock:
            for key in keys:
                entry = self._entries.get(key)
                if entry is None:
                    found.append(None)
                elif entry[0] <= now:
                    del self._entries[key]
                    found.append(None)
                else:
                    self._entries.move_to_end(key)
                    found.append(entry[1])
        return found

    def store(self, items: Mapping[str, bytes], ttl_s: float) -> None:
        """Synchronous ``set_many``."""
        if ttl_s <= 0 or not items:
            return
        expires_at = self._clock() + ttl_s
        with self._lock:
            for key, value in items.items():
                self._entries[key] = (expires_at, bytes(value))
                self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return self.lookup(keys)

    async def get_many_with_tier(self, keys: Sequence[str]) -> list[Hit | None]:
        return [None if value is None else Hit(value, "memory") for value in self.lookup(keys)]

    async def set_many(self, items: Mapping[str, bytes], ttl_s: float) -> None:
        self.store(items, ttl_s)

    async def delete_prefix(self, prefix: str) -> int:
        with self._lock:
            doomed = [key for key in self._entries if key.startswith(prefix)]
            for key in doomed:
                del self._entries[key]
        return len(doomed)

    @property
    def state(self) -> CacheState:
        return "ok"

    async def close(self) -> None:
        with self._lock:
            self._entries.clear()
