"""The result cache: backends behind one Protocol, the value codec and the key.

``build_cache(config)`` picks the backend named by ``CACHE_BACKEND``: ``memory`` (the default,
in-process), ``redis``, ``tiered`` (memory in front of Redis) or ``none``.
"""

from __future__ import annotations

from collections.abc import Callable

from engine.cache.base import CacheBackend, CacheState, Hit, NoCache, Tier
from engine.cache.breaker import BreakerPosition, CircuitBreaker
from engine.cache.codec import FORMAT_VERSION, decode_result, encode_result
from engine.cache.config import BackendName, CacheConfig
from engine.cache.keys import cache_key, content_digest, key_prefix
from engine.cache.memory import MemoryCache
from engine.cache.redis_backend import RedisCache
from engine.cache.tiered import TieredCache


def build_cache(config: CacheConfig, *, on_error: Callable[[str], None] | None = None) -> CacheBackend:
    """The backend ``config.backend`` names. Nothing connects yet: Redis connects on first use."""
    if config.backend == "memory":
        return MemoryCache(config.memory_max_entries)
    if config.backend == "redis":
        return RedisCache(config, on_error=on_error)
    if config.backend == "tiered":
        return TieredCache(MemoryCache(config.memory_max_entries), RedisCache(config, on_error=on_error), l1_ttl_s=config.l1_ttl_s)
    if config.backend == "none":
        return NoCache()
    raise ValueError(f"unknown cache backend {config.backend!r}; expected memory, redis, tiered or none")


__all__ = [
    "FORMAT_VERSION",
    "BackendName",
    "BreakerPosition",
    "CacheBackend",
    "CacheConfig",
    "CacheState",
    "CircuitBreaker",
    "Hit",
    "MemoryCache",
    "NoCache",
    "RedisCache",
    "Tier",
    "TieredCache",
    "build_cache",
    "cache_key",
    "content_digest",
    "decode_result",
    "encode_result",
    "key_prefix",
]
