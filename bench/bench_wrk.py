"""Container-mode throughput: ``mlinfer serve`` under wrk, against naive peers and the hardware limit.

For each model version (v1 fp32, v2 int8) it measures, in one run:

- ``limit``: raw ONNX Runtime, no HTTP: tokenise + ``session.run`` at batch 32, one process per
  available core (pinned), one intra-op thread each, all in parallel; texts/s summed;
- ``raw-1xall``: the same in one process with one intra-op thread per core;
- the naive peers (``bench/peers/naive.py``: one ``session.run`` per request, no batching):
  ``naive-async`` (the seed's architecture: ``async def`` route, uvicorn, 1 worker, ORT default
  threads), ``naive-def`` (``def`` route in FastAPI's threadpool), ``naive-gunicorn`` (gunicorn,
  one uvicorn worker per core, one intra-op thread each: the best naive);
- ``mlinfer serve`` with its defaults (``ours``) and the configurations of ``OURS_CONFIGS``
  (any ``NAME=VALUE`` environment and CLI arguments; ``--ours-config`` adds more);

at 1, 32 and 64 connections with one text per request, and 4 connections with 32 texts per
request; ours also unpinned (no ``model_version``, a different ``X-Routing-Key`` on every
request, so the registry's 90/10 canary splits the traffic) at 32 connections. ``ours`` and the
naive peers also run a concurrency sweep (1 ... 64) for the plot.

Servers run as subprocesses on free 127.0.0.1 ports (ours with ``CACHE_BACKEND=none``, so every
text runs the model), each in its own process group, always stopped on exit, Ctrl-C or error.
Each server gets 2 s of wrk to warm up per version. wrk runs on the same machine: its CPU use is
recorded per point (``client CPU %``) with the server's and the rest of the machine's
(``other CPU %``: should be ~0 on an idle machine). Every wait is bounded.

    .venv/bin/python bench/bench_wrk.py --markdown                 # the full run (~17 min)
    .venv/bin/python bench/bench_wrk.py --versions v1 --seconds 2 --sweep-seconds 1 --only limit,naive-async,ours
    .venv/bin/python bench/bench_wrk.py --from-json bench/wrk_results.json --markdown   # re-render

Needs ``wrk`` (``sudo apt-get install wrk``), gunicorn for ``naive-gunicorn`` and matplotlib for
``--plot`` (both skipped with a message when missing).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import fnmatch
import importlib.util
import json
import math
import multiprocessing as mp
import os
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import yaml
from _http import (
    AUTH_TOKEN,
    MODEL_NAME,
    PREDICT_PATH,
    REGISTRY_PATH,
    REPO_ROOT,
    CpuWatch,
    free_port,
    load_average,
    machine_facts,
    mlinfer_executable,
    other_cpu_now,
    wait_healthy,
)

WRK_SCRIPT = REPO_ROOT / "bench" / "wrk" / "predict.lua"
TEXTS_FILE = REPO_ROOT / "bench" / "wrk" / "texts.txt"
BATCH = 32
WARMUP_S = 2
WARMUP_CONNECTIONS = 8
WRK_SOCKET_TIMEOUT = "30s"
WRK_GRACE_S = 60.0  # beyond -d, before a wrk run counts as hung
RAW_START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 15.0
DEFAULT_SWEEP = (1, 2, 4, 8, 16, 32, 64)
WRK_MISSING = "install wrk: sudo apt-get install wrk (make bench does)"

# ---------------------------------------------------------------------------- what is measured


@dataclass(frozen=True)
class Load:
    name: str
    connections: int
    batch: int = 1
    pinned: bool = True  # False: no model_version, X-Routing-Key per request (the registry's rollout decides)


MAIN_LOADS = (Load("c1", 1), Load("c32", 32), Load("c64", 64), Load(f"b{BATCH} c4", 4, BATCH))
CANARY_LOAD = Load("canary c32", 32, 1, pinned=False)
CANARY_VERSION = "canary"  # the "version" of the unpinned points


def sweep_load(connections: int) -> Load:
    return Load(f"c{connections}", connections)


@dataclass(frozen=True)
class Setup:
    name: str
    kind: str  # limit, raw, naive, ours
    label: str
    env: Mapping[str, str] = field(default_factory=dict)
    args: tuple[str, ...] = ()
    sweep: bool = False


# mlinfer serve configurations: (name, label, environment, CLI arguments). The first is the defaults.
# Settings not known to engine.settings.Settings (yet) are flagged at start, not rejected.
OURS_CONFIGS: tuple[tuple[str, str, Mapping[str, str], tuple[str, ...]], ...] = (
    ("ours", "mlinfer serve (defaults: a worker per CPU, each 1 instance x all CPUs' threads)", {}, ()),
    ("ours-1proc", "mlinfer serve WORKERS=1 (1 process, an instance per CPU x 1 thread)", {"WORKERS": "1"}, ()),
    ("ours-1proc-i1", "mlinfer serve WORKERS=1 INSTANCES=1 (1 instance x 2 threads)", {"WORKERS": "1", "INSTANCES": "1"}, ()),
    ("ours-w2t1", "mlinfer serve --workers 2 INTRA_OP_THREADS=1", {"INTRA_OP_THREADS": "1"}, ("--workers", "2")),
)
# Environment of every mlinfer serve: every text runs the model.
OURS_BASE_ENV = {"CACHE_BACKEND": "none", "LOG_LEVEL": "WARNING", "ENABLE_METRICS": "true"}


def cpu_set() -> list[int]:
    """The cores this process may run on, capped at the cgroup quota."""
    from engine.cpus import available_cpus

    cores = sorted(os.sched_getaffinity(0))
    return cores[: max(1, min(len(cores), available_cpus()))]


def all_setups(extra_ours: Sequence[str]) -> list[Setup]:
    n = len(cpu_set())
    setups = [
        Setup("limit", "limit", f"raw ORT, {n} proc × 1 thread, b{BATCH} (the limit)"),
        Setup("raw-1xall", "raw", f"raw ORT, 1 proc × {n} threads, b{BATCH}"),
        Setup(
            "naive-async", "naive", "naive: async def, uvicorn 1 worker, ORT default threads (seed)", args=("--route", "async"), sweep=True
        ),
        Setup("naive-def", "naive", "naive: def (threadpool), uvicorn 1 worker, ORT default threads", args=("--route", "def"), sweep=True),
        Setup(
            "naive-gunicorn",
            "naive",
            f"naive: gunicorn -w {n} uvicorn workers, async def, 1 intra-op thread each",
            args=("--route", "async", "--workers", str(n), "--intra-op-threads", "1"),
            sweep=True,
        ),
    ]
    for index, (name, label, env, args) in enumerate(OURS_CONFIGS):
        setups.append(Setup(name, "ours", label, dict(env), tuple(args), sweep=index == 0))
    setups.extend(parse_ours_config(spec) for spec in extra_ours)
    names = [s.name for s in setups]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SystemExit(f"duplicate setup names: {', '.join(duplicates)}")
    return setups


def parse_ours_config(spec: str) -> Setup:
    """``NAME: A=1 B=2 --workers 2``: NAME=VALUE words are environment, the rest mlinfer serve arguments."""
    name, sep, rest = spec.partition(":")
    if not sep or not name.strip():
        raise SystemExit(f"--ours-config {spec!r}: expected 'NAME: VAR=VALUE ... [--workers N]'")
    env: dict[str, str] = {}
    args: list[str] = []
    for word in shlex.split(rest):
        key, eq, value = word.partition("=")
        if eq and not word.startswith("-") and key.replace("_", "").isalnum():
            env[key] = value
        else:
            args.append(word)
    label = "mlinfer serve " + " ".join([*args, *(f"{k}={v}" for k, v in env.items())])
    return Setup(name.strip(), "ours", label.strip(), env, tuple(args))


def select(setups: Sequence[Setup], only: str | None) -> list[Setup]:
    if not only:
        return list(setups)
    patterns = [p.strip() for p in only.split(",") if p.strip()]
    unknown = [p for p in patterns if not any(fnmatch.fnmatchcase(s.name, p) for s in setups)]
    if unknown:
        raise SystemExit(f"--only: no setup matches {', '.join(unknown)}; setups: {', '.join(s.name for s in setups)}")
    return [s for s in setups if any(fnmatch.fnmatchcase(s.name, p) for p in patterns)]


def unknown_settings(env: Mapping[str, str]) -> list[str]:
    """Names in ``env`` that engine.settings.Settings does not read (it ignores unknown variables)."""
    from engine.settings import Settings

    known = {name.upper() for name in Settings.model_fields}
    for info in Settings.model_fields.values():
        alias = info.validation_alias
        for choice in getattr(alias, "choices", ()) or ():
            if isinstance(choice, str):
                known.add(choice.upper())
    return sorted(name for name in env if name.upper() not in known)


def registry_models() -> dict[str, Path]:
    """Version -> model file of the sentiment model in the default registry."""
    registry = yaml.safe_load(REGISTRY_PATH.read_text())
    versions = registry["models"][MODEL_NAME]["versions"]
    return {version: (REGISTRY_PATH.parent / spec["path"]).resolve() for version, spec in versions.items()}


def read_texts() -> list[str]:
    texts = [line.strip() for line in TEXTS_FILE.read_text().splitlines() if line.strip()]
    if len(texts) < 2 * BATCH:
        raise SystemExit(f"{TEXTS_FILE}: need {2 * BATCH} texts, found {len(texts)}")
    return texts


# ---------------------------------------------------------------------------- results


@dataclass
class Point:
    setup: str
    version: str  # v1, v2, or canary (unpinned)
    load: str
    connections: int  # processes, for the raw rows
    batch: int
    seconds: float
    requests: int  # batches, for the raw rows
    non200: int
    statuses: dict[str, int]
    socket_errors: dict[str, int]
    req_per_s: float
    texts_per_s: float  # successful (200) requests only
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    other_cpu_pct: float | None
    server_cpu_pct: float | None  # percent of one core, the whole process group
    client_cpu_pct: float | None  # wrk's (percent of one core)
    sweep_only: bool = False
    versions: dict[str, int] = field(default_factory=dict)  # model_version of the 200 responses


@dataclass
class SetupOutcome:
    name: str
    kind: str
    label: str
    env: dict[str, str]
    args: list[str]
    status: str  # ok, skipped, failed
    note: str = ""
    load_average: str = ""
    warmup_non200: dict[str, int] = field(default_factory=dict)
    server_log_tail: str = ""


@dataclass
class Results:
    started: str
    command: list[str]
    options: dict[str, Any]
    machine: dict[str, Any]
    tools: dict[str, Any]
    setups: list[SetupOutcome] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)
    finished: str = ""
    load_average_end: str = ""
    derived: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Results:
        values = dict(data)
        values["setups"] = [SetupOutcome(**s) for s in data.get("setups", [])]
        values["points"] = [Point(**p) for p in data.get("points", [])]
        return cls(**values)

    def point(self, setup: str, version: str, load: str) -> Point | None:
        for p in self.points:
            if p.setup == setup and p.version == version and p.load == load and not p.sweep_only:
                return p
        return None


def log(message: str) -> None:
    print(f"[{dt.datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def describe(p: Point) -> str:
    cpu = "" if p.other_cpu_pct is None else f", other CPU {p.other_cpu_pct:.0f}%"
    client = "" if p.client_cpu_pct is None else f", wrk {p.client_cpu_pct:.0f}% of a core"
    errors = f", NON-200 {p.non200} {p.statuses}" if p.non200 else ""
    sock = sum(p.socket_errors.values()) - p.socket_errors.get("status", 0)
    sock_text = f", socket errors {p.socket_errors}" if sock else ""
    split = f", versions {p.versions}" if p.version == CANARY_VERSION else ""
    return (
        f"{p.setup} {p.version} {p.load}: {p.texts_per_s:.1f} texts/s, {p.req_per_s:.1f} req/s, "
        f"p50 {p.p50_ms:.1f} ms, p99 {p.p99_ms:.1f} ms{errors}{sock_text}{split}{cpu}{client}"
    )


# ---------------------------------------------------------------------------- processes


def group_pids(pgid: int) -> list[int]:
    """Live processes of process group ``pgid`` (Linux /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                pids.append(int(entry.name))
    return pids


def stop_group(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM the process group ``proc`` leads (it was started with ``start_new_session``), then SIGKILL what is left."""
    pgid = proc.pid
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=STOP_TIMEOUT_S)
    deadline = time.monotonic() + 5.0  # workers that outlive their leader get 5 s more
    while group_pids(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=STOP_TIMEOUT_S)


@dataclass(frozen=True)
class RunningServer:
    port: int
    pgid: int
    log: IO[str]

    def pids(self) -> list[int]:
        return group_pids(self.pgid) or [self.pgid]

    def log_tail(self, chars: int = 3000) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-chars:]


@contextlib.contextmanager
def server_process(command: Sequence[str], env: Mapping[str, str], port: int) -> Iterator[RunningServer]:
    with tempfile.TemporaryFile(mode="w+") as server_log:
        proc = subprocess.Popen(
            list(command), cwd=REPO_ROOT, env=dict(env), stdout=server_log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            wait_healthy(proc, f"http://127.0.0.1:{port}", server_log)
            yield RunningServer(port, proc.pid, server_log)
        finally:
            stop_group(proc)


def server_command(setup: Setup, version: str | None, models: Mapping[str, Path], port: int) -> tuple[list[str], dict[str, str]]:
    env = {**os.environ, "AUTH_TOKEN": AUTH_TOKEN}
    if setup.kind == "ours":
        env.update({"MODEL_REGISTRY_PATH": str(REGISTRY_PATH), **OURS_BASE_ENV, **setup.env})
        return [mlinfer_executable(), "serve", "--host", "127.0.0.1", "--port", str(port), *setup.args], env
    assert version is not None
    env.update(setup.env)
    command = [sys.executable, "-m", "bench.peers.naive", "--model", str(models[version]), "--port", str(port), *setup.args]
    return command, env


# ---------------------------------------------------------------------------- wrk


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise SystemExit(WRK_MISSING)
    return found


def run_wrk(
    wrk: str,
    server: RunningServer,
    load: Load,
    version: str,
    seconds: int,
    threads: int,
    setup: str,
    *,
    sweep_only: bool = False,
    path: str = PREDICT_PATH,
    protocol: str = "native",
) -> Point:
    """One wrk run of ``load``; ``path`` and ``protocol`` (native or v2: bench/wrk/predict.lua) choose the API."""
    env = {
        **os.environ,
        "WRK_PROTOCOL": protocol,
        "WRK_TOKEN": AUTH_TOKEN,
        "WRK_TEXTS_FILE": str(TEXTS_FILE),
        "WRK_BATCH": str(load.batch),
        "WRK_MODEL": MODEL_NAME,
        "WRK_VERSION": version if load.pinned else "",
        "WRK_ROUTING_KEY": "0" if load.pinned else "1",
    }
    command = [
        wrk,
        "--threads",
        str(max(1, min(threads, load.connections))),
        "--connections",
        str(load.connections),
        "--duration",
        f"{seconds}s",
        "--timeout",
        WRK_SOCKET_TIMEOUT,
        "--script",
        str(WRK_SCRIPT),
        f"http://127.0.0.1:{server.port}{path}",
    ]
    server_pids = server.pids()
    children_before = _children_cpu_s()
    proc = subprocess.Popen(
        command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    watch = CpuWatch([*server_pids, os.getpid()])  # wrk's own CPU: from its rusage once reaped
    try:
        out, err = proc.communicate(timeout=seconds + WRK_GRACE_S)
    except subprocess.TimeoutExpired as exc:
        raise TimeoutError(f"wrk did not finish within {seconds + WRK_GRACE_S:.0f} s") from exc
    finally:
        if proc.poll() is None:
            stop_group(proc)
    report = watch.stop()
    wrk_cpu_s = _children_cpu_s() - children_before
    line = next((x for x in out.splitlines() if x.startswith("WRK_JSON ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed (exit {proc.returncode}): {err.strip()[-1000:]} {out.strip()[-1000:]}")
    data = json.loads(line.removeprefix("WRK_JSON "))
    duration_s = data["duration_us"] / 1e6
    requests, non200 = int(data["requests"]), int(data["non200"])
    lat = data["latency_us"]
    server_cpu = client_cpu = other_cpu = None
    if report is not None:
        client_cpu = wrk_cpu_s / report.wall_s * 100.0
        server_cpu = sum(report.process_pct.get(pid, 0.0) for pid in server_pids)
        if report.other_pct is not None:
            other_cpu = max(0.0, report.other_pct - client_cpu / (os.cpu_count() or 1))
    return Point(
        setup=setup,
        version=version if load.pinned else CANARY_VERSION,
        load=load.name,
        connections=load.connections,
        batch=load.batch,
        seconds=duration_s,
        requests=requests,
        non200=non200,
        statuses={str(k): int(v) for k, v in data["statuses"].items()},
        socket_errors={k: int(v) for k, v in data["errors"].items()},
        req_per_s=requests / duration_s if duration_s > 0 else 0.0,
        texts_per_s=(requests - non200) * load.batch / duration_s if duration_s > 0 else 0.0,
        mean_ms=lat["mean"] / 1000.0,
        p50_ms=lat["p50"] / 1000.0,
        p90_ms=lat["p90"] / 1000.0,
        p99_ms=lat["p99"] / 1000.0,
        other_cpu_pct=other_cpu,
        server_cpu_pct=server_cpu,
        client_cpu_pct=client_cpu,
        sweep_only=sweep_only,
        versions={str(k): int(v) for k, v in data.get("versions", {}).items()},
    )


def _children_cpu_s() -> float:
    """CPU seconds of this process's reaped children (wrk, once ``communicate`` has waited for it)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# ---------------------------------------------------------------------------- raw ONNX Runtime


def _raw_worker(
    model: str,
    batches: list[list[str]],
    core: int | None,
    threads: int,
    seconds: float,
    first: int,
    barrier: Any,
    results: Any,
) -> None:
    """One process of the raw measurement: warm up, wait for the others, run until ``seconds`` are up."""
    try:
        if core is not None:
            os.sched_setaffinity(0, {core})
        from engine.session import SessionConfig, open_session
        from engine.tokenization import TextTokenizer

        path = Path(model)
        session = open_session(path, SessionConfig(intra_op_threads=threads))
        tokenizer = TextTokenizer.from_file(path.parent / "tokenizer.json")
        output = session.get_outputs()[0].name
        for texts in batches * 2:
            session.run([output], tokenizer.encode(texts).feeds())
        barrier.wait(timeout=RAW_START_TIMEOUT_S)
        latencies: list[float] = []
        count = 0
        started = time.perf_counter()
        deadline = started + seconds
        i = first
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            texts = batches[i % len(batches)]
            session.run([output], tokenizer.encode(texts).feeds())
            latencies.append((time.perf_counter() - t0) * 1000.0)
            count += len(texts)
            i += 1
        results.put({"texts": count, "elapsed": time.perf_counter() - started, "latencies": latencies})
    except BaseException as exc:  # the parent reports it; never hang it
        with contextlib.suppress(Exception):
            barrier.abort()
        results.put({"error": f"{type(exc).__name__}: {exc}"})


def measure_raw(setup: Setup, version: str, model: Path, texts: Sequence[str], seconds: int) -> Point:
    cores = cpu_set()
    plan: list[tuple[int | None, int]] = [(core, 1) for core in cores] if setup.kind == "limit" else [(None, len(cores))]
    batches = [list(texts[0 : 2 * BATCH : 2]), list(texts[1 : 2 * BATCH : 2])]
    ctx = mp.get_context("spawn")  # no fork after onnxruntime threads exist
    barrier = ctx.Barrier(len(plan) + 1)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_raw_worker, args=(str(model), batches, core, threads, float(seconds), i, barrier, results), daemon=True)
        for i, (core, threads) in enumerate(plan)
    ]
    try:
        for proc in procs:
            proc.start()
        try:
            barrier.wait(timeout=RAW_START_TIMEOUT_S)
        except Exception as exc:  # BrokenBarrierError: a worker failed; its message is in the queue
            errors = []
            with contextlib.suppress(Exception):
                errors.append(results.get(timeout=5)["error"])
            raise RuntimeError(f"raw workers did not start: {'; '.join(errors) or exc}") from exc
        watch = CpuWatch([*(p.pid for p in procs if p.pid is not None), os.getpid()])
        outcomes = [results.get(timeout=seconds + WRK_GRACE_S) for _ in procs]
        report = watch.stop()
    finally:
        for proc in procs:
            proc.join(timeout=STOP_TIMEOUT_S)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=STOP_TIMEOUT_S)
    errors = [o["error"] for o in outcomes if "error" in o]
    if errors:
        raise RuntimeError("; ".join(errors))
    latencies = [x for o in outcomes for x in o["latencies"]]
    elapsed = max(o["elapsed"] for o in outcomes)
    p50, p90, p99 = (float(x) for x in np.percentile(latencies, [50, 90, 99]))
    workers = len(plan)
    return Point(
        setup=setup.name,
        version=version,
        load=f"b{BATCH} ×{workers} proc",
        connections=workers,
        batch=BATCH,
        seconds=elapsed,
        requests=len(latencies),
        non200=0,
        statuses={},
        socket_errors={},
        req_per_s=sum(len(o["latencies"]) / o["elapsed"] for o in outcomes),
        texts_per_s=sum(o["texts"] / o["elapsed"] for o in outcomes),
        mean_ms=float(np.mean(latencies)),
        p50_ms=p50,
        p90_ms=p90,
        p99_ms=p99,
        other_cpu_pct=None if report is None else report.other_pct,
        server_cpu_pct=None if report is None else sum(v for pid, v in report.process_pct.items() if pid != os.getpid()),
        client_cpu_pct=None,
    )


