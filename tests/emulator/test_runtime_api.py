"""The real awslambdaric (the Lambda base image's runtime) polling the emulator's Runtime API:
the one ``mlinfer emulate --runtime-api-port`` serves, and ``RuntimeApiServer`` in this process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from emulator.server import RuntimeApiServer
from emulator.template import FunctionSpec
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


def _awslambdaric(address: str, handler: str, log_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "AWS_LAMBDA_RUNTIME_API": address, "AWS_LAMBDA_FUNCTION_NAME": "InProcess"}
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "awslambdaric", handler], cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )


def test_in_process_runtime_api_answers_through_awslambdaric(tmp_path: Path) -> None:
    spec = FunctionSpec("InProcess", "tests.emulator.handlers_for_tests.echo", REPO_ROOT, timeout_s=30)
    logged: list[str] = []
    with RuntimeApiServer(spec, log_sink=lambda _function, text: logged.append(text)) as api:
        runtime = _awslambdaric(api.address, spec.handler, tmp_path / "ric.log")
        try:
            assert api.wait_until_initialised(30), (tmp_path / "ric.log").read_text()
            first, second = api.invoke(b'{"n": 1}'), api.invoke(b'{"n": 2}', request_id="req-2")
        finally:
            stop_server(runtime)
    assert (json.loads(first.payload), json.loads(second.payload)) == ({"n": 1}, {"n": 2})
    assert not first.function_error and second.request_id == "req-2"
    assert "echo: request req-2" in (tmp_path / "ric.log").read_text()
    assert sum(text.startswith("START RequestId:") for text in logged) == 2


@pytest.mark.parametrize(
    ("handler", "error_type"),
    [("tests.emulator.handlers_for_tests.fail", "ValueError"), ("tests.emulator.no_such_module.handler", "Runtime.ImportModuleError")],
)
def test_in_process_runtime_api_reports_function_and_init_errors(tmp_path: Path, handler: str, error_type: str) -> None:
    spec = FunctionSpec("InProcess", handler, REPO_ROOT, timeout_s=30)
    with RuntimeApiServer(spec) as api:
        runtime = _awslambdaric(api.address, handler, tmp_path / "ric.log")
        try:
            assert api.wait_until_initialised(30), (tmp_path / "ric.log").read_text()
            invocation = api.invoke(b'{"reason": "test"}')
        finally:
            stop_server(runtime)
    assert invocation.function_error
    assert json.loads(invocation.payload)["errorType"] == error_type
