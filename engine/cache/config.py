"""The cache's configuration: frozen at construction, built from the service settings by the caller."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

BackendName = Literal["memory", "redis", "tiered", "none"]


@dataclass(frozen=True)
class CacheConfig:
    """Which backend, and how to reach Redis.

    ``url`` (``redis://``, ``rediss://`` or ``unix://``) wins over ``host``/``port``/``db``/``password``
    for whatever it states; ``password`` and ``db`` still apply when the URL leaves them out.
    ``tls`` forces TLS even on a ``redis://`` URL. A cluster has only ``db`` 0.
    """

    backend: BackendName = "memory"
    host: str = "localhost"
    port: int = 6379
    db: int = 0
    password: str | None = None
    username: str | None = None
    url: str | None = None
    tls: bool = False
    cluster: bool = False
    """The endpoint is a Redis Cluster (ElastiCache cluster mode enabled, ElastiCache Serverless, MemoryDB):
    shards are discovered from it and each multi-key call is split by slot, one pipeline per shard."""
    timeout_ms: float = 50.0
    """Bound on every Redis call (connect, pool wait, command): past it, a read misses and a write is dropped."""
    key_prefix: str = "mlinfer:"
    """Namespace of this service's keys in a shared Redis."""
    max_connections: int = 64
    memory_max_entries: int = 10_000
    """Size bound of the in-process LRU (``memory``, and L1 of ``tiered``)."""
    l1_ttl_s: float = 60.0
    """Longest life of an L1 entry in ``tiered``: bounds how stale another replica's invalidation can leave it."""
    breaker_failures: int = 5
    """Consecutive Redis failures that open the circuit."""
    breaker_cooldown_s: float = 5.0
    """How long an open circuit skips Redis before one probe call."""

    def __post_init__(self) -> None:
        positive = {
            "timeout_ms": self.timeout_ms,
            "max_connections": self.max_connections,
            "memory_max_entries": self.memory_max_entries,
            "l1_ttl_s": self.l1_ttl_s,
            "breaker_failures": self.breaker_failures,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ValueError(f"cache {name} must be positive, got {value!r}")
        if self.breaker_cooldown_s < 0:
            raise ValueError(f"cache breaker_cooldown_s must not be negative, got {self.breaker_cooldown_s!r}")

    @property
    def timeout_s(self) -> float:
        return self.timeout_ms / 1000.0
