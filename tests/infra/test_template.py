"""template.yaml: SAM's and cfn-lint's verdicts, and what the transformed stack grants and wires."""

from __future__ import annotations

import ast
import importlib.util
import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT
from tests.infra.conftest import TEMPLATE, load_template, report, run_tool, tool

HANDLERS = {"InferenceFunction": "handlers.lambda_http.handler", "BatchFunction": "handlers.lambda_sqs.handler"}


@cache
def translated() -> dict[str, Any]:
    """The CloudFormation that SAM's transform makes of the template."""
    result = run_tool("python", str(REPO_ROOT / "tests" / "infra" / "sam_translate.py"), str(TEMPLATE))
    assert result.returncode == 0, report(result)
    resources: dict[str, Any] = json.loads(result.stdout)
    return resources


def resources_of_type(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


def test_sam_validate_lint_passes_offline_without_credentials() -> None:
    result = run_tool("sam", "validate", "--lint", "--region", "us-east-1", "--template-file", str(TEMPLATE))
    assert result.returncode == 0, report(result)
    assert "is a valid SAM Template" in result.stdout, report(result)


def test_cfn_lint_reports_nothing_not_even_informational() -> None:
    result = run_tool("cfn-lint", "--include-checks", "I", "--", str(TEMPLATE))
    assert (result.returncode, result.stdout.strip()) == (0, ""), report(result)


def handler_defined(dotted: str) -> bool:
    """``module.attr`` names a module of this repository that defines ``attr`` at top level."""
    module_name, _, attr = dotted.rpartition(".")
    spec = importlib.util.find_spec(module_name)
    assert spec is not None and spec.origin is not None, f"{module_name} is not importable"
    assert spec.origin.startswith(str(REPO_ROOT)), f"{module_name} comes from {spec.origin}, not this repository"
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == attr:
            return True
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == attr for t in node.targets):
            return True
    return False


@pytest.mark.parametrize("function", sorted(HANDLERS))
def test_image_command_is_the_real_handler(function: str) -> None:
    command = load_template()["Resources"][function]["Properties"]["ImageConfig"]["Command"]
    assert command == [HANDLERS[function]]
    assert handler_defined(command[0]), f"{command[0]} is not defined"


def test_functions_build_from_dockerfile_lambda() -> None:
    functions = resources_of_type(load_template(), "AWS::Serverless::Function")
    assert set(functions) == set(HANDLERS)
    for function in functions.values():
        assert function["Properties"]["PackageType"] == "Image"
        assert function["Metadata"]["Dockerfile"] == "Dockerfile.lambda"
        assert (REPO_ROOT / function["Metadata"]["DockerContext"] / function["Metadata"]["Dockerfile"]).is_file()


def test_globals_set_the_lambda_environment() -> None:
    template = load_template()
    function = template["Globals"]["Function"]
    assert function["Architectures"] == ["x86_64"]
    assert function["Tracing"] == "Active"
    env = function["Environment"]["Variables"]
    assert env["MODEL_REGISTRY_PATH"] == "/var/task/model_registry.yaml"
    assert env["SHADOW_MODE"] == "inline"
    assert env["ENABLE_METRICS"] == "false"
    assert env["ENABLE_TRACING"] == "true"
    assert env["CACHE_BACKEND"] == {"Fn::If": ["HasRedis", "redis", "memory"]}
    for name in ("POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE", "POWERTOOLS_LOG_LEVEL", "POWERTOOLS_TRACE_DISABLED"):
        assert name in env
    assert set(template["Conditions"]) >= {"HasRedis", "HasVpc", "HasProvisionedConcurrency", "HasAuthParameter"}


def test_sam_makes_no_roles_of_its_own() -> None:
    """SAM's generated roles would add AWSLambdaSQSQueueExecutionRole (every queue) and the VPC policy (always)."""
    stack = translated()
    roles = resources_of_type(stack, "AWS::IAM::Role")
    assert set(roles) == {"InferenceFunctionRole", "BatchFunctionRole"}
    for name, role in roles.items():
        managed = role["Properties"].get("ManagedPolicyArns", [])
        assert all(arn.get("Fn::If", [None])[0] == "HasVpc" for arn in managed), f"{name}: unconditional managed policy {managed}"
    for function in resources_of_type(stack, "AWS::Lambda::Function").values():
        assert function["Properties"]["Role"]["Fn::GetAtt"][0] in roles


