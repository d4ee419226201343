"""``mlinfer serve --workers N``: N server processes on one port, served as one.

- **Balanced connections.** Each worker listens on its own ``SO_REUSEPORT`` socket, so the
  kernel spreads new connections over the workers. (With one shared listening socket, the
  worker that wins the accept race takes every keep-alive connection of a load generator.)
  The supervisor holds the port with a bound socket that never listens, so no other program
  takes it between restarts.
- **One /metrics.** ``PROMETHEUS_MULTIPROC_DIR`` is a fresh folder the supervisor creates and
  removes: every worker writes its values there, and any worker's /metrics sums them all.
- **One registry.** ``WORKERS_DIR`` is where each worker publishes what it serves; a reload
  reaching one worker is passed on to the others (``handlers.peers``). SIGHUP to the
  supervisor reaches every worker.
- **Connection limits.** Each worker applies them on its own (``handlers.http_protocol``):
  ``MAX_CONNECTIONS`` is per worker, and each raises its own open files limit to fit it.
- **Drain.** SIGTERM (or SIGINT) is passed on: each worker stops accepting, finishes its
  in-flight requests within ``SHUTDOWN_TIMEOUT_S``, then exits. A worker that dies is
  replaced; workers that keep dying at start (a port in use, a broken registry) stop the server.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from engine.cpus import available_cpus

logger = logging.getLogger("handlers.supervisor")

_EARLY_EXIT_S = 10.0
"""A worker that exits sooner than this after its start counts as failing at start."""
_MAX_EARLY_EXITS = 3
_KILL_MARGIN_S = 10.0


def listening_socket(host: str, port: int, *, listen: bool = True) -> socket.socket:
    """A TCP socket on ``host:port`` with SO_REUSEPORT (and listening, unless ``listen`` is false)."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot bind {host}:{port}: {exc.strerror}") from exc
    if listen:
        sock.listen(2048)
    sock.set_inheritable(False)
    return sock


def forget_worker(pid: int, metrics_dir: Path, workers_dir: Path) -> None:
    """A dead worker's live gauges stop counting (its counters stay in the sums), and it leaves
    the peers' list. Used by the supervisor and by the gunicorn config."""
    from prometheus_client import multiprocess  # not at import: gunicorn's master imports this module

    multiprocess.mark_process_dead(pid, str(metrics_dir))  # type: ignore[no-untyped-call]
    with contextlib.suppress(FileNotFoundError):
        (workers_dir / f"{pid}.json").unlink()


@dataclass
class _Worker:
    index: int
    process: subprocess.Popen[bytes]
    started: float = field(default_factory=time.monotonic)


class Supervisor:
    """Starts, watches, signals and stops the worker processes."""

    def __init__(self, host: str, port: int, workers: int, *, shutdown_timeout_s: float) -> None:
        self.host = host
        self.port = port
        self.count = workers
        self.shutdown_timeout_s = shutdown_timeout_s
        self._workers: dict[int, _Worker] = {}
        self._signals: list[int] = []
        self._early_exits = 0

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._signals.append(signum)

    def _spawn(self, index: int, env: dict[str, str]) -> None:
        process = subprocess.Popen([sys.executable, "-m", "handlers.supervisor", self.host, str(self.port)], env=env)
        self._workers[process.pid] = _Worker(index, process)
        logger.info("worker %d started (pid %d)", index, process.pid)

    def run(self) -> int:
        run_dir = Path(tempfile.mkdtemp(prefix="mlinfer-serve-"))
        metrics_dir, workers_dir = run_dir / "metrics", run_dir / "workers"
        metrics_dir.mkdir()
        workers_dir.mkdir()
        holder = listening_socket(self.host, self.port, listen=False)
        self.port = holder.getsockname()[1]
        env = {
            **os.environ,
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            "WORKERS_DIR": str(workers_dir),
            # Each worker sizes its instances from its share of the CPUs: N workers never oversubscribe.
            "WORKER_CPUS": os.environ.get("WORKER_CPUS") or str(max(1, available_cpus() // self.count)),
        }
        wake_read, wake_write = socket.socketpair()
        wake_read.setblocking(False)
        wake_write.setblocking(False)
        previous_wakeup = signal.set_wakeup_fd(wake_write.fileno())
        handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        previous = {signum: signal.signal(signum, self._on_signal) for signum in handled}
        logger.info("serving on http://%s:%d with %d workers", self.host, self.port, self.count)
        try:
            for index in range(self.count):
                self._spawn(index, env)
            return self._watch(env, wake_read, metrics_dir, workers_dir)
        finally:
            self._stop()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            signal.set_wakeup_fd(previous_wakeup)
            wake_read.close()
            wake_write.close()
            holder.close()
            shutil.rmtree(run_dir, ignore_errors=True)

    def _watch(self, env: dict[str, str], wake: socket.socket, metrics_dir: Path, workers_dir: Path) -> int:
        while True:
            select.select([wake], [], [], 0.5)
            with contextlib.suppress(BlockingIOError):
                wake.recv(4096)
            while self._signals:
                signum = self._signals.pop(0)
                if signum == signal.SIGHUP:
                    logger.info("SIGHUP: every worker reloads the registry")
                    self._send(signal.SIGHUP)
                else:
                    logger.info("%s: draining the workers (at most %.0f s)", signal.Signals(signum).name, self.shutdown_timeout_s)
                    return 0
            for pid, worker in list(self._workers.items()):
                code = worker.process.poll()
                if code is None:
                    continue
                del self._workers[pid]
                forget_worker(pid, metrics_dir, workers_dir)
                early = time.monotonic() - worker.started < _EARLY_EXIT_S
                self._early_exits = self._early_exits + 1 if early else 0
                if self._early_exits >= _MAX_EARLY_EXITS:
                    logger.error("workers keep exiting at start (last: pid %d, exit code %s): stopping", pid, code)
                    return 1
                logger.warning("worker %d (pid %d) exited with %s: starting another", worker.index, pid, code)
                self._spawn(worker.index, env)

    def _send(self, signum: int) -> None:
        for worker in self._workers.values():
            with contextlib.suppress(ProcessLookupError):
                worker.process.send_signal(signum)

    def _stop(self) -> None:
        self._send(signal.SIGTERM)
        deadline = time.monotonic() + self.shutdown_timeout_s + _KILL_MARGIN_S
        for worker in self._workers.values():
            try:
                worker.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.error("worker pid %d did not stop in time: killing it", worker.process.pid)
                worker.process.kill()
                worker.process.wait()
        self._workers.clear()


def run_worker(host: str, port: int) -> None:
    """One worker: the app on its own SO_REUSEPORT socket, until SIGTERM (then drained)."""
    from handlers.server import uvicorn_server

    # Bound, not listening: uvicorn listens once the models are loaded, so no connection waits
    # in this worker's backlog while it starts.
    sock = listening_socket(host, port, listen=False)
    uvicorn_server().run(sockets=[sock])


if __name__ == "__main__":
    run_worker(sys.argv[1], int(sys.argv[2]))
