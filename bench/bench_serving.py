"""Serving overhead benchmark: raw ONNX Runtime vs the engine in-process vs HTTP over loopback.

For each model version it measures, in one run:

1. raw ONNX Runtime: ``TextTokenizer.encode`` + ``session.run`` with the engine's own session options;
2. the engine in-process: ``InferenceEngine.predict(PredictRequest(...))`` on an asyncio loop;
3. HTTP over loopback against a real ``mlinfer serve`` subprocess (uvicorn + FastAPI).

The engine and the server run with ``CACHE_BACKEND=none``, so every call runs the model;
``bench/bench_cache.py`` measures the result cache.

Three workloads, each compared with the raw run of the same workload:

- ``short``: one short text per call, always the same;
- ``mixed``: one text per call, drawn from 64 fixed texts of 1 to ~90 words; the concurrent
  clients send these, so the batches the engine coalesces hold the same texts as ``batch32``;
- ``batch32``: 32 different texts per call, alternating between two fixed sets of 32.

Every loop is bounded by ``--seconds`` and ``--max-calls``, after a bounded warm-up.
Client and server share the machine's CPUs: the HTTP figures include the client's own CPU time.

    .venv/bin/python bench/bench_serving.py --markdown
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from _http import (
    IDLE_CHECK_S,
    MODEL_NAME,
    REGISTRY_PATH,
    WARMUP_CALLS,
    WARMUP_SECONDS,
    Bounds,
    CpuReport,
    CpuWatch,
    MachineFacts,
    PostClient,
    Server,
    Timing,
    free_port,
    machine_facts,
    make_client,
    measure_async,
    other_cpu_now,
    running_server,
)

from engine.facade import InferenceEngine
from engine.factory import build_engine
from engine.registry import load_registry
from engine.schemas import PredictRequest
from engine.session import SessionConfig, open_session
from engine.settings import Settings
from engine.tokenization import TextTokenizer

BATCH = 32

CLIENT_NAMES = {"raw": "raw asyncio streams", "httpx": "httpx.AsyncClient"}

log = logging.getLogger("bench")

SHORT_TEXT = "Great product, works exactly as described."

# Fixed, varied, review-like texts (1 to ~90 words; 4 to 66 tokens). No randomness anywhere.
TEXTS: tuple[str, ...] = (
    "Absolutely love it.",
    "Terrible. Broke after two days.",
    "It's fine, nothing special.",
    "The battery lasts all day and the screen is bright enough to read outside.",
    "Shipping took three weeks and the box arrived crushed, but the item inside was undamaged.",
    "Worst customer service I have ever dealt with; they hung up on me twice.",
    "Does what it says on the tin.",
    "I was skeptical at first, but after a month of daily use I can honestly say this blender is the best kitchen purchase I've made "
    "in years. It crushes ice in seconds, the jar is easy to clean, and it is quieter than my old one.",
    "Meh.",
    "The sizing chart is way off. I ordered a medium based on my measurements and it fits like an extra large.",
    "Five stars for the sound quality, minus one for the flimsy charging case.",
    "Not worth the money.",
    "My kids play with this every single day and it still looks brand new.",
    "The instructions were missing, so assembly took twice as long as it should have.",
    "Arrived on time and well packaged.",
    "I returned it. The color was nothing like the photos and the fabric felt cheap and scratchy against the skin.",
    "Solid build, intuitive menus, and the app actually works, which is rare for smart home gadgets.",
    "It stopped charging after the first week and support keeps asking me to send the same photos again.",
    "Pretty good for the price, though the keys are a bit mushy.",
    "Hands down the most comfortable running shoes I've owned.",
    "The coffee tastes burnt no matter which setting I use.",
    "Decent, but I expected more from a brand with this reputation.",
    "After reading dozens of reviews I finally picked this vacuum, and I have mixed feelings. Suction on hard floors is excellent and "
    "it handles pet hair better than my previous model, but the battery barely lasts twenty minutes on carpet and the bin is tiny, so "
    "I end up emptying it three or four times per room.",
    "Exactly what I needed.",
    "The hotel room was clean but the walls were paper thin and we barely slept.",
    "Food was cold, the waiter was rude, and we waited an hour for the bill.",
    "Lovely little cafe with friendly staff and the best croissants in town.",
    "This book dragged in the middle but the ending made up for it.",
    "Okay.",
    "The update completely broke the sync feature and now I lose my notes every other day.",
    "Great value. Would buy again.",
    "I can't recommend this enough to anyone who works from home.",
    "The lid doesn't seal properly, so everything leaks in my bag.",
    "Beautiful design, but the handle gets too hot to touch while cooking.",
    "Received the wrong item and the return process was a nightmare.",
    "Works as expected, no complaints so far.",
    "The tent kept us dry through a whole night of heavy rain, and it packs down smaller than I thought possible.",
    "Customer support replaced my defective unit within two days without any hassle. Impressed.",
    "The movie had stunning visuals but the plot made no sense at all.",
    "Three out of five. Some features are great, others feel unfinished.",
    "This is the third one I've bought, one for me and two as gifts.",
    "Cheap plastic that cracked the first time I dropped it from a table.",
    "The headphones are comfortable for hours, the noise cancelling is excellent on flights, and the battery easily lasts a week of "
    "commuting. My only complaint is that the touch controls are a little too sensitive.",
    "Not bad.",
    "I hate how loud the fan is, even on the lowest setting.",
    "Perfect gift for a new parent.",
    "The seller was responsive and even included a handwritten thank-you note.",
    "The paint started peeling after one wash in the dishwasher.",
    "Honestly, it's average. It does the job, but I wouldn't go out of my way to buy it again.",
    "Setup took five minutes and it has worked flawlessly ever since.",
    "Overpriced for what you get.",
    "The flavour is rich and smooth, with none of the bitterness I get from other brands.",
    "Disappointed. The zipper broke on the first trip.",
    "It's a phone case. It protects the phone.",
    "Our flight was delayed six hours, nobody told us anything, and the compensation form keeps returning an error.",
    "Superb quality and fast delivery.",
    "The mattress was too firm for me at first, but after a couple of weeks my back pain is noticeably better.",
    "Stopped working after the warranty expired, of course.",
    "Great course content, although the videos could be shorter.",
    "Fine for occasional use, not for professionals.",
    "We stayed for a week and the staff remembered our names from day one. The breakfast buffet was generous, the pool was clean, and "
    "the view from the balcony was breathtaking.",
    "The app crashes every time I try to upload a photo.",
    "Smells amazing and lasts all day.",
    "Would not buy again.",
)
assert len(TEXTS) == 2 * BATCH
# Two interleaved sets of 32 different texts, with similar length mixes.
BATCHES: tuple[tuple[str, ...], tuple[str, ...]] = (TEXTS[0::2], TEXTS[1::2])


def batch_for(iteration: int) -> list[str]:
    return list(BATCHES[iteration % 2])


def client_text(client: int, iteration: int) -> str:
    """Concurrent client ``client`` alternates between text ``client`` of each batch set."""
    return BATCHES[iteration % 2][client % BATCH]


# ---------------------------------------------------------------------------- measurement


@dataclass(frozen=True)
class Measurement:
    layer: str  # raw ORT / engine / HTTP
    mode: str  # human description
    workload: str  # short / mixed / batch32: the raw run of the same workload is the reference
    texts_per_call: int
    concurrency: int
    latencies_ms: tuple[float, ...]
    elapsed_s: float
    cpu: CpuReport | None

    @property
    def other_cpu_pct(self) -> float | None:
        return None if self.cpu is None else self.cpu.other_pct

    @property
    def calls(self) -> int:
        return len(self.latencies_ms)

    @property
    def median_ms(self) -> float:
        return float(np.median(self.latencies_ms))

    @property
    def p95_ms(self) -> float:
        return float(np.percentile(self.latencies_ms, 95))

    @property
    def calls_per_s(self) -> float:
        return self.calls / self.elapsed_s

    @property
    def texts_per_s(self) -> float:
        return self.calls_per_s * self.texts_per_call


def measure_sync(call: Callable[[int], object], bounds: Bounds) -> Timing:
    """Warm up, then time ``call(i)`` sequentially until ``bounds`` runs out."""
    warm_deadline = time.perf_counter() + WARMUP_SECONDS
    for i in range(WARMUP_CALLS):
        call(i)
        if time.perf_counter() > warm_deadline:
            break
    latencies: list[float] = []
    watch = CpuWatch(bounds.pids)
    started = time.perf_counter()
    deadline = started + bounds.seconds
    for i in range(bounds.max_calls):
        t0 = time.perf_counter()
        call(i)
        t1 = time.perf_counter()
        latencies.append((t1 - t0) * 1000.0)
        if t1 >= deadline:
            break
    elapsed = time.perf_counter() - started
    return Timing(tuple(latencies), elapsed, watch.stop())


# ---------------------------------------------------------------------------- raw baseline


def engine_settings() -> Settings:
    # No result cache: every call must run the model (bench/bench_cache.py measures the cache).
    return Settings.from_values({"model_registry_path": REGISTRY_PATH, "log_level": "WARNING", "cache_backend": "none"})


class RawModel:
    """Tokeniser + session exactly as ``TextClassifier`` opens them, without the engine around it."""

    def __init__(self, version: str, settings: Settings) -> None:
        registry = load_registry(settings.model_registry_path)
        spec = registry.models[MODEL_NAME].versions[version]
        model_path = Path(registry.resolve_path(spec.path))
        tokenizer_path = Path(registry.resolve_path(spec.tokenizer)) if spec.tokenizer else model_path.parent / "tokenizer.json"
        self.tokenizer = TextTokenizer.from_file(tokenizer_path)
        config = SessionConfig(intra_op_threads=settings.intra_op_threads, providers=settings.provider_list())
        self.session = open_session(model_path, config)
        self.output = self.session.get_outputs()[0].name
        self.takes_token_types = "token_type_ids" in {i.name for i in self.session.get_inputs()}

    def run(self, texts: Sequence[str]) -> np.ndarray:
        batch = self.tokenizer.encode(texts)
        feeds = batch.feeds()
        if self.takes_token_types:
            feeds["token_type_ids"] = np.zeros_like(batch.input_ids)
        result: np.ndarray = self.session.run([self.output], feeds)[0]
        return result


def bench_raw(version: str, settings: Settings, bounds: Bounds) -> list[Measurement]:
    model = RawModel(version, settings)
    short = measure_sync(lambda _i: model.run([SHORT_TEXT]), bounds)
    mixed = measure_sync(lambda i: model.run([TEXTS[i % len(TEXTS)]]), bounds)
    b32 = measure_sync(lambda i: model.run(batch_for(i)), bounds)
    return [
        Measurement("raw ORT", "tokenise + session.run, short text", "short", 1, 1, *short),
        Measurement("raw ORT", "tokenise + session.run, mixed texts one by one", "mixed", 1, 1, *mixed),
        Measurement("raw ORT", "tokenise + session.run", "batch32", BATCH, 1, *b32),
    ]


# ---------------------------------------------------------------------------- engine in-process


async def _engine_runs(engine: InferenceEngine, version: str, bounds: Bounds, concurrency: int) -> list[Measurement]:
    async def single(_client: int, _i: int) -> None:
        await engine.predict(PredictRequest(texts=[SHORT_TEXT], model_version=version))

    async def batch(_client: int, i: int) -> None:
        await engine.predict(PredictRequest(texts=batch_for(i), model_version=version))

    async def concurrent(client: int, i: int) -> None:
        await engine.predict(PredictRequest(texts=[client_text(client, i)], model_version=version))

    b1 = await measure_async(single, bounds, 1)
    b32 = await measure_async(batch, bounds, 1)
    conc = await measure_async(concurrent, bounds, concurrency)
    return [
        Measurement("engine", "InferenceEngine.predict, short text", "short", 1, 1, *b1),
        Measurement("engine", "InferenceEngine.predict", "batch32", BATCH, 1, *b32),
        Measurement("engine", f"{concurrency} concurrent tasks, 1 mixed text each", "mixed", 1, concurrency, *conc),
    ]


def bench_engine(engine: InferenceEngine, version: str, bounds: Bounds, concurrency: int) -> list[Measurement]:
    return asyncio.run(_engine_runs(engine, version, bounds, concurrency))


# ---------------------------------------------------------------------------- HTTP over loopback


def request_body(texts: Sequence[str], version: str) -> bytes:
    return json.dumps({"texts": list(texts), "model": MODEL_NAME, "model_version": version}).encode("utf-8")


async def _check_response(client: PostClient, version: str) -> None:
    """One request, fully decoded, so a wrong version or a broken server fails loudly before timing."""
    answer = json.loads(await client.post(request_body(batch_for(0), version)))
    if answer["model_version"] != version or len(answer["results"]) != BATCH:
        raise RuntimeError(f"unexpected response: version {answer['model_version']!r}, {len(answer['results'])} results")


async def _http_runs(server: Server, version: str, bounds: Bounds, concurrency: int, kind: str) -> list[Measurement]:
    bounds = dataclasses.replace(bounds, pids=(*bounds.pids, server.pid))
    clients = [make_client(kind, server) for _ in range(concurrency)]
    # Request bodies are encoded once, outside the timed region: the client only sends and reads.
    single_body = request_body([SHORT_TEXT], version)
    batch_bodies = [request_body(b, version) for b in BATCHES]
    client_bodies = [[request_body([client_text(c, i)], version) for i in range(2)] for c in range(concurrency)]
    try:
        await _check_response(clients[0], version)

        async def single(_client: int, _i: int) -> None:
            await clients[0].post(single_body)

        async def batch(_client: int, i: int) -> None:
            await clients[0].post(batch_bodies[i % 2])

        async def concurrent(client: int, i: int) -> None:
            await clients[client].post(client_bodies[client][i % 2])

        seq = await measure_async(single, bounds, 1)
        conc = await measure_async(concurrent, bounds, concurrency)
        b32 = await measure_async(batch, bounds, 1)
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
    client_name = CLIENT_NAMES[kind]
    return [
        Measurement("HTTP", f"1 client, sequential, short text ({client_name})", "short", 1, 1, *seq),
        Measurement("HTTP", f"1 client, sequential ({client_name})", "batch32", BATCH, 1, *b32),
        Measurement("HTTP", f"{concurrency} concurrent clients, 1 mixed text each ({client_name})", "mixed", 1, concurrency, *conc),
    ]


def bench_http(server: Server, version: str, bounds: Bounds, concurrency: int, kind: str) -> list[Measurement]:
    return asyncio.run(_http_runs(server, version, bounds, concurrency, kind))


# ---------------------------------------------------------------------------- reporting


HEADERS = (
    "layer",
    "mode",
    "workload",
    "texts/call",
    "conc.",
    "calls",
    "median ms",
    "p95 ms",
    "calls/s",
    "texts/s",
    "median / raw",
    "texts/s / raw",
    "texts/s / raw b32",
    "other CPU %",
)


def table_rows(measurements: Sequence[Measurement]) -> list[list[str]]:
    raw = {m.workload: m for m in measurements if m.layer == "raw ORT"}
    rows = []
    for m in measurements:
        reference = raw[m.workload]
        rows.append(
            [
                m.layer,
                m.mode,
                m.workload,
                str(m.texts_per_call),
                str(m.concurrency),
                str(m.calls),
                f"{m.median_ms:.2f}",
                f"{m.p95_ms:.2f}",
                f"{m.calls_per_s:.1f}",
                f"{m.texts_per_s:.1f}",
                f"{m.median_ms / reference.median_ms:.2f}x",
                f"{m.texts_per_s / reference.texts_per_s:.2f}x",
                f"{m.texts_per_s / raw['batch32'].texts_per_s:.2f}x",
                "n/a" if m.other_cpu_pct is None else f"{m.other_cpu_pct:.0f}",
            ]
        )
    return rows


def format_table(rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(HEADERS) + " |", "|" + "|".join("---" if i < 3 else "---:" for i in range(len(HEADERS))) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(HEADERS)]

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    return "\n".join([fmt(HEADERS), fmt(["-" * w for w in widths]), *(fmt(r) for r in rows)])


def report(facts: MachineFacts, args: argparse.Namespace, results: dict[str, list[Measurement]], total_s: float) -> None:
    bullet = "- " if args.markdown else "  "
    print("## Machine" if args.markdown else "Machine")
    client = CLIENT_NAMES[args.client]
    print(f"{bullet}CPUs available to the process (engine.cpus.available_cpus): {facts.available_cpus}; os.cpu_count: {facts.os_cpu_count}")
    print(f"{bullet}CPU: {facts.cpu_model}")
    print(f"{bullet}onnxruntime {facts.onnxruntime} ({facts.providers}); Python {facts.python}; {facts.platform}")
    print(f"{bullet}HTTP client: {client}, keep-alive, one connection per client")
    before = "n/a" if facts.other_cpu_before is None else f"{facts.other_cpu_before:.0f}%"
    print(f"{bullet}CPU used by other processes in the {IDLE_CHECK_S:.0f} s before the run: {before} (see the 'other CPU %' column)")
    print(
        f"{bullet}Caveat: the benchmark client and the server share these {facts.available_cpus} CPUs, so HTTP figures "
        "include the client's CPU time and the two compete for cores; ONNX Runtime uses "
        f"{SessionConfig().resolved_threads()} intra-op threads in every process."
    )
    print(f"{bullet}--seconds {args.seconds} per measurement, --max-calls {args.max_calls}, --concurrency {args.concurrency}")
    print(f"{bullet}total run time {total_s:.0f} s")
    print()
    for version, measurements in results.items():
        print(f"## {version}" if args.markdown else f"Version {version}")
        print()
        print(format_table(table_rows(measurements), args.markdown))
        print()
    print(
        "Ratios: 'median / raw' and 'texts/s / raw' divide by the raw ORT row of the same workload (short, mixed or batch32); "
        "'texts/s / raw b32' divides by the raw batch-32 throughput. 'other CPU %': share of the machine's CPU capacity "
        "used by processes other than this benchmark and its server during the measurement (steal included); "
        "rows with more than a few percent are skewed."
    )


# ---------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--version", action="append", choices=["v1", "v2", "v3", "v4"], help="a model version to measure; repeatable (default: v1 and v2)"
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per measurement (default 3)")
    parser.add_argument("--max-calls", type=int, default=20_000, help="most calls per measurement (default 20000)")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent clients / tasks (default 32)")
    parser.add_argument("--client", choices=["raw", "httpx"], default="raw", help="HTTP client (default raw asyncio streams)")
    parser.add_argument("--markdown", action="store_true", help="print markdown tables (for bench/RESULTS.md)")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.max_calls < 1 or args.concurrency < 1:
        parser.error("--seconds, --max-calls and --concurrency must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    log.setLevel(logging.INFO)
    versions = list(dict.fromkeys(args.version)) if args.version else ["v1", "v2"]
    bounds = Bounds(seconds=args.seconds, max_calls=args.max_calls, pids=(os.getpid(),))
    other_cpu_before = other_cpu_now()
    if other_cpu_before is not None and other_cpu_before > 5.0:
        log.warning("other processes use %.0f%% of the CPUs: every figure will be skewed", other_cpu_before)
    started = time.perf_counter()
    results: dict[str, list[Measurement]] = {v: [] for v in versions}

    settings = engine_settings()
    engine = build_engine(settings)
    engine.load()
    try:
        for version in versions:
            log.info("%s: raw ONNX Runtime", version)
            results[version] += bench_raw(version, settings, bounds)
            log.info("%s: engine in-process", version)
            results[version] += bench_engine(engine, version, bounds, args.concurrency)
    finally:
        engine.close()

    port = free_port()
    log.info("starting mlinfer serve on 127.0.0.1:%d", port)
    with running_server(port, {"CACHE_BACKEND": "none"}) as server:
        for version in versions:
            log.info("%s: HTTP over loopback", version)
            results[version] += bench_http(server, version, bounds, args.concurrency, args.client)

    report(machine_facts(other_cpu_before), args, results, time.perf_counter() - started)
    log.info("done at %s", dt.datetime.now().isoformat(timespec="seconds"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
