"""The Redis backend against a three-primary Redis Cluster: keys spread over shards, calls split by slot."""

from __future__ import annotations

import redis
from redis.asyncio.connection import SSLConnection

from engine.cache import CacheConfig, RedisCache
from engine.cache.redis_backend import build_cluster_client
from tests.engine.cache.redis_server import RedisServer
from tests.engine.cache.support import run_with


def keys_per_node(servers: list[RedisServer]) -> list[int]:
    counts = []
    for server in servers:
        with redis.Redis(port=server.port) as client:
            counts.append(int(client.dbsize()))
    return counts


def test_one_call_reads_and_writes_keys_on_every_shard(cluster_config: CacheConfig, redis_cluster: list[RedisServer]) -> None:
    items = {f"m:v:d:{i}": str(i).encode() for i in range(300)}

    async def scenario(cache: RedisCache) -> list[bytes | None]:
        await cache.set_many(items, ttl_s=60)
        found = await cache.get_many([*items, "absent"])
        assert cache.errors == 0
        return found

    assert run_with(lambda: RedisCache(cluster_config), scenario) == [*items.values(), None]
    assert all(count > 50 for count in keys_per_node(redis_cluster)), keys_per_node(redis_cluster)


def test_invalidation_reaches_every_shard(cluster_config: CacheConfig, redis_cluster: list[RedisServer]) -> None:
    async def scenario(cache: RedisCache) -> int:
        await cache.set_many({f"m:v1:d:{i}": b"x" for i in range(300)}, ttl_s=60)
        await cache.set_many({f"m:v2:d:{i}": b"y" for i in range(30)}, ttl_s=60)
        return await cache.delete_prefix("m:v1:")

    assert run_with(lambda: RedisCache(cluster_config), scenario) == 300
    assert sum(keys_per_node(redis_cluster)) == 30


def test_cluster_tls_and_url() -> None:
    plain = build_cluster_client(CacheConfig(cluster=True, host="clustercfg.my-cache.abc123.use1.cache.amazonaws.com", tls=True))
    by_url = build_cluster_client(CacheConfig(cluster=True, url="rediss://user:pw@clustercfg.example:6380"))
    for client in (plain, by_url):
        assert client.connection_kwargs["connection_class"] is SSLConnection
    assert (by_url.connection_kwargs["username"], by_url.connection_kwargs["password"]) == ("user", "pw")
    assert list(by_url.nodes_manager.startup_nodes) == ["clustercfg.example:6380"]
