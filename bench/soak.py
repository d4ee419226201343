"""Soak: `mlinfer serve` under an open-loop mix at half of its measured capacity, minute by minute.

1. Starts `mlinfer serve` with its defaults (one worker per CPU, the repository's registry: the
   sentiment model's v1 with a 10% canary to v3) and measures its capacity on the mix below with
   16 closed-loop connections (requests shed with 503 are not counted; the connection pauses).
2. Sends the same mix open loop (Poisson arrivals, fixed seed) at ``--load`` (default 0.5) of that
   capacity for ``--minutes`` (default 5). Latency counts from each request's scheduled start, so a
   stalled server shows up in the figures instead of slowing the load down.
3. Prints, per minute: requests, errors, sheds, p50 / p99 latency and the server's RSS
   (supervisor and workers together), then checks the goals: 0 errors, at most 1% of requests
   shed, RSS growth after the first minute <= 10%, and every minute's p99 within 2x of the first
   minute's. It exits 1 when there were errors, more sheds or more RSS growth than that (`make
   soak`, run by .ci/run); the p99 ratio is printed, not gated.

The client follows the server's overload contract the way a production client does: a 503
``overloaded`` answer (the queue held more than MAX_QUEUE_MS of work) is retried after its
``Retry-After``, within the request's REQUEST_TIMEOUT_S counted from its scheduled start. Such an
answer counts as a shed; the request counts as an error only when it is not answered with 200
within that time (any other status, a timeout, a connection failure), and its retries' wait is
in its latency. Errors and sheds are printed by kind.

The mix: 40% single texts from a fixed set of 20 (cache hits once seen), 40% single unique texts
(misses), 20% 32-text requests of unique texts. Every request is unpinned, so 10% of routing keys go
to the canary version; the canary share is printed from the responses.

    .venv/bin/python bench/soak.py [--minutes 5] [--load 0.5] [--markdown]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from _http import AUTH_TOKEN, PREDICT_PATH, Server, free_port, machine_facts, other_cpu_now, percentile, running_server

HIT_TEXTS = [f"the product number {i} works well and I would buy it again" for i in range(20)]
CAPACITY_SECONDS = 20.0
CAPACITY_CONNECTIONS = 16
SHED_PAUSE_S = 0.05
REQUEST_TIMEOUT_S = 10.0  # per request, from its scheduled start, retries after Retry-After included
IDLE_REUSE_S = 2.0
SEED = 11
MAX_SHED_SHARE = 0.01  # 503 overloaded answers at half capacity, each retried after Retry-After


def request_body(rng: random.Random, serial: int) -> bytes:
    pick = rng.random()
    if pick < 0.4:
        texts = [rng.choice(HIT_TEXTS)]
    elif pick < 0.8:
        texts = [f"unique review {serial}: {rng.random():.12f} was fine"]
    else:
        texts = [f"unique batch {serial} item {i}: {rng.random():.12f} not good" for i in range(32)]
    return json.dumps({"texts": texts}).encode()


class Reply(NamedTuple):
    status: int
    payload: bytes
    retry_after_s: float | None  # the Retry-After header, in seconds

    def error_code(self) -> str:
        """The JSON error's ``code`` (our error body: ``{"error": {"code": ...}}``), or ``?``."""
        with contextlib.suppress(ValueError, AttributeError):
            return str(json.loads(self.payload).get("error", {}).get("code", "?"))
        return "?"


class Connection:
    """One keep-alive HTTP/1.1 connection; ``post`` returns a Reply and never raises for a status."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._head = (
            f"POST {PREDICT_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"X-Token: {AUTH_TOKEN}\r\nContent-Length: "
        ).encode("ascii")
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def post(self, body: bytes) -> Reply:
        if self._streams is None:
            self._streams = await asyncio.open_connection("127.0.0.1", self._port)
        reader, writer = self._streams
        writer.write(self._head + str(len(body)).encode("ascii") + b"\r\n\r\n" + body)
        await writer.drain()
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:] if line)}
        payload = await reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            self.close()
        retry_after = headers.get("retry-after")
        return Reply(int(head[0].split(" ", 2)[1]), payload, float(retry_after) if retry_after else None)

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


class Pool:
    """Idle connections reused first; a new one when all are busy (open loop: arrivals never wait for a reply).

    A connection idle for longer than IDLE_REUSE_S is closed instead of reused: the server closes
    idle keep-alive connections (KEEPALIVE_TIMEOUT_S), and a POST on a connection it is closing
    would fail for a reason that is not the server's load."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._idle: list[tuple[float, Connection]] = []
        self.opened = 0

    def _reusable(self) -> Connection | None:
        now = time.perf_counter()
        while self._idle:
            since, connection = self._idle.pop()
            if now - since < IDLE_REUSE_S:
                return connection
            connection.close()
        return None

    async def post(self, body: bytes, timeout_s: float) -> Reply:
        connection = self._reusable()
        if connection is None:
            connection = Connection(self._port)
            self.opened += 1
        try:
            result = await asyncio.wait_for(connection.post(body), timeout_s)
        except BaseException:
            connection.close()
            raise
        self._idle.append((time.perf_counter(), connection))
        return result

    def close(self) -> None:
        for _, connection in self._idle:
            connection.close()