# ---------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class Plan:
    versions: tuple[str, ...]
    seconds: int
    sweep_seconds: int
    sweep: tuple[int, ...]
    wrk_threads: int


def sweep_extra(plan: Plan) -> list[Load]:
    """Sweep points not already measured as main loads (those are reused for the plot)."""
    main = {load.connections for load in MAIN_LOADS if load.batch == 1 and load.pinned}
    return [sweep_load(c) for c in plan.sweep if c not in main]


def estimate_s(setups: Sequence[Setup], plan: Plan) -> float:
    total = 0.0
    for setup in setups:
        per_version = 0.0
        if setup.kind in ("limit", "raw"):
            per_version = plan.seconds + 5
        else:
            per_version = WARMUP_S + len(MAIN_LOADS) * (plan.seconds + 0.5)
            if setup.sweep:
                per_version += len(sweep_extra(plan)) * (plan.sweep_seconds + 0.5)
            per_version += 5 if setup.kind == "naive" else 0  # a server per version
        total += per_version * len(plan.versions)
        if setup.kind == "ours":
            total += 8 + plan.seconds  # start + canary
    return total


def run_server_setup(setup: Setup, plan: Plan, models: Mapping[str, Path], wrk: str, results: Results, outcome: SetupOutcome) -> None:
    def measure(server: RunningServer, version: str) -> None:
        warm = run_wrk(wrk, server, Load("warm-up", WARMUP_CONNECTIONS), version, WARMUP_S, plan.wrk_threads, setup.name)
        if warm.non200:
            outcome.warmup_non200[version] = warm.non200
            log(f"  warm-up {version}: {warm.non200} non-200 responses {warm.statuses}")
        for load in MAIN_LOADS:
            point = run_wrk(wrk, server, load, version, plan.seconds, plan.wrk_threads, setup.name)
            results.points.append(point)
            log("  " + describe(point))
        if setup.sweep:
            for load in sweep_extra(plan):
                point = run_wrk(wrk, server, load, version, plan.sweep_seconds, plan.wrk_threads, setup.name, sweep_only=True)
                results.points.append(point)
                log("  " + describe(point))
        if any(p.non200 for p in results.points if p.setup == setup.name):
            outcome.server_log_tail = server.log_tail()

    if setup.kind == "ours":
        port = free_port()
        command, env = server_command(setup, None, models, port)
        with server_process(command, env, port) as server:
            for version in plan.versions:
                measure(server, version)
            point = run_wrk(wrk, server, CANARY_LOAD, plan.versions[0], plan.seconds, plan.wrk_threads, setup.name)
            results.points.append(point)
            log("  " + describe(point))
            if point.non200:
                outcome.server_log_tail = server.log_tail()
    else:
        for version in plan.versions:
            port = free_port()
            command, env = server_command(setup, version, models, port)
            with server_process(command, env, port) as server:
                measure(server, version)


