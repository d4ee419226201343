"""The result cache's extension point: the ``CacheBackend`` Protocol, and the backend that caches nothing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, NamedTuple, Protocol

CacheState = Literal["ok", "degraded", "open"]
"""``ok``: working. ``degraded``: recent failures, or probing after an outage. ``open``: calls are skipped."""

Tier = Literal["memory", "redis"]
"""Where a hit came from; a bounded metric label."""


class Hit(NamedTuple):
    value: bytes
    tier: Tier


class CacheBackend(Protocol):
    """A byte-valued key/value cache that never fails its caller.

    Every method is bounded in time and raises nothing: a backend that cannot answer reports
    misses (reads) or does nothing (writes), and shows it in ``state``. Keys are ``str``, values
    ``bytes``; what the bytes mean is the caller's business (see ``engine.cache.codec``).
    """

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The value of each key, in order; ``None`` for a miss. One round trip to a remote store."""
        ...

    async def get_many_with_tier(self, keys: Sequence[str]) -> list[Hit | None]:
        """Like ``get_many``, and each hit says which tier answered it, for per-tier metrics."""
        ...

    async def set_many(self, items: Mapping[str, bytes], ttl_s: float) -> None:
        """Store every item for ``ttl_s`` seconds (a ``ttl_s`` of 0 or less stores nothing). One round trip."""
        ...

    async def delete_prefix(self, prefix: str) -> int:
        """Remove every key that starts with ``prefix``; returns how many were removed."""
        ...

    @property
    def state(self) -> CacheState:
        """Health of the backend, for ``/health`` and metrics."""
        ...

    async def close(self) -> None:
        """Release connections. The backend must not be used afterwards."""
        ...


def values_of(hits: Sequence[Hit | None]) -> list[bytes | None]:
    return [None if hit is None else hit.value for hit in hits]


class NoCache:
    """Caches nothing: every lookup misses."""

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return [None] * len(keys)

    async def get_many_with_tier(self, keys: Sequence[str]) -> list[Hit | None]:
        return [None] * len(keys)

    async def set_many(self, items: Mapping[str, bytes], ttl_s: float) -> None:
        return None

    async def delete_prefix(self, prefix: str) -> int:
        return 0

    @property
    def state(self) -> CacheState:
        return "ok"

    async def close(self) -> None:
        return None
