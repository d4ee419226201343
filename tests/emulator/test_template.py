"""Reading functions from SAM templates: the repository's own, and small ones written here."""

from __future__ import annotations

import json
from pathlib import Path

from emulator.template import HttpRoute, load_functions
from tests.conftest import REPO_ROOT

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
        "REGISTRY": f"{tmp_path / 'src'}/registry.yaml",
        "URL": "https://dev.example.com/us-east-1",
        "BUCKET": "",
        "DEBUG": "false",
    }
    assert api.routes == (HttpRoute("/{proxy+}", "ANY", "2.0"), HttpRoute("/v1/items", "GET", "1.0"), HttpRoute("/{proxy+}", "ANY", "2.0"))
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
    assert inference.environment["MODEL_REGISTRY_PATH"] == str(REPO_ROOT / "model_registry.yaml")
    assert inference.environment["CACHE_BACKEND"] == "memory" and "REDIS_HOST" not in inference.environment
    assert {route.path for route in inference.routes} == {"/{proxy+}", "/"}