def run(setups: Sequence[Setup], plan: Plan, results: Results, out: Path | None) -> None:
    models = registry_models()
    texts = read_texts()
    wrk = wrk_binary() if any(s.kind in ("naive", "ours") for s in setups) else ""
    gunicorn_problem = _gunicorn_problem()
    for setup in setups:
        outcome = SetupOutcome(setup.name, setup.kind, setup.label, dict(setup.env), list(setup.args), "ok", load_average=load_average())
        results.setups.append(outcome)
        if setup.name == "naive-gunicorn" and gunicorn_problem:
            outcome.status, outcome.note = "skipped", gunicorn_problem
            log(f"{setup.name}: skipped: {gunicorn_problem}")
            continue
        log(f"{setup.name}: {setup.label} (load average {outcome.load_average})")
        try:
            if setup.kind in ("limit", "raw"):
                for version in plan.versions:
                    point = measure_raw(setup, version, models[version], texts, plan.seconds)
                    results.points.append(point)
                    log("  " + describe(point))
            else:
                run_server_setup(setup, plan, models, wrk, results, outcome)
        except Exception as exc:  # one setup failing does not lose the others; Ctrl-C still stops the run
            outcome.status, outcome.note = "failed", f"{type(exc).__name__}: {exc}"[-4000:]
            log(f"{setup.name}: FAILED: {outcome.note}")
        if out is not None:
            write_json(results, out)  # what is done so far survives an interrupted run
    # This machine's speed drifts over minutes: the limit is measured again at the end, and the
    # ratios use the mean of both measurements.
    limit = next((s for s in setups if s.name == "limit"), None)
    if limit is not None and len(setups) > 1:
        log("limit, again at the end of the run")
        for version in plan.versions:
            point = measure_raw(limit, version, models[version], texts, plan.seconds)
            results.points.append(point)
            log("  " + describe(point))
        if out is not None:
            write_json(results, out)


