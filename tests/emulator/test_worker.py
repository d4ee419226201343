"""emulator/worker.py: one environment's variables, its output kept when it is killed, and its response bound."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from emulator import limits
from emulator.function_errors import RESPONSE_TOO_LARGE, RESPONSE_TOO_LARGE_MESSAGE, exit_reason
from emulator.template import FunctionSpec
from emulator.worker import EnvironmentOptions, environment
from tests.emulator.environment_harness import answer, function, invoke, report

HOST = {
    "PATH": "/usr/bin:/bin",
    "HOME": "/home/dev",
    "PYTHONPATH": "/work/dev-only",
    "TMPDIR": "/var/host-tmp",
    "VIRTUAL_ENV": "/work/.venv",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_REGION": "eu-west-1",
    "UNRELATED": "x",
}


def test_the_environment_is_lambdas_for_the_version_and_task_root(tmp_path: Path) -> None:
    spec = FunctionSpec(
        "Fn", "app.handler", tmp_path / "code", memory_mb=512, environment={"GREETING": "hi", "REGISTRY": "/var/task/registry.yaml"}
    )
    options = EnvironmentOptions(python="/opt/image-venv/bin/python", task_root=tmp_path / "task")
    variables = environment(spec, HOST, options, version="1")
    assert variables["LAMBDA_TASK_ROOT"] == variables["PYTHONPATH"] == str(tmp_path / "task")
    assert variables["PATH"] == "/opt/image-venv/bin:/usr/bin:/bin"  # the function's own python first
    assert (variables["AWS_LAMBDA_FUNCTION_VERSION"], variables["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"]) == ("1", "512")
    assert re.fullmatch(r"\d{4}/\d{2}/\d{2}/\[1\][0-9a-f]{32}", variables["AWS_LAMBDA_LOG_STREAM_NAME"])
    assert (variables["AWS_REGION"], variables["AWS_ACCESS_KEY_ID"], variables["GREETING"]) == ("eu-west-1", "testing", "hi")
    assert variables["REGISTRY"] == str(tmp_path / "task" / "registry.yaml")  # /var/task is the local task root
    assert not {"TMPDIR", "VIRTUAL_ENV", "UNRELATED", "_X_AMZN_TRACE_ID"} & set(variables)
    latest = environment(spec, HOST)  # the two-argument form: $LATEST, the spec's code folder, the emulator's python
    assert (latest["AWS_LAMBDA_FUNCTION_VERSION"], latest["LAMBDA_TASK_ROOT"]) == ("$LATEST", str(tmp_path / "code"))
    assert latest["PATH"].startswith(str(Path(sys.executable).parent) + ":")
    assert latest["AWS_LAMBDA_LOG_STREAM_NAME"] != environment(spec, HOST)["AWS_LAMBDA_LOG_STREAM_NAME"]  # one per environment


def test_a_response_over_6_mb_is_a_function_error_and_the_environment_stays() -> None:
    spec = function("respond_with", memory_mb=256, timeout_s=5.0)
    over, under = invoke(spec, {"bytes": 7 * limits.MB}, {"bytes": limits.SYNC_RESPONSE_BYTES.value - 2})
    assert over.function_error and over.error_type == RESPONSE_TOO_LARGE
    assert answer(over) == {"errorMessage": RESPONSE_TOO_LARGE_MESSAGE, "errorType": RESPONSE_TOO_LARGE}
    assert not under.function_error and len(under.payload) == limits.SYNC_RESPONSE_BYTES.value
    assert "Init Duration: " not in report(under)  # the same, warm environment


def test_what_the_function_printed_is_kept_when_it_times_out() -> None:
    (invocation,) = invoke(function("print_then_sleep", timeout_s=1.0), {"seconds": 10})
    assert answer(invocation)["errorType"] == "Sandbox.Timedout" and "Status: timeout" in report(invocation)
    printed = invocation.log.index("printed before the timeout\nand this, unterminated")
    timed_out = f"{invocation.request_id} Task timed out after 1.00 seconds"
    assert printed < invocation.log.index(timed_out)
    assert any(line.endswith(timed_out) and line[:4].isdigit() for line in invocation.log.splitlines())  # a line of its own


def test_a_runtime_that_exits_is_an_exit_error_with_its_output() -> None:
    died, again = invoke(function("exit_now"), {"status": 3}, {"status": 1})
    message = f"RequestId: {died.request_id} Error: Runtime exited with error: exit status 3"
    assert answer(died) == {"errorMessage": message, "errorType": "Runtime.ExitError"}
    assert died.error_type == "Runtime.ExitError" and "Error Type: Runtime.ExitError" in report(died)
    assert died.log.index("exiting\n") < died.log.index(message)
    assert "exit status 1" in answer(again)["errorMessage"] and "Init Duration: " in report(again)  # a new environment


def test_exit_reasons_are_worded_as_lambda_words_them() -> None:
    assert [exit_reason(code) for code in (0, 2, -9, -11, -6)] == [
        "exit status 0",
        "exit status 2",
        "signal: killed",
        "signal: segmentation fault",
        "signal: aborted",
    ]


def test_an_init_failure_keeps_its_log_and_error_type() -> None:
    spec = FunctionSpec("Missing", "tests.emulator.no_such_module.handler", function("imports").code_root)
    (invocation,) = invoke(spec, {})
    assert invocation.error_type == "Runtime.ImportModuleError"
    assert "[ERROR] Runtime.ImportModuleError: Unable to import module" in invocation.log
    assert "Status: error" in report(invocation) and "Error Type: Runtime.ImportModuleError" in report(invocation)
    assert json.loads(invocation.payload)["errorType"] == "Runtime.ImportModuleError"
