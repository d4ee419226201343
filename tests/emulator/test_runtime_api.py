"""The real awslambdaric (the Lambda base image's runtime) polling the emulator's Runtime API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO_ROOT
from tests.emulator.conftest import Emulator
from tests.handlers.conftest import stop_server


@pytest.fixture(scope="module")
def awslambdaric(test_emulator: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    log_path = tmp_path_factory.mktemp("ric") / "awslambdaric.log"
    env = {**os.environ, "AWS_LAMBDA_RUNTIME_API": test_emulator.runtime_api, "AWS_LAMBDA_FUNCTION_NAME": "RuntimeEcho"}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "awslambdaric", "tests.emulator.handlers_for_tests.echo"],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield log_path
    finally:
        stop_server(process)


def test_boto3_invoke_is_answered_by_awslambdaric(test_emulator: Emulator, awslambdaric: Path) -> None:
    response = test_emulator.client().invoke(FunctionName="RuntimeEcho", Payload=json.dumps({"via": "runtime api"}))
    assert "FunctionError" not in response
    assert json.loads(response["Payload"].read()) == {"via": "runtime api"}
    request_id = response["ResponseMetadata"]["RequestId"]
    assert f"echo: request {request_id}" in awslambdaric.read_text()  # the context came from our headers


def test_rie_invoke_endpoint(test_emulator: Emulator, awslambdaric: Path) -> None:
    url = f"http://{test_emulator.runtime_api}/2015-03-31/functions/function/invocations"
    assert httpx.post(url, json={"n": 2}, timeout=30).json() == {"n": 2}