def _gunicorn_problem() -> str | None:
    if importlib.util.find_spec("gunicorn") is None:
        return f"gunicorn is not installed in {sys.prefix}: add 'gunicorn>=23' to the dev extra (or pip install gunicorn)"
    return None


def tool_facts(wrk: str | None) -> dict[str, Any]:
    facts: dict[str, Any] = {"wrk": None, "gunicorn": None, "matplotlib": None, "gunicorn_worker": None}
    if wrk:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            text = subprocess.run([wrk, "-v"], capture_output=True, text=True, timeout=10)
            facts["wrk"] = (text.stdout + text.stderr).splitlines()[0].strip()
    from importlib.metadata import PackageNotFoundError, version

    for name in ("gunicorn", "matplotlib", "uvicorn", "onnxruntime", "fastapi"):
        with contextlib.suppress(PackageNotFoundError):
            facts[name] = version(name)
    if facts["gunicorn"]:
        from peers.naive import gunicorn_worker_class

        facts["gunicorn_worker"] = gunicorn_worker_class()
    return facts


def write_json(results: Results, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(results.to_json(), indent=2, ensure_ascii=False) + "\n")
    tmp.replace(out)


# ---------------------------------------------------------------------------- report


def limit_points(results: Results, version: str) -> list[float]:
    return [q.texts_per_s for q in results.points if q.setup == "limit" and q.version == version]


