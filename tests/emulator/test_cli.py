"""``mlinfer invoke``, like ``sam local invoke``: the response on stdout, the log and REPORT on stderr (or --log-file).

Every test runs the real command line in a subprocess; mistakes are one line and exit status 2.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.emulator.conftest import TEST_TEMPLATE
from tests.handlers.lambda_events import generate

WORKFLOW = Path(__file__).resolve().parent / "templates" / "workflow.yaml"
TIMEOUT_S = 120
IMAGE_TIMEOUT_S = 900
"""A first run builds the image's dependency set (pip, from its cache); later runs take seconds."""


def _mlinfer(*arguments: str, cwd: Path = REPO_ROOT, timeout_s: float = TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "handlers.cli", *arguments]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout_s, check=False)


def _invoke(function: str, event: Path) -> subprocess.CompletedProcess[str]:
    return _mlinfer("invoke", function, "-e", str(event), "--template", str(TEST_TEMPLATE))


def test_invoke_prints_the_response_then_the_report(tmp_path: Path) -> None:
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"hello": "world"}))
    result = _invoke("Echo", event)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"hello": "world"}
    assert "START RequestId: " in result.stderr and "echo: request " in result.stderr
    report = result.stderr.strip().splitlines()[-1]
    assert report.startswith("REPORT RequestId: ") and "Init Duration: " in report and "Memory Size: 256 MB" in report


def test_invoke_of_a_failing_function_exits_1(tmp_path: Path) -> None:
    event = tmp_path / "event.json"
    event.write_text("{}")
    result = _invoke("Fail", event)
    assert result.returncode == 1
    assert json.loads(result.stdout)["errorType"] == "ValueError"


IMAGE_WITHOUT_COMMAND = """
Resources:
  Fn:
    Type: AWS::Serverless::Function
    Metadata: {DockerContext: .}
    Properties: {PackageType: Image}
"""


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["Settings", "-e", "{tmp}/missing.json"], "event file {tmp}/missing.json: no such file"),
        (["Settings", "-e", "{tmp}/bad.json"], "event file {tmp}/bad.json is not JSON: Expecting ',' delimiter at line 2, column 3"),
        (["Nope"], "no function 'Nope' in {workflow} (functions: Settings, Pid)"),
        (["Settings", "-t", "{tmp}/missing.yaml"], "template {tmp}/missing.yaml: no such file"),
        (["Settings", "-t", "{tmp}/bad.json"], "template {tmp}/bad.json is not YAML: "),
        (["Fn", "-t", "{tmp}/image.yaml"], "Fn: an image function needs ImageConfig.Command, or a CMD in {tmp}/Dockerfile"),
        (["Settings", "--parameter-overrides", "Stage"], "--parameter-overrides 'Stage' is not a parameter value"),
        (["Settings", "--parameter-overrides", "Stage=qa Nope=1"], "Parameters: [Nope] do not exist in the template"),
        (["Settings", "--parameter-overrides", "Mode=medium"], "Parameter 'Mode' must be one of AllowedValues [fast, slow], not 'medium'"),
        (["Settings", "--parameter-overrides", "ParameterKey=Stage,ParameterValue=QA"], "Parameter 'Stage' must match pattern [a-z]+"),
        (["Settings", "--config-env", "prod", "--config-file", "{tmp}/config/samconfig.toml"], "has no config environment 'prod'"),
        (["Settings", "--config-env", "staging"], "--config-env staging: there is no samconfig.toml beside the template"),
    ],
)
def test_common_mistakes_are_one_line_and_exit_2(tmp_path: Path, arguments: list[str], message: str) -> None:
    (tmp_path / "bad.json").write_text('{"a": 1\n  "b": 2}')
    (tmp_path / "image.yaml").write_text(IMAGE_WITHOUT_COMMAND)
    (tmp_path / "Dockerfile").write_text("FROM public.ecr.aws/lambda/python:3.12\n")
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "samconfig.toml").write_text("version = 0.1\n[default.local_invoke.parameters]\nenv_vars = 'x.json'\n")
    values = {"tmp": str(tmp_path), "workflow": str(WORKFLOW)}
    expanded = [argument.format(**values) for argument in arguments]
    result = _mlinfer("invoke", *expanded[:1], "-t", str(WORKFLOW), *expanded[1:])
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("mlinfer invoke: ") and message.format(**values) in result.stderr, result.stderr


