"""The real awslambdaric (the Lambda base image's runtime) polling the emulator's Runtime API:
the one ``mlinfer emulate --runtime-api-port`` serves, and ``RuntimeApiServer`` in this process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from emulator import sandbox
from emulator.pool import InvokeOptions
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


RUNTIME_HANDLERS = "tests.emulator.handlers_runtime"
INIT_WAIT_S = 30.0


def _until(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def test_runtime_killed_while_polling_is_never_handed_an_invocation(tmp_path: Path) -> None:
    spec = FunctionSpec("Polled", f"{RUNTIME_HANDLERS}.echo", REPO_ROOT, timeout_s=3)
    with RuntimeApiServer(spec) as api:
        for restart in range(2):
            runtime = _awslambdaric(api.address, spec.handler, tmp_path / f"killed-{restart}.log")
            assert api.wait_until_polling(INIT_WAIT_S), (tmp_path / f"killed-{restart}.log").read_text()
            runtime.kill()  # SIGKILL in the middle of its long poll
            runtime.wait(timeout=10)
            assert _until(lambda: api.polling == 0, 5), "the dead runtime's poll is still waiting"
        runtime = _awslambdaric(api.address, spec.handler, tmp_path / "ric.log")
        try:
            assert api.wait_until_polling(INIT_WAIT_S), (tmp_path / "ric.log").read_text()
            invocations = [api.invoke(json.dumps({"n": n}).encode()) for n in range(3)]
        finally:
            stop_server(runtime)
    assert [(invocation.function_error, json.loads(invocation.payload)) for invocation in invocations] == [
        (False, {"n": n}) for n in range(3)
    ]


def test_response_over_the_limit_is_refused_and_the_invocation_fails(tmp_path: Path) -> None:
    spec = FunctionSpec("Large", f"{RUNTIME_HANDLERS}.large", REPO_ROOT, timeout_s=10)
    with RuntimeApiServer(spec) as api:
        runtime = _awslambdaric(api.address, spec.handler, tmp_path / "ric.log")
        try:
            assert api.wait_until_polling(INIT_WAIT_S), (tmp_path / "ric.log").read_text()
            invocation = api.invoke(json.dumps({"mb": 7}).encode())
            runtime.wait(timeout=10)  # awslambdaric exits when its response is refused, as on Lambda
        finally:
            stop_server(runtime)
    assert invocation.function_error and invocation.error_type == "Function.ResponseSizeTooLarge"
    assert json.loads(invocation.payload) == {
        "errorMessage": "Response payload size exceeded maximum allowed payload size (6291556 bytes).",
        "errorType": "Function.ResponseSizeTooLarge",
    }
    refused = '{"errorMessage":"Exceeded maximum allowed payload size (6291556 bytes).","errorType":"RequestEntityTooLarge"}'
    assert f"Http response code: 413. {refused}" in (tmp_path / "ric.log").read_text()


def test_invoke_options_reach_the_runtime_context(tmp_path: Path) -> None:
    spec = FunctionSpec("Context", f"{RUNTIME_HANDLERS}.context", REPO_ROOT, timeout_s=5)
    arn = "arn:aws:lambda:us-east-1:123456789012:function:Context:live"
    trace = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    client_context = json.dumps({"custom": {"tenant": "é"}, "env": {"locale": "fr"}, "client": {}})
    options = InvokeOptions(version="1", invoked_arn=arn, client_context=client_context, trace_id=trace)
    logged: list[str] = []
    with RuntimeApiServer(spec, log_sink=lambda _function, text: logged.append(text)) as api:
        runtime = _awslambdaric(api.address, spec.handler, tmp_path / "ric.log")
        try:
            assert api.wait_until_polling(INIT_WAIT_S), (tmp_path / "ric.log").read_text()
            qualified = api.invoke(b"{}", request_id="req-live", options=options)
            plain = api.invoke(b"{}")
        finally:
            stop_server(runtime)
    answer = json.loads(qualified.payload)
    assert answer["invoked_function_arn"] == arn and answer["trace_id"] == trace
    assert answer["client_context"] == {"custom": {"tenant": "é"}, "env": {"locale": "fr"}}
    assert 0 < answer["remaining_ms"] <= 5000
    assert qualified.executed_version == "1" and logged[0].startswith("START RequestId: req-live Version: 1\n")
    default = json.loads(plain.payload)
    assert default["invoked_function_arn"] == "arn:aws:lambda:us-east-1:123456789012:function:Context"
    assert default["client_context"] is None and default["trace_id"].startswith("Root=1-")
    assert plain.executed_version == "$LATEST"


def _launched(spec: FunctionSpec, logged: list[str]) -> RuntimeApiServer:
    return RuntimeApiServer(spec, launch=True, host_environment=os.environ, log_sink=lambda _function, text: logged.append(text))


def test_launched_runtime_runs_with_the_function_environment_and_logs_its_output() -> None:
    spec = FunctionSpec(
        "Launched", f"{RUNTIME_HANDLERS}.talk_then_sleep", REPO_ROOT, memory_mb=256, timeout_s=2, environment={"SHADOW_MODE": "off"}
    )
    logged: list[str] = []
    with _launched(spec, logged) as api:
        environment = api.runtime_environment
        first = api.invoke(b'{"seconds": 0}')
        timed_out = api.invoke(b'{"seconds": 10}')
        after = api.invoke(b'{"seconds": 0}')
    assert environment["AWS_LAMBDA_RUNTIME_API"] == api.address and environment["SHADOW_MODE"] == "off"
    assert environment["AWS_LAMBDA_FUNCTION_NAME"] == "Launched" and environment["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"
    assert not first.function_error and first.init_ms is not None and first.init_ms > 0
    start, _, rest = first.log.partition("\n")
    assert start.startswith("START RequestId:") and rest.startswith("talking before the sleep in process ")
    assert "END RequestId:" in rest and "Max Memory Used: 0 MB" not in rest and "Init Duration:" in rest
    # A timeout keeps what the function printed, kills the runtime, and the next invocation starts a new one.
    assert timed_out.function_error and timed_out.error_type == "Sandbox.Timedout"
    assert "talking before the sleep" in timed_out.log and "Task timed out after 2.00 seconds" in timed_out.log
    assert "Status: timeout" in timed_out.log
    assert not after.function_error and after.init_ms is not None
    assert json.loads(after.payload)["pid"] != json.loads(first.payload)["pid"]


def test_launched_runtime_out_of_memory_and_exit_are_errors_then_it_restarts() -> None:
    spec = FunctionSpec("Hungry", f"{RUNTIME_HANDLERS}.allocate", REPO_ROOT, memory_mb=128, timeout_s=10)
    logged: list[str] = []
    with _launched(spec, logged) as api:
        small = api.invoke(b'{"mb": 1}')
        hungry = api.invoke(b'{"mb": 400}')
        again = api.invoke(b'{"mb": 1}')
    assert not small.function_error and not again.function_error
    assert hungry.function_error and hungry.error_type == "Runtime.OutOfMemory"
    assert json.loads(hungry.payload)["errorType"] == "Runtime.OutOfMemory"
    max_used = int(hungry.log.split("Max Memory Used: ")[1].split(" MB")[0])
    assert 128 <= max_used < 400

    spec = FunctionSpec("Exits", f"{RUNTIME_HANDLERS}.exit_now", REPO_ROOT, timeout_s=10)
    with _launched(spec, logged) as api:
        exited = api.invoke(b"{}")
        exited_again = api.invoke(b"{}")
    assert exited.error_type == exited_again.error_type == "Runtime.ExitError"
    assert "exit status 3" in json.loads(exited.payload)["errorMessage"] and "exiting\n" in exited.log


def test_launched_runtime_init_error_is_retried_on_each_invocation() -> None:
    spec = FunctionSpec("Broken", "tests.emulator.no_such_module.handler", REPO_ROOT, timeout_s=10)
    with _launched(spec, []) as api:
        first, second = api.invoke(b"{}"), api.invoke(b"{}")
    assert first.error_type == second.error_type == "Runtime.ImportModuleError"
    assert "Unable to import module" in first.log


def test_launched_runtime_has_a_private_tmp_fresh_at_each_start() -> None:
    spec = FunctionSpec("Temporary", f"{RUNTIME_HANDLERS}.temporary_files", REPO_ROOT, timeout_s=5)
    with _launched(spec, []) as api:
        first, warm = api.invoke(b"{}", request_id="first"), api.invoke(b"{}")
        api.recycle()
        fresh = api.invoke(b"{}")
    assert json.loads(first.payload)["found"] == [] and json.loads(warm.payload)["found"] == ["left-by-first"]
    assert json.loads(fresh.payload)["found"] == []
    # Read-only where user and mount namespaces work (then /tmp itself is private), as the OS allows.
    namespaces = sandbox.probe().namespaces
    assert json.loads(first.payload)["code_writable"] is not namespaces
    assert (json.loads(first.payload)["folder"] == "/tmp") is namespaces
