"""Emulator overhead per warm invocation: the real HTTP handler called in-process, against the
same event through ``mlinfer emulate`` (boto3 ``invoke`` on the Invoke API, and an HTTP request
on the HTTP front).

    .venv/bin/python bench/bench_emulator.py [--requests 300]

In-process, the handler goes through the same runtime code as in an execution environment
(``emulator.python_runtime``: the JSON event in, awslambdaric's context, the JSON response out).
The event is the same every time, so the engine answers from its result cache: the figures
isolate what the emulator adds (HTTP, the pipe to the worker process, log capture), not
inference. Sequential, one client, after warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from emulator.loopback import free_port
from emulator.python_runtime import init, invoke, make_context

REPO = Path(__file__).resolve().parents[1]
TOKEN = "bench-token"
BODY = {"id": "1", "texts": ["I love this product"], "model_version": "v1"}


def _timed(call: Callable[[], object], requests: int) -> list[float]:
    for _ in range(20):
        call()
    samples = []
    for _ in range(requests):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000.0)
    return samples


def in_process(event: dict[str, Any], requests: int) -> list[float]:
    os.environ.update(
        AUTH_TOKEN=TOKEN,
        MODEL_REGISTRY_PATH=str(REPO / "model_registry.yaml"),
        POWERTOOLS_TRACE_DISABLED="true",
        ENABLE_METRICS="false",
        AWS_LAMBDA_FUNCTION_NAME="InferenceFunction",
        AWS_LAMBDA_FUNCTION_MEMORY_SIZE="2048",
    )
    sys.path.insert(0, str(REPO))
    # The handler's JSON logs go to /dev/null (in the emulator they go to the worker's scratch
    # file); Powertools holds sys.stdout from import, hence the file descriptor.
    saved, devnull = os.dup(1), os.open(os.devnull, os.O_WRONLY)
    sys.stdout.flush()
    os.dup2(devnull, 1)
    try:
        loaded = init("handlers.lambda_http.handler")
        handler = loaded.handler
        if handler is None:
            raise SystemExit(f"init failed: {loaded.error}")
        payload = json.dumps(event)

        def call() -> None:
            outcome = invoke(handler, payload, make_context())
            if outcome.kind != "result":
                raise RuntimeError(outcome.payload)

        return _timed(call, requests)
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)


def through_emulator(event: dict[str, Any], requests: int) -> tuple[list[float], list[float]]:
    import boto3
    import httpx
    from botocore.config import Config

    port, lambda_port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as scratch:
        env_vars = Path(scratch) / "env.json"
        env_vars.write_text(json.dumps({"InferenceFunction": {"AUTH_TOKEN": TOKEN, "POWERTOOLS_TRACE_DISABLED": "true"}}))
        command = [sys.executable, "-m", "handlers.cli", "emulate", "--port", str(port), "--lambda-port", str(lambda_port)]
        command += ["--env-vars", str(env_vars), "--max-concurrency", "1"]
        process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    httpx.get(f"http://127.0.0.1:{lambda_port}/2015-03-31/functions/", timeout=1)
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            client = boto3.client(
                "lambda",
                endpoint_url=f"http://127.0.0.1:{lambda_port}",
                region_name="us-east-1",
                aws_access_key_id="x",
                aws_secret_access_key="x",
                config=Config(retries={"mode": "standard", "max_attempts": 1}),
            )
            payload = json.dumps(event).encode()
            invoke = _timed(lambda: client.invoke(FunctionName="InferenceFunction", Payload=payload)["Payload"].read(), requests)
            with httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
                front = _timed(lambda: http.post("/api/v1/predict", json=BODY, headers={"x-token": TOKEN}).raise_for_status(), requests)
            return invoke, front
        finally:
            process.terminate()
            process.wait(timeout=15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    event = json.loads((REPO / "events" / "http_api_predict.json").read_text())
    event["headers"]["x-token"] = TOKEN
    invoke, front = through_emulator(event, args.requests)
    direct = in_process(event, args.requests)
    base = statistics.median(direct)
    print(f"{args.requests} sequential warm requests, same event (cache hits), on {os.cpu_count()} CPUs\n")
    print("| path | p50 ms | p90 ms | p50 vs in-process | added p50 ms |")
    print("|---|---:|---:|---:|---:|")
    for name, samples in (("handler in-process", direct), ("boto3 invoke (Invoke API)", invoke), ("HTTP front (httpx)", front)):
        p50, p90 = statistics.median(samples), statistics.quantiles(samples, n=10)[-1]
        print(f"| {name} | {p50:.2f} | {p90:.2f} | {p50 / base:.1f}x | {p50 - base:+.2f} |")


if __name__ == "__main__":
    main()