def _environment(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    assert result.returncode == 0, result.stderr
    environment: dict[str, str] = json.loads(result.stdout)["environment"]
    return environment


def test_parameter_overrides_in_both_syntaxes_reach_the_function() -> None:
    overrides = [
        "--parameter-overrides",
        "Stage=qa Mode='slow'",
        "ParameterKey=Workers,ParameterValue=3 ParameterKey=Tags,ParameterValue=x,y",
    ]
    environment = _environment(_mlinfer("invoke", "Settings", "-t", str(WORKFLOW), *overrides))
    assert environment == {"STAGE": "qa", "MODE": "slow", "WORKERS": "3", "TAGS": "x,y", "RESULTS_URI": ""}


def test_log_file_gets_the_functions_log_appended(tmp_path: Path) -> None:
    log = tmp_path / "functions.log"
    for _ in range(2):
        result = _mlinfer("invoke", "Pid", "-t", str(WORKFLOW), "--log-file", str(log))
        assert result.returncode == 0 and json.loads(result.stdout)["pid"] > 0, result.stderr
        assert "START RequestId" not in result.stderr and "pid: request" not in result.stderr
    text = log.read_text()
    assert text.count("START RequestId: ") == text.count("REPORT RequestId: ") == text.count("pid: request ") == 2


def test_samconfig_beside_the_template_and_the_command_line_over_it(tmp_path: Path) -> None:
    template = tmp_path / "template.yaml"
    template.write_text(WORKFLOW.read_text().replace("CodeUri: ../../..", f"CodeUri: {REPO_ROOT}"))
    (tmp_path / "env.json").write_text(json.dumps({"Settings": {"RESULTS_URI": "s3://from-env-vars/"}}))
    (tmp_path / "samconfig.toml").write_text(
        """version = 0.1
[default.global.parameters]
stack_name = "workflow"
parameter_overrides = "Stage=global"
env_vars = "env.json"
[default.local_invoke.parameters]
parameter_overrides = ["Mode=slow", "Workers=4"]
log_file = "functions.log"
[default.local_start_api.parameters]
parameter_overrides = "Mode=fast"
[staging.local_invoke.parameters]
parameter_overrides = "Stage=staging"
"""
    )
    configured = _environment(_mlinfer("invoke", "Settings", "-t", str(template)))
    assert configured == {"STAGE": "dev", "MODE": "slow", "WORKERS": "4", "TAGS": "a,b", "RESULTS_URI": "s3://from-env-vars/"}
    assert "REPORT RequestId" in (tmp_path / "functions.log").read_text()
    explicit = _environment(_mlinfer("invoke", "Settings", "-t", str(template), "--parameter-overrides", "Workers=1", "-l", "/dev/stderr"))
    assert (explicit["MODE"], explicit["WORKERS"]) == ("fast", "1")
    staging = _environment(_mlinfer("invoke", "Settings", "-t", str(template), "--config-env", "staging"))
    assert (staging["STAGE"], staging["MODE"], staging["RESULTS_URI"]) == ("staging", "fast", "")
    # Found beside the template when run from elsewhere too; the template itself may come from the file.
    (tmp_path / "samconfig.toml").write_text('version = 0.1\n[default.local_invoke.parameters]\ntemplate_file = "template.yaml"\n')
    assert _environment(_mlinfer("invoke", "Settings", cwd=tmp_path))["STAGE"] == "dev"


def test_the_sqs_example_runs_out_of_the_box(models_dir: Path) -> None:
    """The README's command, from the checkout: samconfig.toml gives events/local-env.json, whose
    file:// BATCH_RESULTS_URI writes the results to ./batch-results/."""
    folder = REPO_ROOT / "batch-results"
    existed = folder.is_dir()
    written = [folder / "review-1.json", folder / "review-2.json"]
    for path in written:
        path.unlink(missing_ok=True)
    try:
        result = _mlinfer("invoke", "BatchFunction", "-e", "events/sqs_batch.json", timeout_s=IMAGE_TIMEOUT_S)
        assert result.returncode == 0, result.stderr[-3000:]
        assert json.loads(result.stdout) == {"batchItemFailures": []}
        first, second = (json.loads(path.read_text()) for path in written)
        assert [r["prediction"] for r in first["results"]] == ["positive", "negative"]
        assert (second["request_id"], second["model_version"]) == ("review-2", "v2")
    finally:
        for path in written:
            path.unlink(missing_ok=True)
        if not existed and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def test_the_http_function_answers_a_scheduled_event_and_refuses_other_events(tmp_path: Path, models_dir: Path) -> None:
    scheduled, queue = tmp_path / "scheduled.json", tmp_path / "sqs.json"
    scheduled.write_text(json.dumps(generate("cloudwatch", "scheduled-event")))
    queue.write_text(json.dumps(generate("sqs", "receive-message")))
    warm = _mlinfer("invoke", "InferenceFunction", "-e", str(scheduled), timeout_s=IMAGE_TIMEOUT_S)
    assert warm.returncode == 0, warm.stderr[-3000:]
    assert json.loads(warm.stdout) == {"warm": True, "function": "InferenceFunction", "source": "aws.events"}
    assert warm.stderr.count('"warm-up ping"') == 1 and '"http request"' not in warm.stderr
    refused = _mlinfer("invoke", "InferenceFunction", "-e", str(queue), timeout_s=IMAGE_TIMEOUT_S)
    error = json.loads(refused.stdout)
    assert refused.returncode == 1 and error["errorType"] == "UnsupportedEvent", refused.stdout
    assert "warm-up pings" in error["errorMessage"] and "RuntimeError" not in refused.stdout
