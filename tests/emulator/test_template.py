"""Reading functions from SAM templates: the repository's own, and small ones written here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emulator import limits
from emulator.intrinsics import ParameterError
from emulator.template import EnvVarsError, HttpRoute, TemplateError, load_functions
from tests.conftest import REPO_ROOT

WORKFLOW = Path(__file__).resolve().parent / "templates" / "workflow.yaml"

TEMPLATE = """
Parameters:
  Stage: {Type: String, Default: dev}
  Endpoint: {Type: String, Default: ""}
  Subnets: {Type: CommaDelimitedList, Default: ""}
Conditions:
  HasEndpoint: !Not [!Equals [!Ref Endpoint, ""]]
  HasSubnets: !Not [!Equals [!Join ["", !Ref Subnets], ""]]
Globals:
  Function:
    MemorySize: 512
    Timeout: 10
    Environment:
      Variables:
        STAGE: !Ref Stage
        BACKEND: !If [HasEndpoint, redis, memory]
        HOST: !If [HasEndpoint, !Ref Endpoint, !Ref AWS::NoValue]
        REGISTRY: /var/task/registry.yaml
Resources:
  Api:
    Type: AWS::Serverless::Function
    Metadata: {DockerContext: ./src}
    Properties:
      PackageType: Image
      ImageConfig: {Command: ["app.handler"]}
      Timeout: 30
      Environment:
        Variables:
          URL: !Sub "https://${Stage}.example.com/${AWS::Region}"
          BUCKET: !GetAtt Bucket.Arn
          DEBUG: false
      Events:
        Proxy: {Type: HttpApi, Properties: {Path: "/{proxy+}", Method: ANY}}
        Legacy: {Type: Api, Properties: {Path: /v1/items, Method: get}}
        Default: {Type: HttpApi}
  Worker:
    Type: AWS::Serverless::Function
    Properties:
      Handler: worker.main
      CodeUri: lib/
      Events:
        Queue: {Type: SQS, Properties: {Queue: !GetAtt Q.Arn}}
  Bucket:
    Type: AWS::S3::Bucket
"""


def test_small_template(tmp_path: Path) -> None:
    (tmp_path / "template.yaml").write_text(TEMPLATE)
    (tmp_path / "env.json").write_text(json.dumps({"Parameters": {"STAGE": "local"}, "Worker": {"DEBUG": "1", "UNDECLARED": "x"}}))
    functions = load_functions(tmp_path / "template.yaml", tmp_path / "env.json")
    api, worker = functions["Api"], functions["Worker"]
    assert (api.handler, api.memory_mb, api.timeout_s, api.code_root) == ("app.handler", 512, 30.0, tmp_path / "src")
    assert api.environment == {
        "STAGE": "local",
        "BACKEND": "memory",
        "REGISTRY": "/var/task/registry.yaml",  # the task root's, as the image has it (the worker maps it)
        "URL": "https://dev.example.com/us-east-1",
        "BUCKET": "",
        "DEBUG": "false",
    }
    assert api.routes == (
        HttpRoute("/{proxy+}", "ANY", "2.0", "$default"),
        HttpRoute("/v1/items", "GET", "1.0", "Prod"),
        HttpRoute("/{proxy+}", "ANY", "2.0", "$default"),
    )
    assert (worker.handler, worker.timeout_s, worker.code_root, worker.routes) == ("worker.main", 10.0, tmp_path / "lib", ())
    assert "DEBUG" not in worker.environment and "UNDECLARED" not in worker.environment


def test_parameter_overrides_drive_conditions(tmp_path: Path) -> None:
    (tmp_path / "template.yaml").write_text(TEMPLATE)
    api = load_functions(tmp_path / "template.yaml", parameter_overrides={"Endpoint": "cache.local"})["Api"]
    assert (api.environment["BACKEND"], api.environment["HOST"]) == ("redis", "cache.local")


def test_the_repository_template() -> None:
    functions = load_functions(REPO_ROOT / "template.yaml")
    inference, batch = functions["InferenceFunction"], functions["BatchFunction"]
    assert inference.handler == "handlers.lambda_http.handler" and batch.handler == "handlers.lambda_sqs.handler"
    assert (inference.memory_mb, inference.timeout_s, batch.timeout_s) == (2048, 30.0, 120.0)
    assert inference.code_root == REPO_ROOT
    assert inference.environment["MODEL_REGISTRY_PATH"] == "/var/task/model_registry.yaml"
    assert inference.environment["CACHE_BACKEND"] == "memory" and "REDIS_HOST" not in inference.environment
    assert {route.path for route in inference.routes} == {"/{proxy+}", "/"}
    assert (inference.alias, batch.alias, inference.published_version) == ("live", None, "1")
    assert inference.dockerfile == batch.dockerfile == REPO_ROOT / "Dockerfile.lambda"
    assert inference.ephemeral_storage_mb == limits.TMP_DEFAULT_MB.value


def test_alias_storage_and_the_stage_of_each_api() -> None:
    functions = load_functions(WORKFLOW, parameter_overrides={"Stage": "qa"})
    settings, pid = functions["Settings"], functions["Pid"]
    assert (settings.alias, settings.executed_version("qa"), settings.executed_version("dev")) == ("qa", "1", None)
    assert (settings.ephemeral_storage_mb, pid.ephemeral_storage_mb) == (1024, limits.TMP_DEFAULT_MB.value)
    assert (pid.alias, pid.dockerfile, pid.runtime) == (None, None, None)
    stages = {route.path: (route.payload_version, route.stage) for route in settings.routes}
    assert stages == {
        "/settings": ("1.0", "qa"),  # the StageName of the AWS::Serverless::Api the event names
        "/implicit": ("1.0", "Prod"),  # SAM's implicit REST API
        "/http-settings": ("2.0", "$default"),
        "/staged": ("2.0", "beta"),  # an AWS::Serverless::HttpApi's StageName
    }
    assert settings.environment == {"STAGE": "qa", "MODE": "fast", "WORKERS": "2", "TAGS": "a,b", "RESULTS_URI": ""}


def test_an_override_cloudformation_would_refuse() -> None:
    with pytest.raises(ParameterError, match="Parameter 'Workers' must be a number not greater than 4, not 5"):
        load_functions(WORKFLOW, parameter_overrides={"Workers": "5"})


DOCKER_TEMPLATE = """
Resources:
  Fn:
    Type: AWS::Serverless::Function
    Metadata: {DockerContext: ., Dockerfile: lambda.Dockerfile}
    Properties:
      PackageType: Image
