"""The Redis backend: redis-py asyncio over a bounded connection pool, behind a circuit breaker.

Every call is bounded by ``CacheConfig.timeout_ms`` and raises nothing: a failure or a timeout
is a miss (reads) or a dropped write, is counted, and feeds the breaker; while the breaker is
open, calls skip Redis altogether and cost nothing. Keys on the wire carry ``key_prefix``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import Any, TypeVar

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.connection import SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from engine.cache.base import CacheState, Hit
from engine.cache.breaker import CircuitBreaker
from engine.cache.config import CacheConfig

logger = logging.getLogger(__name__)

T = TypeVar("T")

SCAN_COUNT = 1000


def _common_kwargs(config: CacheConfig) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "max_connections": config.max_connections,
        "socket_timeout": config.timeout_s,
        "socket_connect_timeout": config.timeout_s,
        "health_check_interval": 0,
        "decode_responses": False,
    }
    if config.password is not None:
        kwargs["password"] = config.password
    if config.username is not None:
        kwargs["username"] = config.username
    return kwargs


def build_connection_pool(config: CacheConfig) -> BlockingConnectionPool:
    """A pool for a standalone or primary endpoint; it connects lazily, in the event loop that uses it."""
    kwargs = _common_kwargs(config)
    kwargs["timeout"] = config.timeout_s  # longest wait for a free connection
    kwargs["retry"] = Retry(NoBackoff(), 0)  # the breaker decides when to try again, not a retry loop
    if config.tls:
        kwargs["connection_class"] = SSLConnection
    if config.url:
        # from_url lets what the URL states (host, port, db, credentials, rediss://) override kwargs
        return BlockingConnectionPool.from_url(config.url, db=config.db, **kwargs)
    return BlockingConnectionPool(host=config.host, port=config.port, db=config.db, **kwargs)


def build_cluster_client(config: CacheConfig) -> RedisCluster:
    """A cluster client seeded by one endpoint (e.g. ElastiCache's configuration endpoint); discovers on first use."""
    kwargs = _common_kwargs(config)
    if config.tls:
        kwargs["ssl"] = True
    if config.url:
        return RedisCluster.from_url(config.url, **kwargs)
    return RedisCluster(host=config.host, port=config.port, **kwargs)


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


class RedisCache:
    """``CacheBackend`` over Redis: a standalone server, a primary endpoint, or a cluster (``config.cluster``).

    Build it anywhere; it binds to the event loop of its first call and must be used and closed
    in that loop. ``errors`` counts failed calls, ``skipped`` calls the open breaker saved;
    ``on_error(operation)`` is called on each failure (for a metrics counter).
    """

    def __init__(
        self,
        config: CacheConfig,
        *,
        breaker: CircuitBreaker | None = None,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self._prefix = config.key_prefix
        self._timeout_s = config.timeout_s
        self.pool: BlockingConnectionPool | None = None
        self._client: Redis | RedisCluster
        if config.cluster:
            self._client = build_cluster_client(config)
        else:
            self.pool = build_connection_pool(config)
            self._client = Redis(connection_pool=self.pool)
        if breaker is None:
            breaker = CircuitBreaker(config.breaker_failures, config.breaker_cooldown_s, name="redis cache")
        self.breaker = breaker
        self._on_error = on_error
        self.errors = 0
        self.skipped = 0

    async def _call(self, operation: str, make: Callable[[], Awaitable[T]], *, force: bool = False) -> tuple[bool, T | None]:
        """Run one bounded round trip: (True, result), or (False, None) when skipped or failed."""
        if not force and not self.breaker.allow():
            self.skipped += 1
            return False, None
        try:
            async with asyncio.timeout(self._timeout_s):
                result = await make()
        except Exception as exc:  # the contract is "never raises": any failure is a miss, counted
            self.errors += 1
            self.breaker.record_failure(operation)
            logger.debug("redis cache %s failed: %r", operation, exc)
            if self._on_error is not None:
                self._on_error(operation)
            return False, None
        self.breaker.record_success(operation)
        return True, result

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        wire_keys = [self._prefix + key for key in keys]
        ok, found = await self._call("get", partial(self._mget, wire_keys))
        return found if ok and found is not None else [None] * len(keys)

    async def _mget(self, wire_keys: list[str]) -> list[bytes | None]:
        if isinstance(self._client, RedisCluster):
            reply = await self._client.mget_nonatomic(wire_keys)  # one MGET per slot, pipelined per shard
        else:
            reply = await self._client.mget(wire_keys)
        found: list[bytes | None] = []
        for value in reply if isinstance(reply, list) else ():
            if value is not None and not isinstance(value, bytes):
                raise ValueError(f"unexpected MGET value of type {type(value).__name__}")
            found.append(value)
        if len(found) != len(wire_keys):
            raise ValueError(f"MGET of {len(wire_keys)} keys answered {len(found)} values")
        return found

    async def get_many_with_tier(self, keys: Sequence[str]) -> list[Hit | None]:
        return [None if value is None else Hit(value, "redis") for value in await self.get_many(keys)]

    async def set_many(self, items: Mapping[str, bytes], ttl_s: float) -> None:
        if ttl_s <= 0 or not items:
            return
        ttl_ms = max(1, round(ttl_s * 1000))
        wire_items = [(self._prefix + key, value) for key, value in items.items()]
        await self._call("set", partial(self._set_pipeline, wire_items, ttl_ms))

    async def _set_pipeline(self, wire_items: list[tuple[str, bytes]], ttl_ms: int) -> None:
        async with self._client.pipeline(transaction=False) as pipe:
            for key, value in wire_items:
                pipe.set(key, value, px=ttl_ms)
            await pipe.execute()

    async def delete_prefix(self, prefix: str) -> int:
        """SCAN + UNLINK in batches, on every shard; each round trip is bounded, the whole is not (an admin call).

        It goes to Redis even while the breaker is open. A failure stops it early: the count so far
        is returned, the error counted and logged.
        """
        match = _glob_escape(self._prefix + prefix) + "*"
        deleted = 0
        ok, shards = await self._call("delete", self._shards, force=True)
        for shard in shards or []:
            cursor = 0
            while ok:
                ok, page = await self._call("delete", partial(self._scan_page, shard, cursor, match), force=True)
                if ok and page is not None:
                    cursor, batch = page
                    ok, removed = await self._call("delete", partial(self._unlink, batch), force=True)
                    deleted += removed or 0
                if cursor == 0:
                    break
        if not ok:
            logger.warning("redis cache: invalidation of prefix %r stopped after %d keys", prefix, deleted)
        return deleted

    async def _shards(self) -> list[ClusterNode | None]:
        """The primaries of a cluster, or ``[None]``: the one server behind a plain endpoint."""
        if isinstance(self._client, RedisCluster):
            await self._client.initialize()
            return list(self._client.get_primaries())
        return [None]

    async def _scan_page(self, shard: ClusterNode | None, cursor: int, match: str) -> tuple[int, list[bytes | str]]:
        if isinstance(self._client, RedisCluster) and shard is not None:
            # a cluster answers ({node name: next cursor}, keys), whatever the stubs say
            reply: Any = await self._client.scan(cursor=cursor, match=match, count=SCAN_COUNT, target_nodes=shard)
            cursors, batch = reply
            return int(cursors[shard.name]), list(batch)
        assert isinstance(self._client, Redis)
        next_cursor, batch = await self._client.scan(cursor=cursor, match=match, count=SCAN_COUNT)
        return int(next_cursor), list(batch)

    async def _unlink(self, wire_keys: list[bytes | str]) -> int:
        return int(await self._client.unlink(*wire_keys)) if wire_keys else 0

    @property
    def state(self) -> CacheState:
        return self.breaker.state

    async def close(self) -> None:
        try:
            await self._client.aclose()
            if self.pool is not None:
                await self.pool.disconnect()
        except Exception as exc:  # closing must not fail shutdown either
            logger.debug("redis cache close failed: %r", exc)