def limit_of(results: Results, version: str) -> float | None:
    """The limit the ratios divide by: the mean of its measurements (start and end of the run)."""
    values = limit_points(results, version)
    return sum(values) / len(values) if values else None


def derive(results: Results) -> dict[str, Any]:
    derived: dict[str, Any] = {}
    naive = [s.name for s in results.setups if s.kind == "naive"]
    ours = [s.name for s in results.setups if s.kind == "ours"]
    for version in results.options["versions"]:
        d: dict[str, Any] = {}
        limit = limit_of(results, version)

        def tps(setup: str, load: str, version: str = version) -> float | None:
            p = results.point(setup, version, load)
            return None if p is None else p.texts_per_s

        naive_c32 = {n: v for n in naive if (v := tps(n, "c32")) is not None}
        ours_c32 = {o: v for o in ours if (v := tps(o, "c32")) is not None}
        best_naive = max(naive_c32, key=naive_c32.__getitem__) if naive_c32 else None
        best_ours = max(ours_c32, key=ours_c32.__getitem__) if ours_c32 else None
        if "ours" in ours_c32 and best_naive:
            d["ours ÷ best naive (c32)"] = (ours_c32["ours"] / naive_c32[best_naive], best_naive)
        if best_ours and best_naive:
            d["best ours ÷ best naive (c32)"] = (ours_c32[best_ours] / naive_c32[best_naive], f"{best_ours} vs {best_naive}")
        if "ours" in ours_c32 and "naive-async" in naive_c32:
            d["ours ÷ seed's architecture (c32)"] = (ours_c32["ours"] / naive_c32["naive-async"], "naive-async")
        ours_c1, seed_c1 = results.point("ours", version, "c1"), results.point("naive-async", version, "c1")
        if ours_c1 and seed_c1:
            d["p50 at c1: ours − seed (ms)"] = (ours_c1.p50_ms - seed_c1.p50_ms, f"{ours_c1.p50_ms:.1f} − {seed_c1.p50_ms:.1f}")
        b32 = tps("ours", f"b{BATCH} c4")
        if b32 is not None and limit:
            d[f"ours {BATCH}-text c4 ÷ limit"] = (b32 / limit, f"{b32:.0f} / {limit:.0f}")
        if best_ours and limit:
            d["best ours c32 ÷ limit"] = (ours_c32[best_ours] / limit, best_ours)
        derived[version] = d
    canary = results.point("ours", CANARY_VERSION, CANARY_LOAD.name)
    v1_limit = limit_of(results, "v1")
    if canary is not None and v1_limit:
        derived["canary unpinned c32 ÷ v1 limit"] = (canary.texts_per_s / v1_limit, f"{canary.texts_per_s:.0f} / {v1_limit:.0f}")
    return derived