@dataclass
class Minute:
    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    sheds: Counter[str] = field(default_factory=Counter)  # 503 overloaded answers, each retried
    canary: int = 0
    answered: int = 0
    rss_mb: float = float("nan")

    @property
    def requests(self) -> int:
        return len(self.latencies_ms) + sum(self.errors.values())


def tree_rss_mb(pid: int) -> float:
    """RSS of ``pid`` and its children (the supervisor and its workers), in MB."""
    total_kb = 0
    children = {pid}
    with contextlib.suppress(OSError):
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = stat.read_text().rpartition(")")[2].split()
                if int(fields[1]) == pid:
                    children.add(int(stat.parent.name))
    for child in children:
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{child}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
    return total_kb / 1024.0


async def capacity(server: Server, seconds: float) -> tuple[float, int]:
    """Requests/s of the mix answered with CAPACITY_CONNECTIONS closed-loop connections, and how
    many were shed (503: the queue held more than MAX_QUEUE_MS of work; the connection pauses)."""
    rng = random.Random(SEED + 1)
    done = 0
    shed = 0
    deadline = time.perf_counter() + seconds

    async def loop(worker: int) -> None:
        nonlocal done, shed
        connection = Connection(server.port)
        serial = worker * 1_000_000
        try:
            while time.perf_counter() < deadline:
                serial += 1
                reply = await asyncio.wait_for(connection.post(request_body(rng, serial)), REQUEST_TIMEOUT_S)
                if reply.status == 503:
                    shed += 1
                    await asyncio.sleep(SHED_PAUSE_S)
                    continue
                if reply.status != 200:
                    raise RuntimeError(f"capacity run: HTTP {reply.status}: {reply.payload[:300]!r}")
                done += 1
        finally:
            connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(loop(i) for i in range(CAPACITY_CONNECTIONS)))
    return done / (time.perf_counter() - started), shed


