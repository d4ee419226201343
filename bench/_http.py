"""Helpers shared by the benchmarks: a ``mlinfer serve`` subprocess, a cheap keep-alive HTTP client,
a closed-loop load driver, percentiles, and the CPU load of the machine while a measurement runs.
``free_port`` is ``emulator.loopback``'s.

Imported by the scripts beside it (``bench/bench_serving.py``, ``bench/bench_cache.py``), which run
as ``.venv/bin/python bench/<script>.py``: their directory is first on ``sys.path``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NamedTuple, Protocol

import httpx
import numpy as np

from emulator.loopback import free_port as free_port  # the one the tests use too

REPO_ROOT = Path(__file__).resolve().parents[1]
REGISTRY_PATH = REPO_ROOT / "model_registry.yaml"
MODEL_NAME = "sentiment_analysis"
AUTH_TOKEN = "bench-token"
PREDICT_PATH = "/api/v1/predict"
WARMUP_SECONDS = 1.0
WARMUP_CALLS = 10
SERVER_START_TIMEOUT_S = 120.0
IDLE_CHECK_S = 1.0

# ---------------------------------------------------------------------------- percentiles


@dataclass(frozen=True)
class LatencySummary:
    """Latency figures of one measurement, in milliseconds."""

    count: int
    mean_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100, linear interpolation); NaN for no values."""
    return float(np.percentile(values, q)) if len(values) else float("nan")


def summarize(latencies_ms: Sequence[float]) -> LatencySummary:
    if not latencies_ms:
        nan = float("nan")
        return LatencySummary(0, nan, nan, nan, nan)
    p50, p95, p99 = (float(x) for x in np.percentile(latencies_ms, [50, 95, 99]))
    return LatencySummary(len(latencies_ms), float(np.mean(latencies_ms)), p50, p95, p99)


# ---------------------------------------------------------------------------- CPU load


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _busy_cpu_seconds() -> float:
    """CPU seconds the whole machine spent busy (steal included: another VM had the core)."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in Path("/proc/stat").read_text().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / _CLK_TCK


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (all threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime


@dataclass(frozen=True)
class CpuReport:
    """CPU use over a measurement: ``other_pct`` is the share of the machine's capacity used by processes other than
    the watched ones; ``process_pct`` is each watched process's use in percent of one core."""

    wall_s: float
    other_pct: float | None
    process_pct: Mapping[int, float]


class CpuWatch:
    """Watches the machine's CPU use from creation to ``stop()`` (Linux /proc)."""

    def __init__(self, pids: Sequence[int]) -> None:
        self._pids = tuple(pids) or (os.getpid(),)
        self._cpus = os.cpu_count() or 1
        self._start = self._sample()

    def _sample(self) -> tuple[float, float, tuple[float, ...]] | None:
        try:
            return time.perf_counter(), _busy_cpu_seconds(), tuple(process_cpu_seconds(p) for p in self._pids)
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> CpuReport | None:
        end = self._sample()
        if self._start is None or end is None:
            return None
        wall = end[0] - self._start[0]
        if wall <= 0:
            return None
        busy = end[1] - self._start[1]
        used = [b - a for a, b in zip(self._start[2], end[2], strict=True)]
        other = max(0.0, (busy - sum(used)) / (wall * self._cpus) * 100.0)
        return CpuReport(wall, other, {pid: u / wall * 100.0 for pid, u in zip(self._pids, used, strict=True)})

    def other_pct(self) -> float | None:
        report = self.stop()
        return None if report is None else report.other_pct


def other_cpu_now() -> float | None:
    """CPU share used by other processes over the next ``IDLE_CHECK_S`` seconds."""
    watch = CpuWatch((os.getpid(),))
    time.sleep(IDLE_CHECK_S)
    return watch.other_pct()


def load_average() -> str:
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "n/a"


@dataclass(frozen=True)
class MachineFacts:
    available_cpus: int
    os_cpu_count: int | None
    cpu_model: str
    onnxruntime: str
    providers: str
    python: str
    platform: str
    other_cpu_before: float | None


def machine_facts(other_cpu_before: float | None) -> MachineFacts:
    import onnxruntime as ort

    from engine.cpus import available_cpus
    from engine.session import SessionConfig

    cpu_model = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    return MachineFacts(
        available_cpus=available_cpus(),
        os_cpu_count=os.cpu_count(),
        cpu_model=cpu_model,
        onnxruntime=ort.__version__,
        providers=", ".join(SessionConfig().resolved_providers()),
        python=platform.python_version(),
        platform=platform.platform(),
        other_cpu_before=other_cpu_before,
    )


# ---------------------------------------------------------------------------- closed-loop load


@dataclass(frozen=True)
class Bounds:
    seconds: float
    max_calls: int
    pids: tuple[int, ...] = ()  # processes of the benchmark itself (client, server): the rest of the machine's CPU use is "other"


class Timing(NamedTuple):
    latencies_ms: tuple[float, ...]
    elapsed_s: float
    cpu: CpuReport | None


AsyncCall = Callable[[int, int], Awaitable[None]]  # (client, iteration)


