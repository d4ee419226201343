"""The other worker processes of one server (``mlinfer serve --workers N``, or gunicorn).

Each worker publishes what it serves (registry digest, generation, readiness) as a small JSON
file in ``WORKERS_DIR``, which the supervisor creates and removes. A reload that reaches one
worker (``POST /admin/reload``) is passed on to the others with SIGHUP, the signal each worker
already reloads on; the answer waits until every live worker serves the same registry, and
says what each one serves. Without ``WORKERS_DIR`` (one process) there are no peers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from pathlib import Path

from engine.facade import InferenceEngine
from engine.schemas import WorkerInfo

logger = logging.getLogger(__name__)

RELOAD_WAIT_S = 120.0
"""How long a reload answer waits for the other workers to serve the new registry."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Peers:
    """This worker's record, and the records of the others, in a shared folder."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self.pid = os.getpid()

    @property
    def enabled(self) -> bool:
        return self.directory is not None

    def _path(self, pid: int) -> Path:
        assert self.directory is not None
        return self.directory / f"{pid}.json"

    def publish(self, engine: InferenceEngine) -> None:
        """Write this worker's record (atomically: readers never see half a file)."""
        if self.directory is None:
            return
        report = engine.health()
        info = WorkerInfo(
            pid=self.pid,
            registry_digest=report.registry_digest,
            generation=report.generation,
            reloads=engine.models.reloads,
            ready=report.ready,
        )
        self.directory.mkdir(parents=True, exist_ok=True)
        partial = self.directory / f".{self.pid}.json.tmp"
        partial.write_text(info.model_dump_json())
        partial.replace(self._path(self.pid))

    def withdraw(self) -> None:
        if self.directory is not None:
            with contextlib.suppress(FileNotFoundError):
                self._path(self.pid).unlink()

    def records(self) -> list[WorkerInfo] | None:
        """Every live worker's record, by pid; None with one process."""
        if self.directory is None:
            return None
        found: list[WorkerInfo] = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                info = WorkerInfo.model_validate(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue  # being replaced, or removed
            if _alive(info.pid):
                found.append(info)
        return sorted(found, key=lambda info: info.pid)

    def signal_others(self) -> list[int]:
        """SIGHUP every other live worker (each reloads on it); the pids signalled."""
        signalled = []
        for info in self.records() or []:
            if info.pid == self.pid:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(info.pid, signal.SIGHUP)
                signalled.append(info.pid)
        return signalled

    async def wait_for(self, digest: str, pids: list[int], after: dict[int, int], timeout_s: float = RELOAD_WAIT_S) -> list[WorkerInfo]:
        """Wait until each of ``pids`` finished a reload after ``after`` (pid -> reloads), or died; every record then."""
        deadline = time.monotonic() + timeout_s
        while True:
            records = {info.pid: info for info in self.records() or []}
            pending = [pid for pid in pids if pid in records and records[pid].reloads <= after.get(pid, 0)]
            if not pending or time.monotonic() >= deadline:
                if pending:
                    logger.warning("workers %s did not finish the reload to %s within %.0f s", pending, digest, timeout_s)
                return list(records.values())
            await asyncio.sleep(0.05)
