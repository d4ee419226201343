"""The same model over each of the server's protocols: native JSON, Open Inference Protocol V2
over REST (JSON), and V2 over gRPC, against the raw ONNX Runtime limit, measured in one run.

One ``mlinfer serve`` (its defaults, ``CACHE_BACKEND=none`` so every text runs the model,
``GRPC_PORT`` set) answers every load, so the figures differ only by protocol:

- ``limit``: raw ONNX Runtime at batch 32, one process per core (``bench/bench_wrk.py``'s);
- ``native``: ``POST /api/v1/predict`` under wrk (``bench/wrk/predict.lua``);
- ``v2-rest``: ``POST /v2/models/sentiment_analysis/versions/v1/infer`` under wrk, V2 JSON bodies;
- ``v2-grpc``: ``ModelInfer`` from an asyncio gRPC client (``grpc.aio`` with tritonclient's compiled
  messages, one channel, N calls in flight). The client is Python on the same 2 CPUs, so its CPU
  (reported) comes out of the server's: this understates gRPC.

at 1 and 32 connections (calls in flight) with one text per request, and 4 with 32 texts.

    .venv/bin/python bench/bench_protocols.py --seconds 10          # ~3 minutes
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from _http import AUTH_TOKEN, MODEL_NAME, REGISTRY_PATH, free_port, load_average, mlinfer_executable
from bench_wrk import (
    BATCH,
    Load,
    RunningServer,
    Setup,
    measure_raw,
    read_texts,
    registry_models,
    run_wrk,
    server_process,
    wrk_binary,
)
from tritonclient.grpc import service_pb2, service_pb2_grpc

VERSION = "v1"
V2_PATH = f"/v2/models/{MODEL_NAME}/versions/{VERSION}/infer"
LOADS = (Load("c1", 1), Load("c32", 32), Load(f"b{BATCH} c4", 4, BATCH))


@dataclass(frozen=True)
class Row:
    protocol: str
    load: str
    texts_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    client_cpu_pct: float | None


def grpc_load(port: int, texts: Sequence[str], load: Load, seconds: float) -> Row:
    """``load.connections`` ModelInfer calls in flight for ``seconds``, on one channel."""
    requests = []
    for i in range(len(texts)):
        batch = [texts[(i + j) % len(texts)].encode() for j in range(load.batch)]
        tensor = service_pb2.ModelInferRequest.InferInputTensor(name="text", datatype="BYTES", shape=[len(batch)])
        tensor.contents.bytes_contents.extend(batch)
        requests.append(service_pb2.ModelInferRequest(model_name=MODEL_NAME, model_version=VERSION, inputs=[tensor]))
    latencies: list[float] = []
    errors = 0

    async def caller(stub: service_pb2_grpc.GRPCInferenceServiceStub, index: int, until: float) -> None:
        nonlocal errors
        metadata = (("x-token", AUTH_TOKEN),)
        while time.perf_counter() < until:
            started = time.perf_counter()
            try:
                await stub.ModelInfer(requests[index % len(requests)], metadata=metadata, timeout=30)
            except grpc.aio.AioRpcError:
                errors += 1
            else:
                latencies.append(time.perf_counter() - started)
            index += 17

    async def run() -> float:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            await stub.ModelInfer(requests[0], metadata=(("x-token", AUTH_TOKEN),), timeout=30)  # connected
            started = time.perf_counter()
            await asyncio.gather(*(caller(stub, i * 7, started + seconds) for i in range(load.connections)))
            return time.perf_counter() - started

    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    wall = asyncio.run(run())
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else float("nan")
    return Row(
        "v2-grpc",
        load.name,
        len(latencies) * load.batch / wall,
        (statistics.median(ordered) if ordered else float("nan")) * 1000.0,
        p99 * 1000.0,
        errors,
        cpu_s / wall * 100.0,
    )


def measure(seconds: int) -> tuple[float, list[Row]]:
    wrk = wrk_binary()
    texts = read_texts()
    model = registry_models()[VERSION]
    limit_setup = Setup("limit", "limit", "raw ORT")
    limits = [measure_raw(limit_setup, VERSION, model, texts, seconds).texts_per_s]
    port, grpc_port = free_port(), free_port()
    env = {
        **os.environ,
        "AUTH_TOKEN": AUTH_TOKEN,
        "MODEL_REGISTRY_PATH": str(REGISTRY_PATH),
        "CACHE_BACKEND": "none",
        "LOG_LEVEL": "WARNING",
        "GRPC_PORT": str(grpc_port),
    }
    rows: list[Row] = []
    command = [mlinfer_executable(), "serve", "--host", "127.0.0.1", "--port", str(port)]
    with server_process(command, env, port) as server:
        warm(wrk, server)
        for load in LOADS:
            for protocol, path in (("native", None), ("v2", V2_PATH)):
                kwargs = {} if path is None else {"path": path, "protocol": protocol}
                point = run_wrk(wrk, server, load, VERSION, seconds, 1, protocol, **kwargs)
                name = "native" if path is None else "v2-rest"
                rows.append(Row(name, load.name, point.texts_per_s, point.p50_ms, point.p99_ms, point.non200, point.client_cpu_pct))
                print(f"  {name} {load.name}: {point.texts_per_s:.1f} texts/s p99 {point.p99_ms:.1f} ms", file=sys.stderr)
            row = grpc_load(grpc_port, texts, load, seconds)
            rows.append(row)
            print(f"  v2-grpc {load.name}: {row.texts_per_s:.1f} texts/s p99 {row.p99_ms:.1f} ms", file=sys.stderr)
    limits.append(measure_raw(limit_setup, VERSION, model, texts, seconds).texts_per_s)
    return statistics.mean(limits), rows


def warm(wrk: str, server: RunningServer) -> None:
    run_wrk(wrk, server, Load("warm-up", 8), VERSION, 2, 1, "warm-up")
    run_wrk(wrk, server, Load("warm-up", 8), VERSION, 2, 1, "warm-up", path=V2_PATH, protocol="v2")


def table(limit: float, rows: Sequence[Row]) -> str:
    native = {row.load: row.texts_per_s for row in rows if row.protocol == "native"}
    lines = [
        f"limit (raw ONNX Runtime, {VERSION}, mean of the start and the end): {limit:.1f} texts/s",
        "",
        "| protocol | load | texts/s | ÷ limit | ÷ native | p50 ms | p99 ms | errors | client CPU % |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        cpu = "—" if row.client_cpu_pct is None else f"{row.client_cpu_pct:.0f}"
        lines.append(
            f"| {row.protocol} | {row.load} | {row.texts_per_s:.1f} | {row.texts_per_s / limit:.2f} | "
            f"{row.texts_per_s / native[row.load]:.2f} | {row.p50_ms:.1f} | {row.p99_ms:.1f} | {row.errors} | {cpu} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10, help="per load and protocol (default 10)")
    args = parser.parse_args(argv)
    print(f"load average before: {load_average()}", file=sys.stderr)
    limit, rows = measure(args.seconds)
    print(table(limit, rows))
    print(f"\nload average after: {load_average()}")
    return 1 if any(row.errors for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
