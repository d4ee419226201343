"""Memory L1 in front of a shared L2 (Redis): hot keys never leave the process."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from engine.cache.base import CacheBackend, CacheState, Hit, values_of
from engine.cache.memory import MemoryCache


class TieredCache:
    """Reads L1, then the L1 misses from L2 in one round trip, and fills L1 with what L2 had.

    Writes go to both. An L1 entry lives at most ``l1_ttl_s``: another replica's invalidation of
    L2 reaches this process's L1 within that time. ``state`` is L2's: L1 cannot fail.
    """

    def __init__(self, l1: MemoryCache, l2: CacheBackend, *, l1_ttl_s: float = 60.0) -> None:
        self.l1 = l1
        self.l2 = l2
        self.l1_ttl_s = l1_ttl_s

    async def get_many_with_tier(self, keys: Sequence[str]) -> list[Hit | None]:
        hits: list[Hit | None] = [None if value is None else Hit(value, "memory") for value in self.l1.lookup(keys)]
        missing = [i for i, hit in enumerate(hits) if hit is None]
        if not missing:
            return hits
        l2_hits = await self.l2.get_many_with_tier([keys[i] for i in missing])
        fill: dict[str, bytes] = {}
        for i, hit in zip(missing, l2_hits, strict=True):
            if hit is not None:
                hits[i] = hit
                fill[keys[i]] = hit.value
        self.l1.store(fill, self.l1_ttl_s)
        return hits

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return values_of(await self.get_many_with_tier(keys))

    async def set_many(self, items: Mapping[str, bytes], ttl_s: float) -> None:
        self.l1.store(items, min(ttl_s, self.l1_ttl_s))
        await self.l2.set_many(items, ttl_s)

    async def delete_prefix(self, prefix: str) -> int:
        """Removes from both tiers; returns the larger count (L1 holds a subset of L2, as a rule)."""
        in_l1 = await self.l1.delete_prefix(prefix)
        in_l2 = await self.l2.delete_prefix(prefix)
        return max(in_l1, in_l2)

    @property
    def state(self) -> CacheState:
        return self.l2.state

    async def close(self) -> None:
        await self.l1.close()
        await self.l2.close()
