"""``mlinfer emulate`` as a process: how it stops, how it runs a Runtime API function's runtime,
and EAGER warm-up; with the real awslambdaric and boto3."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.emulator.conftest import Emulator, start_emulator
from tests.handlers.conftest import stop_server

TEMPLATE = Path(__file__).resolve().parent / "templates" / "runtime.yaml"
SHUTDOWN_TIMEOUT_S = 5.0
"""``EmulatorConfig.shutdown_timeout_s``, the default."""
WAIT_S = 30.0
TEMPLATE_VARIABLES = ["ENABLE_METRICS", "POWERTOOLS_SERVICE_NAME", "SHADOW_MODE"]
LAMBDA_VARIABLES = ["AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_LAMBDA_RUNTIME_API", "_HANDLER"]
HOST_ONLY = "MLINFER_TEST_HOST_ONLY"


def _alive(pid: int) -> bool:
    """Whether the process runs (a zombie, never reaped in a container without init, counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _environment_processes(function: str, root: int) -> list[int]:
    """The processes below ``root`` that run as ``function`` (its environments), from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            except OSError:
                continue
    below, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier and pid not in below}
        below |= frontier
    marker = f"AWS_LAMBDA_FUNCTION_NAME={function}".encode()
    return [pid for pid in below if _alive(pid) and marker in _environ(pid).split(b"\0")]


def _environ(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return b""


def _wait_for_one(function: str, root: int, log: Path) -> int:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        found = _environment_processes(function, root)
        if found:
            return found[0]
        time.sleep(0.05)
    pytest.fail(f"no environment of {function} within {WAIT_S} s:\n{log.read_text()}")


def _logged_command(log: Path, function: str) -> str:
    """The command the emulator logs for starting an external runtime with the function's environment."""
    pattern = re.compile(rf"^Start the runtime of {function} with its environment: (.+)$", re.MULTILINE)
    found = pattern.search(log.read_text())
    assert found is not None, log.read_text()
    return found.group(1)


def _start_shell(command: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as output:
        return subprocess.Popen(command, shell=True, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def _environment(emulator: Emulator, **invoke: Any) -> dict[str, Any]:
    response = emulator.client().invoke(
        FunctionName="RuntimeEnv", Payload=json.dumps({"names": [*TEMPLATE_VARIABLES, *LAMBDA_VARIABLES, HOST_ONLY]}), **invoke
    )
    assert "FunctionError" not in response, response["Payload"].read()
    answer: dict[str, Any] = json.loads(response["Payload"].read())
    answer["log"] = base64.b64decode(response["LogResult"]).decode() if "LogResult" in response else ""
    return answer


def _assert_function_environment(answer: dict[str, Any], emulator: Emulator) -> None:
    values = answer["values"]
    assert values["ENABLE_METRICS"] == "false" and values["POWERTOOLS_SERVICE_NAME"] == "runtime-tests"
    assert values["SHADOW_MODE"] == "off"
    assert values["AWS_LAMBDA_FUNCTION_NAME"] == "RuntimeEnv" and values["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"
    assert values["AWS_LAMBDA_RUNTIME_API"] == emulator.runtime_api
    assert values["_HANDLER"] == "tests.emulator.handlers_runtime.environment"
    assert values[HOST_ONLY] is None  # the host's own variables are not the function's


@pytest.fixture
def host_only_variable(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv(HOST_ONLY, "leaked")
    yield


def _sleep_in_background(emulator: Emulator) -> threading.Thread:
    """A long invocation of Sleep, in progress when the test goes on; its answer is not awaited."""

    def invoke() -> None:
        try:
            emulator.client().invoke(FunctionName="Sleep", Payload=json.dumps({"seconds": 25}))
        except Exception:  # the emulator stops under it: the connection closes unanswered
            pass

    thread = threading.Thread(target=invoke, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stops_within_the_bound_with_a_runtime_polling_and_an_invocation_running(
    stop: signal.Signals, tmp_path: Path, host_only_variable: None
) -> None:
    process, emulator = start_emulator(tmp_path / "emulator.log", TEMPLATE, "--no-reload", runtime_api_function="RuntimeEnv")
    runtime: subprocess.Popen[bytes] | None = None
    try:
        # The external runtime, started with the command the emulator logged: the function's environment.
        runtime = _start_shell(_logged_command(emulator.log_path, "RuntimeEnv"), tmp_path / "runtime.log")
        _assert_function_environment(_environment(emulator), emulator)  # then it polls /next again
        invocation = _sleep_in_background(emulator)
        sleeping = _wait_for_one("Sleep", process.pid, emulator.log_path)

        process.send_signal(stop)
        sent = time.monotonic()
        code = process.wait(timeout=SHUTDOWN_TIMEOUT_S + 10)
        elapsed = time.monotonic() - sent
        assert elapsed < SHUTDOWN_TIMEOUT_S, f"stopped after {elapsed:.1f} s:\n{emulator.log_path.read_text()}"
        assert code == 0, emulator.log_path.read_text()
        assert not _alive(sleeping), "the running environment outlived the emulator"
        invocation.join(timeout=10)
        # Its poll ended with the emulator: the runtime exits rather than wait forever.
        assert runtime.wait(timeout=10) != 0
        assert not Path(f"/tmp/mlinfer-RuntimeEnv-{emulator.runtime_api.rsplit(':', 1)[1]}.env").exists()
    finally:
        if runtime is not None:
            _stop_group(runtime)
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def test_launched_runtime_with_eager_warm_up(tmp_path: Path, host_only_variable: None) -> None:
    extra = ("--no-reload", "--runtime-api-launch", "--warm-containers", "EAGER")
    process, emulator = start_emulator(tmp_path / "emulator.log", TEMPLATE, *extra, runtime_api_function="RuntimeEnv")
    try:
        first = _environment(emulator, LogType="Tail")
        _assert_function_environment(first, emulator)
        # Warmed before the emulator said it was ready: no invocation pays for an init.
        assert "REPORT RequestId:" in first["log"] and "Init Duration" not in first["log"]
        sleep = emulator.client().invoke(FunctionName="Sleep", Payload=json.dumps({"seconds": 0}), LogType="Tail")
        assert "Init Duration" not in base64.b64decode(sleep["LogResult"]).decode()
    finally:
        stop_server(process)
    assert process.returncode == 0, emulator.log_path.read_text()
    assert not _alive(first["pid"]), "the launched runtime outlived the emulator"