async def soak(server: Server, rate: float, minutes: int, minute_s: float) -> list[Minute]:
    rng = random.Random(SEED)
    pool = Pool(server.port)
    results = [Minute() for _ in range(minutes)]
    tasks: set[asyncio.Task[None]] = set()
    started = time.perf_counter()
    end = started + minutes * minute_s

    async def one(body: bytes, scheduled: float) -> None:
        minute = results[min(minutes - 1, int((scheduled - started) // minute_s))]
        give_up = scheduled + REQUEST_TIMEOUT_S
        while True:
            try:
                reply = await pool.post(body, max(0.001, give_up - time.perf_counter()))
            except TimeoutError:
                minute.errors["timeout"] += 1
                return
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                minute.errors[type(exc).__name__] += 1
                return
            if reply.status == 200:
                break
            kind = f"{reply.status} {reply.error_code()}"
            wait_s = reply.retry_after_s
            if reply.status != 503 or wait_s is None or time.perf_counter() + wait_s >= give_up:
                minute.errors[kind] += 1
                return
            minute.sheds[kind] += 1
            await asyncio.sleep(wait_s)
        minute.latencies_ms.append((time.perf_counter() - scheduled) * 1000.0)
        minute.answered += 1
        if json.loads(reply.payload)["model_version"] != "v1":
            minute.canary += 1

    async def sample_rss() -> None:
        for index in range(minutes):
            await asyncio.sleep(max(0.0, started + (index + 1) * minute_s - time.perf_counter()))
            results[index].rss_mb = tree_rss_mb(server.pid)
            print(f"  minute {index + 1}: {summary_line(index, results[index])}", file=sys.stderr, flush=True)

    sampler = asyncio.ensure_future(sample_rss())
    serial = 0
    scheduled = started
    while True:
        scheduled += rng.expovariate(rate)
        if scheduled >= end:
            break
        await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
        serial += 1
        task = asyncio.ensure_future(one(request_body(rng, serial), scheduled))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=REQUEST_TIMEOUT_S * 2)
    await sampler
    pool.close()
    print(f"  connections opened: {pool.opened}", file=sys.stderr)
    return results


def summary_line(index: int, minute: Minute) -> str:
    p50 = percentile(minute.latencies_ms, 50)
    p99 = percentile(minute.latencies_ms, 99)
    return (
        f"{minute.requests} requests, errors {by_kind(minute.errors)}, sheds {by_kind(minute.sheds)}, "
        f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, RSS {minute.rss_mb:.0f} MB"
    )


def by_kind(counts: Counter[str]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in counts.most_common()) or "0"


def report(results: Sequence[Minute], rate: float, measured: float, load: float, markdown: bool) -> bool:
    first_p99 = percentile(results[0].latencies_ms, 99)
    first_rss = results[0].rss_mb
    rows = []
    for index, minute in enumerate(results):
        p99 = percentile(minute.latencies_ms, 99)
        canary = minute.canary / minute.answered * 100.0 if minute.answered else float("nan")
        rows.append(
            [
                str(index + 1),
                str(minute.requests),
                str(sum(minute.errors.values())),
                str(sum(minute.sheds.values())),
                f"{percentile(minute.latencies_ms, 50):.1f}",
                f"{p99:.1f}",
                f"{p99 / first_p99:.2f}",
                f"{minute.rss_mb:.0f}",
                f"{(minute.rss_mb / first_rss - 1) * 100:+.1f}%",
                f"{canary:.1f}%",
            ]
        )
    headers = ["minute", "requests", "errors", "sheds (retried)", "p50 ms", "p99 ms", "p99 ÷ minute 1"]
    headers += ["RSS MB", "RSS vs minute 1", "canary share"]
    if markdown:
        print("| " + " | ".join(headers) + " |")
        print("|" + "---|" * len(headers))
        for row in rows:
            print("| " + " | ".join(row) + " |")
    else:
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
        print("  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)))
        for row in rows:
            print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
    errors: Counter[str] = sum((m.errors for m in results), Counter())
    sheds: Counter[str] = sum((m.sheds for m in results), Counter())
    requests = sum(m.requests for m in results)
    shed_share = sum(sheds.values()) / requests if requests else 0.0
    rss_growth = max(m.rss_mb for m in results[1:]) / first_rss - 1 if len(results) > 1 else 0.0
    p99_ratio = max(percentile(m.latencies_ms, 99) for m in results) / first_p99
    # (goal, met, figure, gates the exit status): the p99 ratio is reported, not gated, because it
    # follows the machine's own speed, which drifts on shared VMs (bench/RESULTS.md).
    goals = [
        ("0 errors", not errors, f"{sum(errors.values())} of {requests}: {by_kind(errors)}", True),
        (f"sheds <= {MAX_SHED_SHARE:.0%} of requests", shed_share <= MAX_SHED_SHARE, f"{shed_share:.2%}: {by_kind(sheds)}", True),
        ("RSS growth after minute 1 <= 10%", rss_growth <= 0.10, f"{rss_growth * 100:+.1f}%", True),
        ("p99 within 2x of minute 1", p99_ratio <= 2.0, f"{p99_ratio:.2f}x", False),
    ]
    print()
    print(
        f"Capacity on the mix: {measured:.1f} requests/s answered ({CAPACITY_CONNECTIONS} closed-loop connections); "
        f"soak at {load:.0%}: {rate:.1f} requests/s."
    )
    for name, met, figure, _ in goals:
        print(f"- {name}: {'met' if met else 'MISSED'} ({figure})")
    return all(met for _, met, _, gates in goals if gates)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=int, default=5, help="soak length in minutes (default 5)")
    parser.add_argument("--load", type=float, default=0.5, help="share of the measured capacity to send (default 0.5)")
    parser.add_argument("--minute-s", type=float, default=60.0, help="length of one reporting period in seconds (default 60)")
    parser.add_argument("--capacity-s", type=float, default=CAPACITY_SECONDS, help="capacity measurement in seconds (default 20)")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> bool:
    facts = machine_facts(other_cpu_now())
    print(f"{facts.cpu_model}, {facts.available_cpus} CPUs, onnxruntime {facts.onnxruntime}, Python {facts.python}", file=sys.stderr)
    with running_server(free_port(), env={"CACHE_BACKEND": "memory"}) as server:
        measured, shed = await capacity(server, args.capacity_s)
        rate = measured * args.load
        print(f"capacity {measured:.1f} requests/s ({shed} shed); soaking at {rate:.1f} requests/s for {args.minutes} min", file=sys.stderr)
        results = await soak(server, rate, args.minutes, args.minute_s)
    return report(results, rate, measured, args.load, args.markdown)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.minutes < 2:
        raise SystemExit("--minutes must be at least 2 (minute 1 is the baseline)")
    return 0 if asyncio.run(run(args)) else 1


if __name__ == "__main__":
    sys.exit(main())