async def measure_async(call: AsyncCall, bounds: Bounds, concurrency: int) -> Timing:
    """Warm up every client, then run ``concurrency`` closed-loop clients until ``bounds`` runs out."""

    async def warm(client: int) -> None:
        warm_deadline = time.perf_counter() + WARMUP_SECONDS
        for i in range(WARMUP_CALLS):
            await call(client, i)
            if time.perf_counter() > warm_deadline:
                break

    await asyncio.gather(*(warm(c) for c in range(concurrency)))
    latencies: list[float] = []
    watch = CpuWatch(bounds.pids)
    started = time.perf_counter()
    deadline = started + bounds.seconds

    async def client_loop(client: int) -> None:
        i = 0
        while len(latencies) < bounds.max_calls and time.perf_counter() < deadline:
            t0 = time.perf_counter()
            await call(client, i)
            latencies.append((time.perf_counter() - t0) * 1000.0)
            i += 1

    await asyncio.gather(*(client_loop(c) for c in range(concurrency)))
    elapsed = time.perf_counter() - started
    return Timing(tuple(latencies), elapsed, watch.stop())


# ---------------------------------------------------------------------------- the server


def mlinfer_executable() -> str:
    beside = Path(sys.executable).parent / "mlinfer"
    if beside.is_file():
        return str(beside)
    raise FileNotFoundError(f"{beside} not found: install the project into the venv (`pip install -e .`)")


@dataclass(frozen=True)
class Server:
    base_url: str
    port: int
    pid: int


@contextlib.contextmanager
def running_server(port: int, env: Mapping[str, str] | None = None, unset: Iterable[str] = ()) -> Iterator[Server]:
    """Start ``mlinfer serve`` on ``port`` (with ``env`` added and ``unset`` removed from this process's
    environment), wait for /health 200, and always stop it."""
    server_env = {
        **os.environ,
        "AUTH_TOKEN": AUTH_TOKEN,
        "LOG_LEVEL": "WARNING",
        "MODEL_REGISTRY_PATH": str(REGISTRY_PATH),
        "ENABLE_METRICS": "true",
        **(env or {}),
    }
    for name in unset:
        server_env.pop(name, None)
    base_url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile(mode="w+") as server_log:
        proc = subprocess.Popen(
            [mlinfer_executable(), "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO_ROOT,
            env=server_env,
            stdout=server_log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_healthy(proc, base_url, server_log)
            yield Server(base_url, port, proc.pid)
        finally:
            stop_process(proc)


def _tail(stream: IO[str], chars: int = 4000) -> str:
    stream.flush()
    stream.seek(0)
    return stream.read()[-chars:]


def wait_healthy(proc: subprocess.Popen[bytes], base_url: str, server_log: IO[str]) -> None:
    deadline = time.perf_counter() + SERVER_START_TIMEOUT_S
    with httpx.Client(timeout=2.0) as client:
        while time.perf_counter() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode} before becoming healthy:\n{_tail(server_log)}")
            with contextlib.suppress(httpx.TransportError):
                if client.get(f"{base_url}/health").status_code == 200:
                    return
            time.sleep(0.2)
    raise TimeoutError(f"server not healthy after {SERVER_START_TIMEOUT_S:.0f} s:\n{_tail(server_log)}")


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


# ---------------------------------------------------------------------------- HTTP clients


class PostClient(Protocol):
    async def post(self, body: bytes) -> bytes: ...

    async def aclose(self) -> None: ...


class RawHttpClient:
    """One keep-alive HTTP/1.1 connection over asyncio streams: the cheapest client Python offers."""

    def __init__(self, host: str, port: int, *, path: str = PREDICT_PATH, token: str = AUTH_TOKEN) -> None:
        self._host, self._port = host, port
        self._head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\nX-Token: {token}\r\nContent-Length: "
        ).encode("ascii")
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        return self._reader, self._writer

    async def post(self, body: bytes) -> bytes:
        reader, writer = await self._connect()
        writer.write(self._head + str(len(body)).encode("ascii") + b"\r\n\r\n" + body)
        await writer.drain()
        header_block = await reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = header_block.decode("latin-1").split("\r\n")
        headers = dict(line.split(":", 1) for line in header_lines if line)
        lowered = {k.strip().lower(): v.strip() for k, v in headers.items()}
        if "content-length" not in lowered:
            raise RuntimeError(f"response without Content-Length: {status_line} {lowered}")
        payload = await reader.readexactly(int(lowered["content-length"]))
        status = int(status_line.split(" ", 2)[1])
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {payload[:500]!r}")
        return payload

    async def aclose(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(ConnectionError):
                await self._writer.wait_closed()


class HttpxClient:
    """``httpx.AsyncClient`` with keep-alive; one client per simulated caller."""

    def __init__(self, base_url: str, *, path: str = PREDICT_PATH, token: str = AUTH_TOKEN) -> None:
        self._path = path
        self._client = httpx.AsyncClient(base_url=base_url, headers={"X-Token": token, "Content-Type": "application/json"})

    async def post(self, body: bytes) -> bytes:
        response = await self._client.post(self._path, content=body)
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:500]}")
        return response.content

    async def aclose(self) -> None:
        await self._client.aclose()


def make_client(kind: str, server: Server) -> PostClient:
    """``raw`` (asyncio streams) or ``httpx``."""
    return RawHttpClient("127.0.0.1", server.port) if kind == "raw" else HttpxClient(server.base_url)