def _fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def main_table(results: Results) -> list[str]:
    versions = list(results.options["versions"])
    head = "| setup | load |" + "".join(f" {v} texts/s | ÷ limit | p99 ms |" for v in versions) + " non-200 | other CPU % |"
    lines = [head, "|---|---|" + "---:|---:|---:|" * len(versions) + "---:|---:|"]
    limits = {v: limit_of(results, v) for v in versions}
    for outcome in results.setups:
        if outcome.status == "skipped":
            lines.append(f"| {outcome.name}: {outcome.label} | skipped: {outcome.note} |" + " |" * (3 * len(versions) + 2))
            continue
        loads = list(dict.fromkeys(p.load for p in results.points if p.setup == outcome.name and not p.sweep_only))
        if outcome.status == "failed" and not loads:
            lines.append(f"| {outcome.name}: {outcome.label} | FAILED: {outcome.note[:200]} |" + " |" * (3 * len(versions) + 2))
        for load in loads:
            canary = load == CANARY_LOAD.name
            cells, errors, other = [], [], []
            for index, v in enumerate(versions):
                p = None if canary and index else results.point(outcome.name, CANARY_VERSION if canary else v, load)
                if p is None:
                    cells.append(" — | — | — |")
                    continue
                limit = limits.get("v1") if canary else limits[v]
                ratio = p.texts_per_s / limit if limit else None
                cells.append(f" {p.texts_per_s:.1f}{' ⚠' if p.non200 else ''} | {_fmt(ratio, 2)} | {p.p99_ms:.1f} |")
                errors.append(str(p.non200))
                other.append(_fmt(p.other_cpu_pct, 0))
            name = f"{outcome.name}: {outcome.label}" if load == loads[0] else outcome.name
            load_text = load
            if canary:
                p = results.point(outcome.name, CANARY_VERSION, load)
                served = sum(p.versions.values()) if p else 0
                split = ", ".join(f"{v} {n / served:.0%}" for v, n in sorted(p.versions.items())) if p and served else "split unknown"
                load_text = f"{load}, unpinned ({split}; ÷ v1 limit)"
            lines.append(f"| {name} | {load_text} |" + "".join(cells) + f" {' / '.join(errors)} | {' / '.join(other)} |")
    return lines


