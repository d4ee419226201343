"""Memory L1 in front of a real Redis L2."""

from __future__ import annotations

import asyncio

import redis

from engine.cache import CacheConfig, Hit, MemoryCache, RedisCache, TieredCache
from tests.engine.cache.support import run_with


def mget_calls(client: redis.Redis) -> int:
    stats = client.info("commandstats").get("cmdstat_mget")
    return int(stats["calls"]) if stats else 0


def tiered(config: CacheConfig, l1_ttl_s: float = 60.0) -> TieredCache:
    return TieredCache(MemoryCache(100), RedisCache(config), l1_ttl_s=l1_ttl_s)


def test_l2_hits_fill_l1_and_say_so(redis_config: CacheConfig) -> None:
    async def scenario(cache: TieredCache) -> None:
        other_replica = RedisCache(redis_config)
        await other_replica.set_many({"k": b"v"}, ttl_s=60)
        await other_replica.close()
        assert await cache.get_many_with_tier(["k", "absent"]) == [Hit(b"v", "redis"), None]
        assert await cache.get_many_with_tier(["k"]) == [Hit(b"v", "memory")]

    run_with(lambda: tiered(redis_config), scenario)


def test_only_l1_misses_go_to_redis_in_one_round_trip(redis_config: CacheConfig, raw_redis: redis.Redis) -> None:
    async def scenario(cache: TieredCache) -> list[Hit | None]:
        await cache.set_many({"a": b"1", "b": b"2"}, ttl_s=60)
        await cache.l1.delete_prefix("b")  # b now lives in Redis only
        before = mget_calls(raw_redis)
        hits = await cache.get_many_with_tier(["a", "b", "c"])
        assert mget_calls(raw_redis) == before + 1
        before = mget_calls(raw_redis)
        await cache.get_many(["a", "b"])  # both in L1 now: Redis is not asked
        assert mget_calls(raw_redis) == before
        return hits

    assert run_with(lambda: tiered(redis_config), scenario) == [Hit(b"1", "memory"), Hit(b"2", "redis"), None]


def test_l1_entries_live_at_most_l1_ttl(redis_config: CacheConfig) -> None:
    async def scenario(cache: TieredCache) -> None:
        await cache.set_many({"k": b"v"}, ttl_s=60)
        await asyncio.sleep(0.3)
        assert await cache.get_many_with_tier(["k"]) == [Hit(b"v", "redis")]

    run_with(lambda: tiered(redis_config, l1_ttl_s=0.2), scenario)


def test_invalidation_clears_both_tiers(redis_config: CacheConfig, raw_redis: redis.Redis) -> None:
    async def scenario(cache: TieredCache) -> None:
        await cache.set_many({"m:v1:a": b"1", "m:v2:a": b"2"}, ttl_s=60)
        assert await cache.delete_prefix("m:v1:") == 1
        assert await cache.get_many(["m:v1:a", "m:v2:a"]) == [None, b"2"]

    run_with(lambda: tiered(redis_config), scenario)
    assert raw_redis.keys("*") == [b"mlinfer:m:v2:a"]


def test_l1_keeps_answering_while_redis_is_unreachable() -> None:
    down = CacheConfig(backend="tiered", host="127.0.0.1", port=1, timeout_ms=200, breaker_failures=1, breaker_cooldown_s=60)

    async def scenario(cache: TieredCache) -> None:
        await cache.set_many({"k": b"v"}, ttl_s=60)
        assert await cache.get_many_with_tier(["k", "j"]) == [Hit(b"v", "memory"), None]
        assert cache.state == "open"

    run_with(lambda: tiered(down), scenario)
