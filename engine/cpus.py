"""How many CPUs this process may really use: affinity mask and cgroup CPU quota."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

_CGROUP_ROOT = Path("/sys/fs/cgroup")


def _affinity_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _cgroup_quota(root: Path) -> float | None:
    """CPUs granted by a cgroup v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us`` limit, if any."""
    v2 = root / "cpu.max"
    if v2.is_file():
        quota, _, period = v2.read_text().strip().partition(" ")
        if quota != "max" and period:
            return int(quota) / int(period)
        return None
    v1_quota, v1_period = root / "cpu" / "cpu.cfs_quota_us", root / "cpu" / "cpu.cfs_period_us"
    if v1_quota.is_file() and v1_period.is_file():
        quota_us = int(v1_quota.read_text().strip())
        if quota_us > 0:
            return quota_us / int(v1_period.read_text().strip())
    return None


def available_cpus(cgroup_root: Path = _CGROUP_ROOT) -> int:
    """The smaller of the affinity mask and the cgroup quota (rounded up), at least 1."""
    count = _affinity_count()
    try:
        quota = _cgroup_quota(cgroup_root)
    except (OSError, ValueError, ZeroDivisionError):
        quota = None
    if quota is not None:
        count = min(count, max(1, math.ceil(quota)))
    return max(1, count)


@dataclass(frozen=True)
class ComputeBudget:
    """How the CPUs are shared: ``instances`` batches at once, each on ``intra_op_threads`` threads."""

    instances: int
    intra_op_threads: int


AUTO_WORKER_THREADS = 4
"""The most runtime threads an automatic worker instance gets (measured on 2 CPUs only)."""


def compute_budget(
    instances: int = 0, intra_op_threads: int = 0, cpus: int | None = None, machine_cpus: int | None = None
) -> ComputeBudget:
    """Resolve INSTANCES and INTRA_OP_THREADS (0 = automatic) against the CPUs available.

    ``cpus`` is this process's share (``WORKER_CPUS``), ``machine_cpus`` what the machine gives
    the process (affinity and cgroup quota); both default to the latter. Both automatic:

    - one process: one single-threaded instance per CPU;
    - one of several worker processes with one CPU each (``mlinfer serve`` by default): one
      instance whose threads span the machine (at most ``AUTO_WORKER_THREADS``), not spinning,
      so a lone request uses every core while, under load, the workers share them. This measured
      best on 2 CPUs (bench/RESULTS.md).

    One given: the other fills the share. Both given: taken as they are."""
    machine = machine_cpus if machine_cpus is not None else available_cpus()
    cpus = cpus if cpus is not None else machine
    if instances <= 0 and intra_op_threads <= 0:
        if cpus == 1 and machine > 1:
            return ComputeBudget(instances=1, intra_op_threads=min(machine, AUTO_WORKER_THREADS))
        return ComputeBudget(instances=cpus, intra_op_threads=1)
    if instances <= 0:
        return ComputeBudget(instances=max(1, cpus // intra_op_threads), intra_op_threads=intra_op_threads)
    if intra_op_threads <= 0:
        return ComputeBudget(instances=instances, intra_op_threads=max(1, cpus // instances))
    return ComputeBudget(instances=instances, intra_op_threads=intra_op_threads)
