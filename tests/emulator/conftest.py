"""Real ``mlinfer emulate`` processes on ephemeral 127.0.0.1 ports, and boto3 clients for them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from tests.conftest import REPO_ROOT
from tests.network import free_port, stop_server, wait_until_ready

TEST_TEMPLATE = Path(__file__).resolve().parent / "template.yaml"
MAX_CONCURRENCY = 2
TOKEN = "emulator-token"
STARTUP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Emulator:
    http_url: str
    lambda_url: str
    runtime_api: str
    log_path: Path

    def client(self) -> Any:
        """boto3's Lambda client; no retries, so that a throttle reaches the test."""
        return boto3.client(
            "lambda",
            endpoint_url=self.lambda_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(retries={"mode": "standard", "max_attempts": 1}, read_timeout=60),
        )


def start_emulator(
    log_path: Path, template: Path, *extra: str, env_vars: dict[str, Any] | None = None, runtime_api_function: str | None = None
) -> tuple[subprocess.Popen[bytes], Emulator]:
    port, lambda_port, runtime_port = free_port(), free_port(), free_port()
    command = [sys.executable, "-m", "handlers.cli", "emulate", "--template", str(template), "--port", str(port)]
    # --no-reload: the test template's code folder is the checkout, and an edit there must not replace environments mid-test.
    command += ["--lambda-port", str(lambda_port), "--no-reload", *extra]
    if runtime_api_function is not None:
        command += ["--runtime-api-port", str(runtime_port), "--runtime-api-function", runtime_api_function]
    if env_vars is not None:
        env_file = log_path.with_suffix(".env.json")
        env_file.write_text(json.dumps(env_vars))
        command += ["--env-vars", str(env_file)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT)
    emulator = Emulator(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{lambda_port}", f"127.0.0.1:{runtime_port}", log_path)
    ready_url = f"{emulator.lambda_url}/2015-03-31/functions/"
    wait_until_ready(process, ready_url, log_path, what="emulator", timeout_s=STARTUP_TIMEOUT_S)
    return process, emulator


@pytest.fixture(scope="session")
def test_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """The test template's functions; RuntimeEcho is served through the Runtime API."""
    log_path = tmp_path_factory.mktemp("emulator") / "emulator.log"
    process, emulator = start_emulator(
        log_path, TEST_TEMPLATE, "--max-concurrency", str(MAX_CONCURRENCY), runtime_api_function="RuntimeEcho"
    )
    try:
        yield emulator
    finally:
        stop_server(process)


@pytest.fixture(scope="session")
def real_emulator(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """The repository's template.yaml: the real InferenceFunction."""
    log_path = tmp_path_factory.mktemp("emulator") / "real.log"
    env_vars = {"InferenceFunction": {"AUTH_TOKEN": TOKEN, "POWERTOOLS_TRACE_DISABLED": "true"}}
    process, emulator = start_emulator(log_path, REPO_ROOT / "template.yaml", env_vars=env_vars)
    try:
        yield emulator
    finally:
        stop_server(process)
