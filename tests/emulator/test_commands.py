"""``mlinfer emulate`` and ``invoke``'s options: the command line over samconfig.toml over the defaults, and
a real emulator driven by a samconfig.toml (ports, parameters, log file, EAGER warm-up) whose code reloads."""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from emulator import commands
from emulator.template import load_functions
from emulator.worker import EnvironmentOptions
from handlers.cli import parser
from tests.emulator.conftest import STARTUP_TIMEOUT_S, Emulator
from tests.network import free_port, stop_server, wait_until_ready

WORKFLOW = Path(__file__).resolve().parent / "templates" / "workflow.yaml"
RELOAD_TIMEOUT_S = 20.0


def _emulate_options(*argv: str) -> argparse.Namespace:
    return commands.resolve(parser().parse_args(["emulate", *argv]), commands.EMULATE_OPTIONS, commands.EMULATE_SECTIONS)


def test_defaults_without_a_samconfig(tmp_path: Path) -> None:
    options = _emulate_options("-t", str(tmp_path / "template.yaml"))
    config = commands.emulator_config(options, {})
    assert (config.host, config.port, config.lambda_port, config.warm_containers, config.reload) == ("127.0.0.1", 3000, 3001, "LAZY", True)
    assert (options.parameter_overrides, options.env_vars, options.log_file, options.use_dev_env, options.no_memory_limit) == (
        (),
        None,
        None,
        False,
        False,
    )
    assert config.event_retry_delays_s == (60.0, 120.0) and config.shutdown_timeout_s == 5.0


def test_the_command_line_over_samconfig_over_the_defaults(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    template = tmp_path / "template.yaml"
    (tmp_path / "samconfig.toml").write_text(
        """version = 0.1
[default.global.parameters]
stack_name = "app"
warm_containers = "eager"
[default.local_start_lambda.parameters]
port = 4001
host = "127.0.0.2"
[default.local_start_api.parameters]
port = 4000
no_watch = true
env_vars = "env/local.json"
debug_port = 5858
"""
    )
    with caplog.at_level(logging.WARNING, logger="emulator.commands"):
        options = _emulate_options("-t", str(template))
    config = commands.emulator_config(options, {})
    assert (config.host, config.port, config.lambda_port, config.warm_containers, config.reload) == (
        "127.0.0.2",
        4000,
        4001,
        "EAGER",
        False,
    )
    assert options.env_vars == tmp_path / "env" / "local.json"
    assert "debug_port: not options of mlinfer, ignored" in caplog.text and "stack_name" not in caplog.text
    explicit = _emulate_options("-t", str(template), "--port", "5000", "--warm-containers", "lazy", "--env-vars", "other.json")
    config = commands.emulator_config(explicit, {})
    assert (config.port, config.lambda_port, config.warm_containers, explicit.env_vars) == (5000, 4001, "LAZY", Path("other.json"))


def test_the_emulators_own_flags(tmp_path: Path) -> None:
    options = _emulate_options(
        *("-t", str(tmp_path / "t.yaml"), "--no-reload", "--event-retry-delays", "0.5,1", "--shutdown-timeout", "2"),
        *("--runtime-api-port", "9001", "--runtime-api-function", "Pid", "--runtime-api-launch", "--no-memory-limit", "--use-dev-env"),
    )
    functions = load_functions(WORKFLOW)
    config = commands.emulator_config(options, functions)
    assert (config.reload, config.event_retry_delays_s, config.shutdown_timeout_s) == (False, (0.5, 1.0), 2.0)
    assert (config.runtime_api_port, config.runtime_api_function, config.runtime_api_launch) == (9001, "Pid", True)
    chosen = commands.environments(functions, dev_env=options.use_dev_env, memory_limit=not options.no_memory_limit)
    assert chosen == {"Settings": EnvironmentOptions(memory_limit=False), "Pid": EnvironmentOptions(memory_limit=False)}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--event-retry-delays", "60,soon"], "--event-retry-delays '60,soon': write the seconds before each retry"),
        (["--event-retry-delays", "-1"], "a delay cannot be negative"),
        (["--runtime-api-port", "9001", "--runtime-api-function", "Nope"], "--runtime-api-function 'Nope' is not a function"),
        (["--runtime-api-launch"], "need --runtime-api-port"),
    ],
)
def test_wrong_emulator_flags(argv: list[str], message: str) -> None:
    with pytest.raises(commands.CommandError, match=message.replace("(", "\\(")):
        commands.emulator_config(_emulate_options("-t", str(WORKFLOW), *argv), load_functions(WORKFLOW))


