"""Fixtures for the cache tests: a real redis-server per module, and caches built against it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from engine.cache import CacheConfig
from tests.engine.cache.redis_server import RedisServer, start_redis_cluster, start_redis_server


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server shared by a test module; each test starts from an empty database."""
    server = start_redis_server(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def own_redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server for one test alone, which it may kill and restart."""
    server = start_redis_server(tmp_path / "redis")
    yield server
    server.kill()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[RedisServer]]:
    """A three-primary Redis Cluster, shared by the session: it takes a few seconds to agree."""
    servers = start_redis_cluster(tmp_path_factory.mktemp("cluster"))
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture
def cluster_config(redis_cluster: list[RedisServer]) -> CacheConfig:
    """A config that reaches the cluster through one node, as through a configuration endpoint; flushed."""
    for server in redis_cluster:
        with redis.Redis(port=server.port) as client:
            client.flushall()
    return CacheConfig(backend="redis", cluster=True, host="127.0.0.1", port=redis_cluster[0].port, timeout_ms=500)


@pytest.fixture
def raw_redis(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A plain synchronous client on the shared server, flushed before the test."""
    with redis.Redis(port=redis_server.port) as client:
        client.flushall()
        yield client


@pytest.fixture
def redis_config(redis_server: RedisServer, raw_redis: redis.Redis) -> CacheConfig:
    return CacheConfig(backend="redis", host="127.0.0.1", port=redis_server.port, timeout_ms=500)