def derived_lines(results: Results) -> list[str]:
    lines = []
    for version in results.options["versions"]:
        measured = limit_points(results, version)
        if len(measured) > 1:
            spread = " and ".join(f"{value:.0f}" for value in measured)
            mean = sum(measured) / len(measured)
            lines.append(f"- {version}: the limit measured {spread} texts/s (start, end); every ÷ limit uses the mean, {mean:.0f}")
    for key, value in results.derived.items():
        if key in results.options["versions"]:
            for name, (ratio, detail) in value.items():
                unit = "" if "ms" in name else "×"
                lines.append(f"- {key}: {name}: **{ratio:.2f}{unit}** ({detail})")
        else:
            ratio, detail = value
            lines.append(f"- {key}: **{ratio:.2f}×** ({detail})")
    return lines


def sweep_table(results: Results) -> list[str]:
    sweep_setups = [s.name for s in results.setups if any(p.setup == s.name and p.sweep_only for p in results.points)]
    if not sweep_setups:
        return []
    conc = sorted({c for c in results.options["sweep"]})
    lines = ["| setup | version |" + "".join(f" c{c} |" for c in conc), "|---|---|" + "---:|" * len(conc)]
    for name in sweep_setups:
        for version in results.options["versions"]:
            series = sweep_series(results, name, version)
            lines.append(f"| {name} | {version} |" + "".join(f" {_fmt(series.get(c))} |" for c in conc))
    return lines


def sweep_series(results: Results, setup: str, version: str) -> dict[int, float]:
    series = {}
    for p in results.points:
        if p.setup == setup and p.version == version and p.batch == 1 and p.load == f"c{p.connections}":
            series[p.connections] = p.texts_per_s
    return dict(sorted(series.items()))