def test_each_function_runs_in_its_images_environment_built_once_per_code_folder() -> None:
    chosen = commands.environments(load_functions(WORKFLOW), dev_env=False, memory_limit=True)
    settings, pid = chosen["Settings"], chosen["Pid"]
    assert settings == pid and settings.memory_limit
    assert settings.python != sys.executable and Path(settings.python).is_file()  # the Zip function's own venv, not the dev venv
    assert settings.task_root == load_functions(WORKFLOW)["Settings"].code_root


APP = """import os

VERSION = {version}


def handler(event, context):
    stage = (event.get("requestContext") or {{}}).get("stage")
    print(f"app: version {{VERSION}} in process {{os.getpid()}}")
    body = {{"version": VERSION, "pid": os.getpid(), "stage": stage, "mode": os.environ["MODE"]}}
    return {{"statusCode": 200, "body": __import__("json").dumps(body)}} if stage else body
"""

TEMPLATE = """Transform: AWS::Serverless-2016-10-31
Parameters:
  Stage: {Type: String, Default: dev, AllowedPattern: "[a-z]+"}
  Mode: {Type: String, Default: fast, AllowedValues: [fast, slow]}
Globals:
  Function:
    CodeUri: code/
    Timeout: 3
    MemorySize: 128
    Environment: {Variables: {MODE: !Ref Mode}}
Resources:
  App:
    Type: AWS::Serverless::Function
    Properties:
      Handler: app.handler
      Events:
        Rest: {Type: Api, Properties: {Path: /app, Method: get, RestApiId: !Ref Api}}
  Api:
    Type: AWS::Serverless::Api
    Properties: {StageName: !Ref Stage}
"""


@dataclass(frozen=True)
class Configured:
    emulator: Emulator
    code: Path
    function_log: Path


@pytest.fixture(scope="module")
def configured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Configured]:
    """``mlinfer emulate`` with no flag but the template: everything else from samconfig.toml beside it."""
    folder = tmp_path_factory.mktemp("configured")
    (folder / "code").mkdir()
    (folder / "code" / "app.py").write_text(APP.format(version=1))
    (folder / "template.yaml").write_text(TEMPLATE)
    port, lambda_port = free_port(), free_port()
    (folder / "samconfig.toml").write_text(
        f"""version = 0.1
[default.global.parameters]
parameter_overrides = "Stage=api Mode=slow"
[default.local_start_api.parameters]
port = {port}
warm_containers = "EAGER"
log_file = "functions.log"
[default.local_start_lambda.parameters]
port = {lambda_port}
"""
    )
    log_path = folder / "emulator.log"
    command = [sys.executable, "-m", "handlers.cli", "emulate", "--template", str(folder / "template.yaml")]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=folder, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT)
    emulator = Emulator(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{lambda_port}", "", log_path)
    try:
        wait_until_ready(process, f"{emulator.lambda_url}/2015-03-31/functions/", log_path, what="emulator", timeout_s=STARTUP_TIMEOUT_S)
        yield Configured(emulator, folder / "code", folder / "functions.log")
    finally:
        stop_server(process)


def _invoke(emulator: Emulator) -> tuple[dict[str, Any], str]:
    response = emulator.client().invoke(FunctionName="App", Payload=b"{}", LogType="Tail")
    assert "FunctionError" not in response, response
    return json.loads(response["Payload"].read()), base64.b64decode(response["LogResult"]).decode()


def test_eager_warm_up_parameters_ports_and_log_file_from_samconfig(configured: Configured) -> None:
    answer, log = _invoke(configured.emulator)
    assert (answer["version"], answer["mode"]) == (1, "slow")
    assert "Init Duration" not in log  # EAGER: the environment started with the emulator
    assert f"app: version 1 in process {answer['pid']}" in configured.function_log.read_text()
    assert "app: version 1" not in configured.emulator.log_path.read_text()  # the functions' log went to log_file only
    with httpx.Client(timeout=30.0) as http:
        response = http.get(f"{configured.emulator.http_url}/app")
    assert response.status_code == 200 and response.json()["stage"] == "api", response.text  # the Api's StageName


def test_a_source_change_replaces_the_warm_environment(configured: Configured) -> None:
    before, _ = _invoke(configured.emulator)
    deadline = time.monotonic() + RELOAD_TIMEOUT_S
    line = "app.py changed: App environments replaced"
    while line not in configured.emulator.log_path.read_text():
        assert time.monotonic() < deadline, configured.emulator.log_path.read_text()[-3000:]
        (configured.code / "app.py").write_text(APP.format(version=2))  # again, in case the watcher was not watching yet
        time.sleep(1.0)
    after, log = _invoke(configured.emulator)
    assert (after["version"], "Init Duration" in log) == (2, True) and after["pid"] != before["pid"]
