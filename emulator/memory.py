"""A function's MemorySize, enforced on its execution environment's process (and its children).

Lambda kills an environment whose memory exceeds the function's MemorySize, and the invocation
fails with ``Runtime.OutOfMemory``. Here a ``MemoryWatch`` polls the resident memory of the
environment's process tree every ``interval_s`` while it initialises or invokes; over the limit,
every process of the tree gets SIGKILL. A spike shorter than one poll is caught when the watch
stops: the process's own peak (``VmHWM``) is compared with the limit then.

The figures are the kernel's, from ``/proc``: ``VmRSS`` (``statm``) per process while polling,
``VmHWM`` (``status``) for the peak. Children are found by scanning ``/proc`` for their parent ids
(kernels built without ``/proc/<pid>/task/<tid>/children``), every ``_SCAN_EVERY`` polls only (half a
second): a child started and gone within that is not counted. ``peak_mb`` is what the REPORT line calls
Max Memory Used: the larger of the process's own peak and the largest total the polls saw.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path

logger = logging.getLogger(__name__)

_PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
_SCAN_EVERY = 25
"""Look for new child processes every this many polls (a scan reads every /proc/<pid>/stat)."""


class MemoryWatch:
    """Watches one process tree until stopped, or until it exceeds ``limit_mb`` (then kills it).

    ``limit_mb`` None only measures (``--no-memory-limit``): the peak is still reported.
    """

    def __init__(self, pid: int, limit_mb: int | None, *, interval_s: float = 0.02) -> None:
        self.pid = pid
        self.limit_mb = limit_mb
        self.interval_s = interval_s
        self.exceeded = False
        """The process was killed for exceeding ``limit_mb``."""
        self._stopped = asyncio.Event()
        self._children: set[int] = set()
        self._peak_kb = 0

    async def run(self) -> None:
        """Poll until ``stop`` (then check the peak once more) or until the limit is exceeded."""
        polls = 0
        while True:
            if polls % _SCAN_EVERY == 0:
                self._children = _descendants(self.pid)
            polls += 1
            if self._over_limit(self._sample()):
                self._kill()
                return
            try:
                await asyncio.wait_for(self._stopped.wait(), self.interval_s)
            except TimeoutError:
                continue
            if self._over_limit(max(self._sample(), _peak_kb(self.pid))):
                self._kill()
            return

    def stop(self) -> None:
        """End ``run`` (after its last check of the peak)."""
        self._stopped.set()

    def peak_mb(self) -> int:
        """The tree's peak resident memory in whole MB, rounded down: the process's own VmHWM, or more if its children
        added to it. A tree killed for exceeding the limit by under 1 MB reports the limit itself, as Lambda's REPORT does."""
        return max(self._peak_kb, _peak_kb(self.pid)) // 1024

    def _sample(self) -> int:
        """The tree's resident memory now (KB), also kept as the peak seen."""
        total = sum(_rss_kb(pid) for pid in (self.pid, *self._children))
        self._peak_kb = max(self._peak_kb, total)
        return total

    def _over_limit(self, kb: int) -> bool:
        return self.limit_mb is not None and kb > self.limit_mb * 1024

    def _kill(self) -> None:
        self._peak_kb = max(self._peak_kb, _peak_kb(self.pid))  # read before the process is gone
        self.exceeded = True
        logger.debug("process %d exceeded %s MB: killed", self.pid, self.limit_mb)
        for pid in (self.pid, *self._children):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _rss_kb(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/statm").read_text().split()
    except OSError:  # gone
        return 0
    return int(fields[1]) * _PAGE_KB


def _peak_kb(pid: int) -> int:
    """VmHWM: the process's peak resident memory (KB); 0 once it is gone (or a zombie)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def _descendants(root: int) -> set[int]:
    """Every live process below ``root``, from the parent ids in ``/proc/<pid>/stat``."""
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ")".
        parents[int(entry.name)] = int(stat.rpartition(")")[2].split()[1])
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier and pid not in found}
        found |= frontier
    return found