def report(results: Results, full: bool) -> str:
    m = results.machine
    out = [
        f"## wrk throughput ({results.started})",
        "",
        f"Machine: {m.get('cpu_model')}, {m.get('available_cpus')} CPUs available (os.cpu_count {m.get('os_cpu_count')}), "
        f"onnxruntime {m.get('onnxruntime')} ({m.get('providers')}), Python {m.get('python')}; other CPU before the run "
        f"{_fmt(m.get('other_cpu_before'), 0)}%, load average {m.get('load_average_start')} → {results.load_average_end}.",
        f"Tools: {results.tools.get('wrk')}; gunicorn {results.tools.get('gunicorn') or 'not installed'}"
        f" ({results.tools.get('gunicorn_worker') or '-'}); uvicorn {results.tools.get('uvicorn')}.",
        f"Each point {results.options['seconds']} s (sweep-only points {results.options['sweep_seconds']} s) after a "
        f"{WARMUP_S} s warm-up per server and version; wrk --threads {results.options['wrk_threads']}, same machine. "
        "texts/s counts 200 responses only; ⚠ marks points with non-200 responses. ÷ limit: divided by the limit row "
        "of the same version.",
        "",
        *main_table(results),
        "",
        *derived_lines(results),
    ]
    if full:
        sweep = sweep_table(results)
        if sweep:
            out += ["", "Concurrency sweep, texts/s (single text per request):", "", *sweep]
        out += [
            "",
            "Per point (CPU % of one core; other CPU % of the whole machine):",
            "",
            "| setup | version | load | req/s | texts/s | p50 ms | p90 ms | p99 ms | non-200 | server CPU % | wrk CPU % | other CPU % |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for p in results.points:
            out.append(
                f"| {p.setup} | {p.version} | {p.load} | {p.req_per_s:.1f} | {p.texts_per_s:.1f} | {p.p50_ms:.1f} | {p.p90_ms:.1f} | "
                f"{p.p99_ms:.1f} | {p.non200} | {_fmt(p.server_cpu_pct, 0)} | {_fmt(p.client_cpu_pct, 0)} | {_fmt(p.other_cpu_pct, 0)} |"
            )
        notes = [f"- {s.name}: {s.status}: {s.note}" for s in results.setups if s.status != "ok" or s.note]
        if notes:
            out += ["", *notes]
    return "\n".join(out)


def plot(results: Results, path: Path) -> str | None:
    """Texts/s against connections, one panel per version; returns why not, or None."""
    if importlib.util.find_spec("matplotlib") is None:
        return f"matplotlib is not installed in {sys.prefix}: add 'matplotlib>=3.8' to the dev extra (or pip install matplotlib)"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    versions = list(results.options["versions"])
    fig, axes = plt.subplots(1, len(versions), figsize=(6.5 * len(versions), 4.8), squeeze=False)
    labels = {s.name: s.label for s in results.setups}
    for ax, version in zip(axes[0], versions, strict=True):
        for name in dict.fromkeys(p.setup for p in results.points if p.sweep_only):
            series = sweep_series(results, name, version)
            if series:
                ax.plot(list(series), list(series.values()), marker="o", label=labels.get(name, name))
        for name, style in (("limit", "--"), ("raw-1xall", ":")):
            p = next((q for q in results.points if q.setup == name and q.version == version), None)
            if p is not None:
                ax.axhline(p.texts_per_s, linestyle=style, color="grey", label=f"{labels.get(name, name)}: {p.texts_per_s:.0f}")
        ax.set_xscale("log", base=2)
        ticks = sorted({p.connections for p in results.points if p.batch == 1 and p.load == f"c{p.connections}"})
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.set_xlabel("connections (wrk, one text per request)")
        ax.set_ylabel("texts/s")
        ax.set_title(f"sentiment {version}")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(f"{results.machine.get('cpu_model')}, {results.machine.get('available_cpus')} CPUs, {results.started}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None


# ---------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=int, default=10, help="seconds per point (default: 10)")
    parser.add_argument("--sweep-seconds", type=int, default=5, help="seconds per sweep-only point (default: 5)")
    parser.add_argument("--sweep", default=",".join(map(str, DEFAULT_SWEEP)), help="sweep connections, comma-separated ('' for none)")
    parser.add_argument("--versions", default="v1,v2", help="model versions (default: v1,v2)")
    parser.add_argument("--only", help="comma-separated setup names or globs (e.g. limit,naive-*,ours)")
    parser.add_argument("--ours-config", action="append", default=[], metavar="'NAME: VAR=VALUE ... [--workers N]'", help="add a setup")
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (default: 1; capped at the connections)")
    parser.add_argument("--markdown", action="store_true", help="full markdown report: sweep table, every point, notes")
    parser.add_argument("--out", type=Path, default=Path("bench/wrk_results.json"), help="JSON results (default: bench/wrk_results.json)")
    parser.add_argument("--plot", type=Path, help="PNG of texts/s against connections (needs matplotlib)")
    parser.add_argument("--from-json", type=Path, help="render a saved results file instead of measuring")
    parser.add_argument("--list", action="store_true", help="list the setups and exit")
    args = parser.parse_args(argv)
    if args.seconds < 1 or args.sweep_seconds < 1:
        parser.error("--seconds and --sweep-seconds are whole seconds, at least 1 (wrk's -d)")
    return args


def _terminate(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # unwinds through every finally: servers stopped


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        results = Results.from_json(json.loads(args.from_json.read_text()))
        results.derived = derive(results)
        print(report(results, args.markdown))
        if args.plot:
            problem = plot(results, args.plot)
            print(problem or f"plot: {args.plot}", file=sys.stderr)
        return 0

    setups = select(all_setups(args.ours_config), args.only)
    if args.list:
        for s in setups:
            print(f"{s.name:16} {s.label}" + (f"  env {dict(s.env)}" if s.env else "") + (f"  args {' '.join(s.args)}" if s.args else ""))
        return 0
    models = registry_models()
    versions = tuple(v.strip() for v in args.versions.split(",") if v.strip())
    missing = [v for v in versions if v not in models]
    if missing or not versions:
        raise SystemExit(f"--versions: {MODEL_NAME} has {', '.join(models)}; unknown: {', '.join(missing) or '(none given)'}")
    wrk = wrk_binary() if any(s.kind in ("naive", "ours") for s in setups) else None
    plan = Plan(
        versions=versions,
        seconds=args.seconds,
        sweep_seconds=args.sweep_seconds,
        sweep=tuple(int(c) for c in args.sweep.split(",") if c.strip()),
        wrk_threads=args.wrk_threads,
    )
    for s in setups:
        if s.kind == "ours" and (unknown := unknown_settings(s.env)):
            log(f"note: {s.name}: {', '.join(unknown)} not read by engine.settings.Settings (yet): this setup may equal the defaults")
    if any(s.sweep for s in setups) and args.plot and importlib.util.find_spec("matplotlib") is None:
        log("note: matplotlib is not installed: no plot (add 'matplotlib>=3.8' to the dev extra)")
    log(f"setups: {', '.join(s.name for s in setups)}; versions {', '.join(versions)}; about {estimate_s(setups, plan) / 60:.1f} min")

    other_before = other_cpu_now()
    facts = dataclasses.asdict(machine_facts(other_before))
    facts["load_average_start"] = load_average()
    facts["affinity"] = sorted(os.sched_getaffinity(0))
    if other_before is not None and other_before > 10:
        log(f"warning: other processes use {other_before:.0f}% of the machine: the figures will be low and noisy")
    results = Results(
        started=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        command=[sys.executable, *sys.argv],
        options={
            "versions": list(versions),
            "seconds": plan.seconds,
            "sweep_seconds": plan.sweep_seconds,
            "sweep": list(plan.sweep),
            "wrk_threads": plan.wrk_threads,
            "only": args.only,
        },
        machine=facts,
        tools=tool_facts(wrk),
    )
    previous = signal.signal(signal.SIGTERM, _terminate)
    interrupted = False
    try:
        run(setups, plan, results, args.out)
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: servers stopped; writing what was measured")
    finally:
        signal.signal(signal.SIGTERM, previous)
    results.finished = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    results.load_average_end = load_average()
    results.derived = derive(results)
    if args.out:
        write_json(results, args.out)
    print(report(results, args.markdown))
    if args.plot:
        problem = plot(results, args.plot)
        log(problem or f"plot: {args.plot}")
    log(f"results: {args.out}")
    failed = [s.name for s in results.setups if s.status == "failed"]
    if failed:
        log(f"failed setups: {', '.join(failed)}")
    return 130 if interrupted else (1 if failed else 0)


if __name__ == "__main__":
    sys.exit(main())
