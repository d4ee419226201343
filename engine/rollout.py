"""Rollout strategies: which version answers a request that names none.

Assignment is sticky and deterministic: a stable hash of the model name and the routing
key (the ``X-Routing-Key`` header, else the request id) picks one of 10,000 buckets, and
each strategy maps buckets to versions. The same key always gets the same version; nothing
here calls a random number generator.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol

from engine.registry import ModelSpec

BUCKETS = 10_000


@dataclass(frozen=True)
class Assignment:
    """The version that answers, the strategy and arm that chose it, and an optional shadow."""

    version: str
    strategy: str
    arm: str
    shadow: str | None = None
    failover_from: str | None = None
    """The arm the strategy chose when it could not answer (it failed to load): ``version`` and
    ``arm`` are then the default version that answers instead."""


def routing_bucket(model: str, key: str) -> int:
    """A stable bucket in [0, BUCKETS) for this model and routing key."""
    digest = hashlib.sha256(f"{model}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


class Strategy(Protocol):
    def assign(self, bucket: int) -> Assignment:
        """The assignment for a bucket in [0, BUCKETS)."""
        ...


@dataclass(frozen=True)
class Pinned:
    version: str

    def assign(self, bucket: int) -> Assignment:
        return Assignment(version=self.version, strategy="pinned", arm=self.version)


@dataclass(frozen=True)
class Canary:
    stable: str
    canary: str
    percentage: float

    def assign(self, bucket: int) -> Assignment:
        version = self.canary if bucket < round(self.percentage * BUCKETS / 100) else self.stable
        return Assignment(version=version, strategy="canary", arm=version)


@dataclass(frozen=True)
class ABTest:
    """Weighted split: each version owns a contiguous range of buckets proportional to its weight."""

    weights: tuple[tuple[str, float], ...]

    def assign(self, bucket: int) -> Assignment:
        total = sum(w for _, w in self.weights)
        upper = 0.0
        for version, weight in self.weights:
            upper += weight * BUCKETS / total
            if bucket < upper:
                return Assignment(version=version, strategy="ab_test", arm=version)
        last = self.weights[-1][0]
        return Assignment(version=last, strategy="ab_test", arm=last)


@dataclass(frozen=True)
class Shadow:
    primary: str
    shadow: str

    def assign(self, bucket: int) -> Assignment:
        return Assignment(version=self.primary, strategy="shadow", arm=self.primary, shadow=self.shadow)


def strategy_for(model: ModelSpec) -> Strategy:
    rollout = model.rollout_strategy
    if rollout.type == "canary" and rollout.target_version is not None:
        return Canary(stable=model.default_version, canary=rollout.target_version, percentage=rollout.canary_percentage)
    if rollout.type == "ab_test" and rollout.weights:
        return ABTest(weights=tuple(rollout.weights.items()))
    if rollout.type == "shadow" and rollout.target_version is not None:
        return Shadow(primary=model.default_version, shadow=rollout.target_version)
    return Pinned(version=model.default_version)