"""


def test_an_image_function_without_command_runs_the_dockerfiles_cmd(tmp_path: Path) -> None:
    (tmp_path / "template.yaml").write_text(DOCKER_TEMPLATE)
    (tmp_path / "lambda.Dockerfile").write_text('FROM public.ecr.aws/lambda/python:3.12 AS base\nCMD ["app.handler"]\nFROM base\n')
    function = load_functions(tmp_path / "template.yaml")["Fn"]
    assert (function.handler, function.dockerfile) == ("app.handler", tmp_path / "lambda.Dockerfile")


def test_an_image_function_with_neither_command_nor_cmd(tmp_path: Path) -> None:
    (tmp_path / "template.yaml").write_text(DOCKER_TEMPLATE)
    (tmp_path / "lambda.Dockerfile").write_text("FROM public.ecr.aws/lambda/python:3.12\n")
    with pytest.raises(TemplateError, match="Fn: an image function needs ImageConfig.Command, or a CMD in .*lambda.Dockerfile"):
        load_functions(tmp_path / "template.yaml")
    (tmp_path / "lambda.Dockerfile").unlink()
    with pytest.raises(TemplateError, match="needs ImageConfig.Command"):
        load_functions(tmp_path / "template.yaml")


def test_a_zip_function_without_handler(tmp_path: Path) -> None:
    zip_function = "Resources:\n  Fn:\n    Type: AWS::Serverless::Function\n    Properties: {Runtime: python3.12}\n"
    (tmp_path / "template.yaml").write_text(zip_function)
    with pytest.raises(TemplateError, match="Fn: no Handler"):
        load_functions(tmp_path / "template.yaml")


def test_unreadable_inputs_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="no such file"):
        load_functions(tmp_path / "missing.yaml")
    (tmp_path / "template.yaml").write_text("Resources:\n  Fn: [unclosed\n")
    with pytest.raises(TemplateError, match="is not YAML: .* at line 3, column 1") as raised:
        load_functions(tmp_path / "template.yaml")
    assert "\n" not in str(raised.value)
    (tmp_path / "template.yaml").write_text("- a list\n")
    with pytest.raises(TemplateError, match="is not a SAM template"):
        load_functions(tmp_path / "template.yaml")
    (tmp_path / "env.json").write_text('{"Fn": {"A": 1},}')
    with pytest.raises(EnvVarsError, match="is not JSON: .* at line 1, column 17"):
        load_functions(WORKFLOW, tmp_path / "env.json")
    (tmp_path / "env.json").write_text('{"Fn": "not a mapping"}')
    with pytest.raises(EnvVarsError, match="expected"):
        load_functions(WORKFLOW, tmp_path / "env.json")


def test_a_relative_file_uri_is_relative_to_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "env.json").write_text(json.dumps({"Settings": {"RESULTS_URI": "file://./out/"}, "Pid": {"RESULTS_URI": "file:///abs/"}}))
    functions = load_functions(WORKFLOW, tmp_path / "env.json")
    assert functions["Settings"].environment["RESULTS_URI"] == f"file://{tmp_path.resolve()}/out/"
    assert functions["Pid"].environment["RESULTS_URI"] == "file:///abs/"
