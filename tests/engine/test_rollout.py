"""Rollout strategies: deterministic, sticky assignment and the configured shares."""

from __future__ import annotations

from collections import Counter

import pytest

from engine.registry import ModelSpec
from engine.rollout import BUCKETS, ABTest, Canary, Pinned, Shadow, routing_bucket, strategy_for

KEYS = [f"user-{i}" for i in range(10_000)]


def _shares(strategy: object, model: str = "sentiment_analysis") -> dict[str, float]:
    assign = strategy.assign  # type: ignore[attr-defined]
    counts = Counter(assign(routing_bucket(model, key)).version for key in KEYS)
    return {version: 100.0 * n / len(KEYS) for version, n in counts.items()}


def test_bucket_is_stable_and_in_range() -> None:
    # Fixed value: the hash must not change between processes or releases, or users would
    # hop between versions on every deploy.
    assert routing_bucket("sentiment_analysis", "user-1") == routing_bucket("sentiment_analysis", "user-1") == 380
    assert all(0 <= routing_bucket("m", key) < BUCKETS for key in KEYS[:1000])
    assert routing_bucket("model-a", "user-1") != routing_bucket("model-b", "user-1")


def test_canary_share_over_ten_thousand_keys() -> None:
    shares = _shares(Canary(stable="v1", canary="v2", percentage=10))
    assert shares["v2"] == pytest.approx(10.0, abs=1.5)
    assert set(shares) == {"v1", "v2"}


@pytest.mark.parametrize("percentage", [0, 100])
def test_canary_extremes(percentage: float) -> None:
    shares = _shares(Canary(stable="v1", canary="v2", percentage=percentage))
    assert shares == ({"v1": 100.0} if percentage == 0 else {"v2": 100.0})


def test_assignment_is_sticky() -> None:
    canary = Canary(stable="v1", canary="v2", percentage=50)
    first = {key: canary.assign(routing_bucket("m", key)).version for key in KEYS[:500]}
    again = Canary(stable="v1", canary="v2", percentage=50)
    for _ in range(3):
        assert {key: again.assign(routing_bucket("m", key)).version for key in KEYS[:500]} == first


def test_ab_weights_hold() -> None:
    shares = _shares(ABTest(weights=(("v1", 50.0), ("v2", 30.0), ("v3", 20.0))))
    assert shares["v1"] == pytest.approx(50.0, abs=1.5)
    assert shares["v2"] == pytest.approx(30.0, abs=1.5)
    assert shares["v3"] == pytest.approx(20.0, abs=1.5)
    assignment = ABTest(weights=(("v1", 1.0), ("v2", 1.0))).assign(0)
    assert (assignment.strategy, assignment.arm) == ("ab_test", "v1")


def test_pinned_and_shadow() -> None:
    assert _shares(Pinned(version="v1")) == {"v1": 100.0}
    shadow = Shadow(primary="v1", shadow="v2").assign(1234)
    assert (shadow.version, shadow.shadow, shadow.strategy) == ("v1", "v2", "shadow")


def test_strategy_from_registry_entries() -> None:
    versions = {"v1": {"path": "a.onnx"}, "v2": {"path": "b.onnx"}}
    canary = ModelSpec.model_validate(
        {
            "default_version": "v1",
            "versions": versions,
            "rollout_strategy": {"type": "canary", "canary_percentage": 10, "target_version": "v2"},
        }
    )
    assert strategy_for(canary) == Canary(stable="v1", canary="v2", percentage=10)
    ab = ModelSpec.model_validate(
        {"default_version": "v1", "versions": versions, "rollout_strategy": {"type": "ab_test", "weights": {"v1": 3, "v2": 1}}}
    )
    assert strategy_for(ab) == ABTest(weights=(("v1", 3.0), ("v2", 1.0)))
    shadow = ModelSpec.model_validate(
        {"default_version": "v1", "versions": versions, "rollout_strategy": {"type": "shadow", "target_version": "v2"}}
    )
    assert strategy_for(shadow) == Shadow(primary="v1", shadow="v2")
    assert strategy_for(ModelSpec.model_validate({"default_version": "v2", "versions": versions})) == Pinned(version="v2")
