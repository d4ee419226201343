"""The contract every CacheBackend keeps: memory, redis (a real server), redis-cluster (three real nodes), tiered."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace

import pytest

from engine.cache import CacheBackend, CacheConfig, MemoryCache, NoCache, RedisCache, TieredCache, build_cache, key_prefix
from engine.cache.base import values_of
from tests.engine.cache.support import run_with

BACKENDS = ["memory", "redis", "redis-cluster", "tiered"]


@pytest.fixture(params=BACKENDS)
def make_cache(request: pytest.FixtureRequest) -> Callable[[], CacheBackend]:
    if request.param == "memory":
        return lambda: build_cache(CacheConfig(backend="memory"))
    if request.param == "redis-cluster":
        cluster: CacheConfig = request.getfixturevalue("cluster_config")
        return lambda: build_cache(cluster)
    config: CacheConfig = request.getfixturevalue("redis_config")
    return lambda: build_cache(replace(config, backend=request.param))


def test_round_trip_keeps_exact_bytes(make_cache: Callable[[], CacheBackend]) -> None:
    value = bytes(range(256))

    async def scenario(cache: CacheBackend) -> None:
        await cache.set_many({"k": value}, ttl_s=60)
        [found] = await cache.get_many(["k"])
        assert type(found) is bytes and found == value

    run_with(make_cache, scenario)


def test_get_many_keeps_order_with_misses(make_cache: Callable[[], CacheBackend]) -> None:
    async def scenario(cache: CacheBackend) -> None:
        await cache.set_many({"b": b"2", "d": b"4"}, ttl_s=60)
        assert await cache.get_many(["a", "b", "c", "d", "b"]) == [None, b"2", None, b"4", b"2"]
        assert await cache.get_many([]) == []

    run_with(make_cache, scenario)


def test_many_keys_in_one_call(make_cache: Callable[[], CacheBackend]) -> None:
    items = {f"key-{i}": f"value-{i}".encode() for i in range(500)}

    async def scenario(cache: CacheBackend) -> None:
        await cache.set_many(items, ttl_s=60)
        keys = list(items)[::-1] + ["absent"]
        assert await cache.get_many(keys) == [items[k] for k in keys[:-1]] + [None]

    run_with(make_cache, scenario)


def test_a_later_set_replaces_the_value(make_cache: Callable[[], CacheBackend]) -> None:
    async def scenario(cache: CacheBackend) -> None:
        await cache.set_many({"k": b"old"}, ttl_s=60)
        await cache.set_many({"k": b"new"}, ttl_s=60)
        assert await cache.get_many(["k"]) == [b"new"]

    run_with(make_cache, scenario)


def test_entries_expire_after_their_ttl(make_cache: Callable[[], CacheBackend]) -> None:
    async def scenario(cache: CacheBackend) -> None:
        await cache.set_many({"short": b"s"}, ttl_s=0.2)
        await cache.set_many({"long": b"l"}, ttl_s=60)
        assert await cache.get_many(["short", "long"]) == [b"s", b"l"]
        await asyncio.sleep(0.35)
        assert await cache.get_many(["short", "long"]) == [None, b"l"]

    run_with(make_cache, scenario)


def test_a_ttl_of_zero_stores_nothing(make_cache: Callable[[], CacheBackend]) -> None:
    async def scenario(cache: CacheBackend) -> None:
        await cache.set_many({"k": b"v"}, ttl_s=0)
        await cache.set_many({}, ttl_s=60)
        assert await cache.get_many(["k"]) == [None]

    run_with(make_cache, scenario)


def test_delete_prefix_removes_one_model_version(make_cache: Callable[[], CacheBackend]) -> None:
    keys = ["m1:v1:a", "m1:v1:b", "m1:v2:a", "m2:v1:a", "m1:v10:a"]

    async def scenario(cache: CacheBackend) -> None:
        await cache.set_many({k: k.encode() for k in keys}, ttl_s=60)
        assert await cache.delete_prefix(key_prefix("m1", "v1")) == 2
        assert await cache.get_many(keys) == [None, None, b"m1:v2:a", b"m2:v1:a", b"m1:v10:a"]
        assert await cache.delete_prefix(key_prefix("m1")) == 2
        assert await cache.get_many(keys) == [None, None, None, b"m2:v1:a", None]
        assert await cache.delete_prefix("nothing-here:") == 0

    run_with(make_cache, scenario)


def test_delete_prefix_takes_glob_characters_literally(make_cache: Callable[[], CacheBackend]) -> None:
    async def scenario(cache: CacheBackend) -> None:
        await cache.set_many({"a*b:1": b"1", "aXb:1": b"2", "a[b]:1": b"3", "ab:1": b"4"}, ttl_s=60)
        assert await cache.delete_prefix("a*") == 1
        assert await cache.delete_prefix("a[b]") == 1
        assert await cache.get_many(["a*b:1", "aXb:1", "a[b]:1", "ab:1"]) == [None, b"2", None, b"4"]

    run_with(make_cache, scenario)


def test_hits_name_their_tier(make_cache: Callable[[], CacheBackend]) -> None:
    async def scenario(cache: CacheBackend) -> None:
        await cache.set_many({"k": b"v"}, ttl_s=60)
        hits = await cache.get_many_with_tier(["k", "absent"])
        assert values_of(hits) == [b"v", None]
        assert hits[0] is not None and hits[0].tier in ("memory", "redis")

    run_with(make_cache, scenario)


def test_state_is_ok_while_the_backend_answers(make_cache: Callable[[], CacheBackend]) -> None:
    async def scenario(cache: CacheBackend) -> None:
        await cache.set_many({"k": b"v"}, ttl_s=60)
        await cache.get_many(["k"])
        assert cache.state == "ok"

    run_with(make_cache, scenario)


def test_no_cache_misses_everything() -> None:
    async def scenario(cache: NoCache) -> None:
        await cache.set_many({"k": b"v"}, ttl_s=60)
        assert await cache.get_many(["k", "j"]) == [None, None]
        assert await cache.get_many_with_tier(["k"]) == [None]
        assert await cache.delete_prefix("") == 0
        assert cache.state == "ok"

    run_with(NoCache, scenario)


@pytest.mark.parametrize(
    ("backend", "kind"),
    [("memory", MemoryCache), ("redis", RedisCache), ("tiered", TieredCache), ("none", NoCache)],
)
def test_build_cache_picks_the_named_backend(backend: str, kind: type) -> None:
    config = CacheConfig(backend=backend, memory_max_entries=7, l1_ttl_s=9)  # type: ignore[arg-type]
    cache = build_cache(config)
    assert isinstance(cache, kind)
    if isinstance(cache, TieredCache):
        assert isinstance(cache.l2, RedisCache) and cache.l1.max_entries == 7 and cache.l1_ttl_s == 9
    asyncio.run(cache.close())  # nothing connected, so closing is immediate


def test_build_cache_refuses_an_unknown_backend() -> None:
    with pytest.raises(ValueError, match="unknown cache backend"):
        build_cache(CacheConfig(backend="memcached"))  # type: ignore[arg-type]
