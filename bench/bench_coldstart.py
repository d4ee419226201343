"""Lambda cold start: a fresh process imports the HTTP handler module and answers its first event.

    .venv/bin/python bench/bench_coldstart.py [--runs 5] [--markdown]

Each run is a new Python process (as a new execution environment) that times its phases:
importing the heavy libraries, loading the handler (importing its module builds and warms the
engine: the Lambda init phase), and the first invocation, both through the emulator's Python
runtime (``emulator.python_runtime``, awslambdaric's context); it reports its peak RSS. The
same is measured with a registry holding only v1, to show what the second version costs.
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
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time
phases = {}
t = time.perf_counter()
import onnxruntime, numpy
phases["import onnxruntime+numpy"] = time.perf_counter() - t
t = time.perf_counter()
import fastapi, pydantic, starlette
phases["import fastapi+pydantic"] = time.perf_counter() - t
t = time.perf_counter()
import mangum, aws_lambda_powertools, tokenizers, redis, yaml, prometheus_client
phases["import mangum+powertools+tokenizers+redis"] = time.perf_counter() - t
from emulator.python_runtime import init, invoke, make_context  # the runtime, outside the phases
loaded = init("handlers.lambda_http.handler")
if loaded.handler is None:
    sys.exit(f"init failed: {loaded.error}")
phases["handler module (engine build, model loads, warm-up)"] = loaded.init_ms / 1000.0
loads = {f"{m.name}:{m.version}": m.load_ms for m in sys.modules["handlers.lambda_http"].engine.health().models}

event = {"version": "2.0", "routeKey": "$default", "rawPath": "/api/v1/predict", "rawQueryString": "",
         "headers": {"x-token": "bench"}, "isBase64Encoded": False,
         "requestContext": {"requestId": "bench", "stage": "$default", "http": {"method": "POST", "path": "/api/v1/predict",
                            "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1"}},
         "body": json.dumps({"texts": ["I love this product"], "model_version": "v1"})}
outcome = invoke(loaded.handler, json.dumps(event), make_context("bench"))
phases["first invocation"] = outcome.duration_ms / 1000.0
assert outcome.kind == "result", outcome.payload
response = json.loads(outcome.payload)
assert response["statusCode"] == 200, response
peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
sys.stderr.write(json.dumps({"phases": phases, "loads_ms": loads, "peak_rss_mb": peak_rss_mb}) + "\n")
"""


def run_once(registry: Path) -> dict[str, object]:
    env = {
        **os.environ,
        "MODEL_REGISTRY_PATH": str(registry),
        "AUTH_TOKEN": "bench",
        "ENABLE_METRICS": "false",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
        "SHADOW_MODE": "inline",
        # As template.yaml sets it: the defaults and the rollout target load at init, other versions when named.
        "MODEL_CACHE_SIZE": "4",
        "AWS_LAMBDA_FUNCTION_NAME": "bench",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "2048",
    }
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", CHILD], cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=True)
    total = time.perf_counter() - started
    data: dict[str, object] = json.loads(result.stderr.strip().splitlines()[-1])
    data["process_s"] = total
    return data


def v1_only_registry(folder: Path) -> Path:
    path = folder / "registry.yaml"
    path.write_text(
        "models:\n  sentiment_analysis:\n    default_version: v1\n    versions:\n"
        f"      v1: {{path: {REPO / 'models/sentiment_v1/model.onnx'}}}\n"
    )
    return path


def summarise(name: str, runs: list[dict[str, object]], markdown: bool) -> None:
    phases = list(runs[0]["phases"])  # type: ignore[call-overload]
    median = {p: statistics.median(r["phases"][p] for r in runs) for p in phases}  # type: ignore[index]
    init = median["handler module (engine build, model loads, warm-up)"] + sum(v for k, v in median.items() if k.startswith("import"))
    rss = statistics.median(float(r["peak_rss_mb"]) for r in runs)  # type: ignore[arg-type]
    first = median["first invocation"]
    print(f"\n### {name} ({len(runs)} fresh processes, medians)\n" if markdown else f"\n{name}:")
    if markdown:
        print("| phase | seconds |\n|---|---:|")
    for phase, value in median.items():
        print(f"| {phase} | {value:.3f} |" if markdown else f"  {phase:55s} {value:.3f} s")
    loads = runs[0]["loads_ms"]
    print(
        ("| " if markdown else "  ")
        + f"cold start to first answer: {init + first:.3f} s; peak RSS {rss:.0f} MB"
        + (" | |" if markdown else "")
    )
    print(("| " if markdown else "  ") + f"model load + warm-up (ms, first run): {loads}" + (" | |" if markdown else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        for name, registry in (
            ("default registry (loads sentiment v1 + its canary v3, iris, sentence_embedding)", REPO / "model_registry.yaml"),
            ("v1 only", v1_only_registry(Path(folder))),
        ):
            summarise(name, [run_once(registry) for _ in range(args.runs)], args.markdown)


if __name__ == "__main__":
    main()
