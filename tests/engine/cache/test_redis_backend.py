"""The Redis backend against a real redis-server: wire format, configuration, invalidation, errors."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
import redis
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection

from engine.cache import CacheConfig, RedisCache, decode_result, encode_result
from engine.cache.redis_backend import build_connection_pool
from tests.engine.cache.redis_server import start_redis_server
from tests.engine.cache.support import run_with


def test_keys_carry_the_prefix_and_the_ttl_on_the_wire(redis_config: CacheConfig, raw_redis: redis.Redis) -> None:
    async def scenario(cache: RedisCache) -> None:
        await cache.set_many({"m:v:d:t": encode_result(np.array([0.1, 0.9], dtype=np.float32))}, ttl_s=30)

    run_with(lambda: RedisCache(redis_config), scenario)
    assert raw_redis.keys("*") == [b"mlinfer:m:v:d:t"]
    assert 29_000 < raw_redis.pttl("mlinfer:m:v:d:t") <= 30_000


def test_a_value_of_an_unknown_format_reads_as_a_miss(redis_config: CacheConfig, raw_redis: redis.Redis) -> None:
    raw_redis.set("mlinfer:garbage", b"\x00not-json")
    raw_redis.set("mlinfer:future", b'{"v":99,"s":{"a":1.0}}')
    raw_redis.hset("mlinfer:hash", "f", "v")  # a key of another type: MGET answers nil
    raw_redis.set("mlinfer:good", encode_result(np.array([0.25, 0.75], dtype=np.float32)))

    async def scenario(cache: RedisCache) -> list[bytes | None]:
        return await cache.get_many(["garbage", "future", "hash", "good"])

    found = run_with(lambda: RedisCache(redis_config), scenario)
    assert [None if v is None else decode_result(v) for v in found][:3] == [None, None, None]
    assert found[3] is not None and (decode_result(found[3]) == np.array([0.25, 0.75], dtype=np.float32)).all()


def test_delete_prefix_pages_through_many_keys_and_stays_in_its_namespace(redis_config: CacheConfig, raw_redis: redis.Redis) -> None:
    raw_redis.set("othersvc:m1:v1:x", b"keep")  # another service sharing the Redis
    items = {f"m1:v1:d:{i}": b"x" for i in range(2500)}

    async def scenario(cache: RedisCache) -> int:
        await cache.set_many(items, ttl_s=60)
        await cache.set_many({"m1:v2:d:0": b"y"}, ttl_s=60)
        return await cache.delete_prefix("m1:v1:")

    assert run_with(lambda: RedisCache(redis_config), scenario) == 2500
    assert sorted(raw_redis.keys("*")) == [b"mlinfer:m1:v2:d:0", b"othersvc:m1:v1:x"]


def test_a_password_protected_server(tmp_path: Path) -> None:
    server = start_redis_server(tmp_path / "auth", password="s3cret")
    try:
        good = CacheConfig(backend="redis", host="127.0.0.1", port=server.port, password="s3cret", timeout_ms=500)
        bad = CacheConfig(backend="redis", url=f"redis://:wrong@127.0.0.1:{server.port}/0", password="s3cret", timeout_ms=500)

        async def round_trip(cache: RedisCache) -> list[bytes | None]:
            await cache.set_many({"k": b"v"}, ttl_s=60)
            return await cache.get_many(["k"])

        assert run_with(lambda: RedisCache(good), round_trip) == [b"v"]
        errors: list[str] = []
        refused = RedisCache(bad, on_error=errors.append)
        assert run_with(lambda: refused, round_trip) == [None]  # the URL's password wins, and is wrong
        assert refused.errors == 2 and errors == ["set", "get"] and refused.state == "degraded"
    finally:
        server.stop()


def test_unreachable_redis_misses_and_opens_the_circuit() -> None:
    config = CacheConfig(backend="redis", host="127.0.0.1", port=1, timeout_ms=200, breaker_failures=2, breaker_cooldown_s=60)

    async def scenario(cache: RedisCache) -> None:
        assert await cache.get_many(["a", "b"]) == [None, None]
        await cache.set_many({"a": b"1"}, ttl_s=60)
        assert cache.state == "open"
        assert await cache.get_many(["a"]) == [None]  # skipped, not tried
        assert (cache.errors, cache.skipped) == (2, 1)
        assert await cache.delete_prefix("a") == 0  # invalidation still tries, and fails softly

    run_with(lambda: RedisCache(config), scenario)


def test_one_cache_serves_many_concurrent_callers(redis_config: CacheConfig) -> None:
    async def scenario(cache: RedisCache) -> None:
        async def caller(n: int) -> None:
            for i in range(20):
                key = f"c{n}:{i}"
                await cache.set_many({key: key.encode()}, ttl_s=60)
                assert await cache.get_many([key, f"c{n}:absent"]) == [key.encode(), None]

        await asyncio.gather(*(caller(n) for n in range(20)))
        assert cache.errors == 0 and cache.state == "ok"

    run_with(lambda: RedisCache(redis_config), scenario)


# Configuration only: building a pool connects to nothing, so no server (and no TLS server) is needed.


def test_host_port_db_password_and_timeout() -> None:
    pool = build_connection_pool(CacheConfig(host="cache.internal", port=6380, db=2, password="pw", timeout_ms=75))
    kwargs = pool.connection_kwargs
    assert pool.connection_class is Connection
    assert (kwargs["host"], kwargs["port"], kwargs["db"], kwargs["password"]) == ("cache.internal", 6380, 2, "pw")
    assert kwargs["socket_timeout"] == kwargs["socket_connect_timeout"] == pytest.approx(0.075)
    assert pool.max_connections == 64


def test_the_url_wins_over_host_port_db_and_password() -> None:
    config = CacheConfig(host="ignored", port=1, db=5, password="ignored", url="redis://user:pw@redis.example:6390/3")
    kwargs = build_connection_pool(config).connection_kwargs
    stated = ("redis.example", 6390, 3, "user", "pw")
    assert (kwargs["host"], kwargs["port"], kwargs["db"], kwargs["username"], kwargs["password"]) == stated


def test_password_and_db_fill_what_the_url_leaves_out() -> None:
    kwargs = build_connection_pool(CacheConfig(db=4, password="pw", url="redis://redis.example")).connection_kwargs
    assert (kwargs["host"], kwargs["db"], kwargs["password"]) == ("redis.example", 4, "pw")


@pytest.mark.parametrize(
    "config",
    [
        CacheConfig(url="rediss://master.my-cache.abc123.use1.cache.amazonaws.com:6379"),
        CacheConfig(url="redis://redis.example:6379", tls=True),
        CacheConfig(host="redis.example", tls=True),
    ],
)
def test_tls_comes_from_rediss_or_the_tls_flag(config: CacheConfig) -> None:
    assert build_connection_pool(config).connection_class is SSLConnection


def test_a_unix_socket_url() -> None:
    pool = build_connection_pool(CacheConfig(url="unix:///run/redis.sock?db=1"))
    assert pool.connection_class is UnixDomainSocketConnection
    assert (pool.connection_kwargs["path"], pool.connection_kwargs["db"]) == ("/run/redis.sock", 1)


@pytest.mark.parametrize("field", ["timeout_ms", "max_connections", "memory_max_entries", "l1_ttl_s", "breaker_failures"])
def test_nonpositive_settings_are_refused(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        CacheConfig(**{field: 0})  # type: ignore[arg-type]
