"""Fuzz the HTTP API with schemathesis (``--checks all``) against a real ``mlinfer serve``.

    .venv/bin/python bench/fuzz.py            # --max-examples 300 --seed 20261201: about 2,100 cases, 80 s

Every operation of the OpenAPI schema, once with every token (X-Token, X-Admin-Token, the
metrics bearer token) and once with none. Prints the test cases run and the failures found;
exits 1 on any failure. schemathesis lives in ``.venv-tools`` (``make tools``). The same run,
smaller, is a test (tests/handlers/test_contract.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
SCHEMATHESIS = REPO / ".venv-tools" / "bin" / "schemathesis"
TOKENS = {"AUTH_TOKEN": "fuzz-token", "ADMIN_TOKEN": "fuzz-admin-token", "METRICS_TOKEN": "fuzz-metrics-token"}
AUTH_HEADERS = {
    "X-Token": TOKENS["AUTH_TOKEN"],
    "X-Admin-Token": TOKENS["ADMIN_TOKEN"],
    "Authorization": f"Bearer {TOKENS['METRICS_TOKEN']}",
}

# What OpenAPI cannot say, and so what a schema-valid request may still get besides schemathesis'
# default 2xx / 401 / 403 / 404 / 409 / 429 (positive_data_acceptance):
# - predict: a request's inputs fit the model it names only at run time (413 over the model's
#   limits, which the registry may set per model; 422 for the wrong input field of the model's
#   kind, or rows of the wrong width for a tabular model);
# - cache: one query parameter needing another (`version` needs `model`, else 422).
CONFIG = """
[[operations]]
include-path = "/api/v1/predict"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "413", "422", "429"]

[[operations]]
include-path-regex = "/infer$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "413", "429"]

[[operations]]
include-path = "/api/v1/cache"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "422", "429"]
"""


@dataclass(frozen=True)
class FuzzRun:
    cases: int
    failures: int
    exit_code: int
    output: str
    report: dict[str, object]


def schemathesis(base_url: str, headers: Mapping[str, str], *, seed: int, max_examples: int, workdir: Path, timeout_s: float) -> FuzzRun:
    """One schemathesis run over every operation of ``base_url``'s OpenAPI schema."""
    if not SCHEMATHESIS.is_file():
        raise FileNotFoundError(f"{SCHEMATHESIS} is missing: run `make tools` (schemathesis is in infra/tools-requirements.txt)")
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "schemathesis.toml"
    config.write_text(CONFIG)
    report = workdir / "report.json"
    argv = [str(SCHEMATHESIS), "--config-file", str(config), "run", f"{base_url}/openapi.json", "--checks", "all"]
    argv += ["--seed", str(seed), "--max-examples", str(max_examples), "--workers", "1", "--no-color", "--request-timeout", "30"]
    argv += ["--report", "json", "--report-json-path", str(report)]
    for name, value in headers.items():
        argv += ["--header", f"{name}: {value}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEMATHESIS_")}
    result = subprocess.run(argv, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout_s, check=False)
    output = f"exit {result.returncode}\n{result.stdout[-20000:]}\n{result.stderr[-4000:]}"
    if not report.is_file():
        raise RuntimeError(f"schemathesis wrote no report:\n{output}")
    loaded: dict[str, object] = json.loads(report.read_text())
    cases = loaded["test_cases"]
    assert isinstance(cases, dict)
    failures = int(cases["unique_failures"]) + len(loaded.get("errors") or [])  # type: ignore[arg-type]
    return FuzzRun(int(cases["generated"]), failures, result.returncode, output, loaded)


@contextmanager
def server(log_path: Path) -> Iterator[str]:
    """`mlinfer serve --workers 1` on a free loopback port, with every token set."""
    sys.path.insert(0, str(REPO))
    from emulator.loopback import free_port

    port = free_port()
    env = {**os.environ, **TOKENS, "MODEL_REGISTRY_PATH": str(REPO / "model_registry.yaml"), "LOG_LEVEL": "WARNING"}
    command = [sys.executable, "-m", "handlers.cli", "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server did not start:\n{log_path.read_text()[-4000:]}")
            try:
                if httpx.get(f"{base_url}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-examples", type=int, default=300, help="test cases per operation and phase (default 300)")
    parser.add_argument("--seed", type=int, default=20261201)
    parser.add_argument("--timeout", type=float, default=1800.0, help="bound on each of the two runs, in seconds")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlinfer-fuzz-") as tmp, server(Path(tmp) / "server.log") as base_url:
        total_cases = total_failures = 0
        for name, headers in (("with auth", AUTH_HEADERS), ("without auth", {})):
            started = time.monotonic()
            workdir = Path(tmp) / name.replace(" ", "-")
            run = schemathesis(base_url, headers, seed=args.seed, max_examples=args.max_examples, workdir=workdir, timeout_s=args.timeout)
            print(f"{name}: {run.cases} test cases, {run.failures} failures, {time.monotonic() - started:.0f} s")
            if run.failures or run.exit_code:
                print(run.output)
            total_cases += run.cases
            total_failures += run.failures
        print(f"total: {total_cases} test cases, {total_failures} failures (seed {args.seed}, --max-examples {args.max_examples})")
    return 1 if total_failures else 0


if __name__ == "__main__":
    sys.exit(main())
