"""engine/cpus.py: cgroup v1/v2 CPU quotas (fake cgroup roots on disk) bounded by the affinity mask."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.cpus import available_cpus, compute_budget

AFFINITY = len(os.sched_getaffinity(0))


def _v2(root: Path, content: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "cpu.max").write_text(content)
    return root


def _v1(root: Path, quota: str, period: str = "100000\n") -> Path:
    (root / "cpu").mkdir(parents=True, exist_ok=True)
    (root / "cpu" / "cpu.cfs_quota_us").write_text(quota)
    (root / "cpu" / "cpu.cfs_period_us").write_text(period)
    return root


def test_no_cgroup_files_gives_the_affinity_count(tmp_path: Path) -> None:
    assert available_cpus(tmp_path) == AFFINITY


def test_v2_max_means_no_limit(tmp_path: Path) -> None:
    assert available_cpus(_v2(tmp_path, "max 100000\n")) == AFFINITY


@pytest.mark.parametrize(
    ("content", "quota_cpus"),
    [
        ("150000 100000\n", 2),  # 1.5 CPUs rounds up
        ("50000 100000\n", 1),  # half a CPU is still one
        ("100000 100000\n", 1),
        ("200000 100000", 2),  # no trailing newline
        ("1000 100000\n", 1),  # a tiny quota never gives 0
    ],
)
def test_v2_quota_is_rounded_up_and_bounded_by_affinity(tmp_path: Path, content: str, quota_cpus: int) -> None:
    assert available_cpus(_v2(tmp_path, content)) == min(AFFINITY, quota_cpus)


def test_v2_quota_larger_than_affinity_gives_affinity(tmp_path: Path) -> None:
    big = (AFFINITY + 8) * 100000
    assert available_cpus(_v2(tmp_path, f"{big} 100000\n")) == AFFINITY


def test_v2_quota_of_one_cpu_limits_to_one(tmp_path: Path) -> None:
    # Whatever the machine, a one-CPU quota gives exactly 1.
    assert available_cpus(_v2(tmp_path, "100000 100000\n")) == 1


def test_v2_takes_precedence_over_v1(tmp_path: Path) -> None:
    _v1(tmp_path, "-1\n")
    _v2(tmp_path, "50000 100000\n")
    assert available_cpus(tmp_path) == 1


def test_v1_quota(tmp_path: Path) -> None:
    assert available_cpus(_v1(tmp_path, "50000\n")) == 1
    assert available_cpus(_v1(tmp_path, "150000\n", "100000\n")) == min(AFFINITY, 2)


def test_v1_no_quota_is_minus_one(tmp_path: Path) -> None:
    assert available_cpus(_v1(tmp_path, "-1\n")) == AFFINITY


def test_v1_needs_both_files(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    assert available_cpus(tmp_path) == AFFINITY


@pytest.mark.parametrize("content", ["garbage\n", "abc 100000\n", ""])
def test_unreadable_v2_quota_falls_back_to_affinity(tmp_path: Path, content: str) -> None:
    assert available_cpus(_v2(tmp_path, content)) == AFFINITY


def test_default_root_result_is_bounded_by_affinity() -> None:
    count = available_cpus()
    assert 1 <= count <= AFFINITY


def test_a_narrower_affinity_mask_wins_over_a_larger_quota(tmp_path: Path) -> None:
    root = _v2(tmp_path, f"{(AFFINITY + 8) * 100000} 100000\n")
    original = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(original)})
    try:
        assert available_cpus(root) == 1
        assert available_cpus(tmp_path / "missing") == 1
    finally:
        os.sched_setaffinity(0, original)
    assert available_cpus(root) == AFFINITY


@pytest.mark.parametrize(
    ("instances", "threads", "cpus", "expected"),
    [
        (0, 0, 4, (4, 1)),  # automatic: one single-threaded instance per CPU
        (1, 0, 4, (1, 4)),  # one instance takes every CPU
        (0, 2, 4, (2, 2)),
        (0, 8, 4, (1, 8)),
        (3, 2, 4, (3, 2)),  # both given: as they are
        (0, 0, 1, (1, 1)),
    ],
)
def test_compute_budget_fills_the_cpus(instances: int, threads: int, cpus: int, expected: tuple[int, int]) -> None:
    budget = compute_budget(instances, threads, cpus=cpus, machine_cpus=cpus)
    assert (budget.instances, budget.intra_op_threads) == expected


@pytest.mark.parametrize(
    ("share", "machine", "expected"),
    [
        (1, 2, (1, 2)),  # mlinfer serve's default on 2 CPUs: 2 workers x 1 instance x 2 threads
        (1, 16, (1, 4)),  # threads capped at AUTO_WORKER_THREADS
        (4, 16, (4, 1)),  # WORKERS=4 on 16 CPUs: each worker's share as single-threaded instances
    ],
)
def test_a_worker_process_budget_from_its_share(share: int, machine: int, expected: tuple[int, int]) -> None:
    budget = compute_budget(cpus=share, machine_cpus=machine)
    assert (budget.instances, budget.intra_op_threads) == expected