def statements(role: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for policy in role["Properties"]["Policies"]:
        if "Fn::If" in policy:
            policy = policy["Fn::If"][1]
        found.extend(policy["PolicyDocument"]["Statement"])
    return found


def test_wildcard_resources_only_for_xray() -> None:
    for name, role in resources_of_type(translated(), "AWS::IAM::Role").items():
        for statement in statements(role):
            if statement["Resource"] == "*":
                assert set(statement["Action"]) <= {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}, f"{name}: {statement}"


def test_token_permissions_only_with_a_token_parameter() -> None:
    role = translated()["Resources"]["InferenceFunctionRole"]
    conditional = {p["Fn::If"][0]: p["Fn::If"][1] for p in role["Properties"]["Policies"] if "Fn::If" in p}
    assert set(conditional) == {"UseSsmToken", "UseSecretToken"}
    ssm = conditional["UseSsmToken"]["PolicyDocument"]["Statement"]
    secret = conditional["UseSecretToken"]["PolicyDocument"]["Statement"]
    assert [s["Action"] for s in ssm] == ["ssm:GetParameter"]
    assert [s["Action"] for s in secret] == ["secretsmanager:GetSecretValue"]
    assert "${AuthTokenParameterName}" in secret[0]["Resource"]["Fn::Sub"]
    batch_actions = {a for s in statements(translated()["Resources"]["BatchFunctionRole"]) for a in s["Action"]}
    assert not any(a.startswith(("ssm:", "secretsmanager:")) for a in batch_actions)


def test_batch_role_reaches_only_its_queue_and_results_prefix() -> None:
    by_service: dict[str, list[Any]] = {}
    for statement in statements(translated()["Resources"]["BatchFunctionRole"]):
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        for action in actions:
            by_service.setdefault(action.split(":")[0], []).append(statement["Resource"])
    assert by_service["sqs"] == [{"Fn::GetAtt": ["BatchQueue", "Arn"]}] * 4
    assert by_service["s3"] == [{"Fn::Sub": "${ResultsBucket.Arn}/results/*"}]


def test_sqs_event_reports_partial_failures_and_queue_outlives_retries() -> None:
    stack = translated()["Resources"]
    mapping = stack["BatchFunctionQueue"]["Properties"]
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["EventSourceArn"] == {"Fn::GetAtt": ["BatchQueue", "Arn"]}
    queue = stack["BatchQueue"]["Properties"]
    assert queue["VisibilityTimeout"] >= 6 * stack["BatchFunction"]["Properties"]["Timeout"]
    assert queue["RedrivePolicy"] == {"deadLetterTargetArn": {"Fn::GetAtt": ["BatchDeadLetterQueue", "Arn"]}, "maxReceiveCount": 3}
    batch_env = stack["BatchFunction"]["Properties"]["Environment"]["Variables"]
    assert batch_env["BATCH_RESULTS_URI"] == {"Fn::Sub": "s3://${ResultsBucket}/results/"}


def test_results_bucket_is_private_and_encrypted() -> None:
    bucket = translated()["Resources"]["ResultsBucket"]["Properties"]
    assert all(bucket["PublicAccessBlockConfiguration"].values()) and len(bucket["PublicAccessBlockConfiguration"]) == 4
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]["SSEAlgorithm"]


def test_http_api_routes_everything_to_the_live_alias() -> None:
    stack = translated()["Resources"]
    paths = stack["ServerlessHttpApi"]["Properties"]["Body"]["paths"]
    assert set(paths) == {"/", "/{proxy+}"}
    for route in paths.values():
        uri = route["x-amazon-apigateway-any-method"]["x-amazon-apigateway-integration"]["uri"]["Fn::Sub"]
        assert "${InferenceFunctionAliaslive}" in uri
    assert route["x-amazon-apigateway-any-method"]["x-amazon-apigateway-integration"]["payloadFormatVersion"] == "2.0"


def test_provisioned_concurrency_is_optional() -> None:
    alias = translated()["Resources"]["InferenceFunctionAliaslive"]["Properties"]
    condition, config, otherwise = alias["ProvisionedConcurrencyConfig"]["Fn::If"]
    assert (condition, otherwise) == ("HasProvisionedConcurrency", {"Ref": "AWS::NoValue"})
    assert config == {"ProvisionedConcurrentExecutions": {"Ref": "ProvisionedConcurrency"}}


def test_vpc_only_with_subnets() -> None:
    for function in resources_of_type(translated(), "AWS::Lambda::Function").values():
        assert function["Properties"]["VpcConfig"]["Fn::If"][0] == "HasVpc"


def test_outputs_name_the_api_url() -> None:
    outputs = load_template()["Outputs"]
    assert outputs["ApiUrl"]["Value"] == {"Fn::Sub": "https://${ServerlessHttpApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}/"}
    assert {"BatchQueueUrl", "ResultsBucketName"} <= set(outputs)


def test_tools_venv_has_the_pinned_versions() -> None:
    pins = dict(
        line.split("==")
        for line in (REPO_ROOT / "infra" / "tools-requirements.txt").read_text().splitlines()
        if line and not line.startswith("#")
    )
    result = run_tool("python", "-m", "pip", "list", "--format", "json", "--disable-pip-version-check")
    installed = {p["name"].lower(): p["version"] for p in json.loads(result.stdout)}
    assert {name: installed.get(name) for name in pins} == pins, "run `make tools`"
    assert tool("hadolint").is_file()


def test_the_functions_run_in_production_and_never_with_the_default_token() -> None:
    template = load_template()
    assert template["Globals"]["Function"]["Environment"]["Variables"]["ENVIRONMENT"] == "production"
    env = template["Resources"]["InferenceFunction"]["Properties"]["Environment"]["Variables"]
    assert env["AUTH_TOKEN"] == {"Fn::If": ["HasAuthToken", {"Ref": "AuthToken"}, {"Ref": "AWS::NoValue"}]}
    assert env["AUTH_TOKENS"] == {"Fn::If": ["HasPreviousAuthTokens", {"Ref": "PreviousAuthTokens"}, {"Ref": "AWS::NoValue"}]}
    for name in ("AuthToken", "PreviousAuthTokens"):
        assert template["Parameters"][name]["NoEcho"] is True and template["Parameters"][name]["Default"] == ""
    assertions = [a["Assert"] for a in template["Rules"]["TokenConfigured"]["Assertions"]]
    # Some token must be given, and AuthToken must not be the development default.
    assert {"Fn::Not": [{"Fn::Equals": [{"Ref": "AuthToken"}, "secret-token"]}]} in assertions
    assert any("Fn::Or" in a for a in assertions)
    assert "secret-token" not in json.dumps(template["Globals"]) + json.dumps(template["Resources"])
