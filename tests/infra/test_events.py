"""events/*.json (for `sam local invoke -e`): valid, the right shape, and shaped like SAM's own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT
from tests.infra.conftest import EVENTS_DIR, report, run_tool

PREDICT_BODY = {"id": "1", "texts": ["I love this product"], "model_version": "v1"}
LOCAL_ENV = EVENTS_DIR / "local-env.json"  # --env-vars of `make emulate` and the README's invoke commands


def event(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((EVENTS_DIR / name).read_text())
    return loaded


@cache
def generated(service: str, kind: str) -> dict[str, Any]:
    result = run_tool("sam", "local", "generate-event", service, kind)
    assert result.returncode == 0, report(result)
    loaded: dict[str, Any] = json.loads(result.stdout)
    return loaded


def test_every_event_file_is_json_object() -> None:
    names = sorted(p.name for p in EVENTS_DIR.glob("*.json") if p.name != LOCAL_ENV.name)
    assert names == ["http_api_predict.json", "rest_api_predict.json", "sqs_batch.json"]
    for name in names:
        assert isinstance(event(name), dict), name


def test_http_api_event_is_payload_2_predict() -> None:
    http = event("http_api_predict.json")
    assert http["version"] == "2.0"
    assert http["requestContext"]["http"]["method"] == "POST"
    assert http["rawPath"] == http["requestContext"]["http"]["path"] == "/api/v1/predict"
    headers = {k.lower(): v for k, v in http["headers"].items()}
    assert headers["x-token"] and "content-type" not in headers
    assert http["isBase64Encoded"] is False and json.loads(http["body"]) == PREDICT_BODY


def test_rest_api_event_is_payload_1_predict_with_a_stage() -> None:
    rest = event("rest_api_predict.json")
    assert (rest["httpMethod"], rest["path"]) == ("POST", "/api/v1/predict")
    assert rest["requestContext"]["stage"] == "prod"
    assert rest["requestContext"]["path"] == "/prod/api/v1/predict"
    assert rest["headers"]["X-Token"] and "Content-Type" not in rest["headers"]
    assert rest["isBase64Encoded"] is False and json.loads(rest["body"]) == PREDICT_BODY


def test_sqs_event_holds_batch_requests() -> None:
    records = event("sqs_batch.json")["Records"]
    assert len(records) == 2
    for record in records:
        assert record["eventSource"] == "aws:sqs"
        body = json.loads(record["body"])
        assert isinstance(body["id"], str) and body["texts"] and all(isinstance(t, str) for t in body["texts"])
        assert set(body) <= {"id", "texts", "model", "model_version"}
    assert len({r["messageId"] for r in records}) == 2


def test_http_api_event_matches_sam_generate_event() -> None:
    """Keys API Gateway leaves out when empty (cookies, query string, stage variables, authorizer) may be absent."""
    ours, sams = event("http_api_predict.json"), generated("apigateway", "http-api-proxy")
    assert set(ours) <= set(sams)
    assert set(sams) - set(ours) <= {"cookies", "queryStringParameters", "stageVariables"}
    assert set(ours["requestContext"]) <= set(sams["requestContext"])
    assert set(sams["requestContext"]) - set(ours["requestContext"]) <= {"authentication", "authorizer"}
    assert set(ours["requestContext"]["http"]) == set(sams["requestContext"]["http"])


def test_rest_api_event_matches_sam_generate_event() -> None:
    ours, sams = event("rest_api_predict.json"), generated("apigateway", "aws-proxy")
    assert set(ours) == set(sams)
    assert set(ours["requestContext"]) == set(sams["requestContext"])
    assert set(ours["requestContext"]["identity"]) == set(sams["requestContext"]["identity"])


@pytest.mark.parametrize("index", [0, 1])
def test_sqs_event_matches_sam_generate_event(index: int) -> None:
    ours, sams = event("sqs_batch.json"), generated("sqs", "receive-message")
    assert set(ours) == set(sams)
    record, template = ours["Records"][index], sams["Records"][0]
    assert set(record) == set(template)
    assert set(record["attributes"]) == set(template["attributes"])


def _invoke_predict(*extra: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "handlers.cli", "invoke", "InferenceFunction", "-e", str(EVENTS_DIR / "http_api_predict.json"), *extra]
    env = {k: v for k, v in os.environ.items() if k not in ("AUTH_TOKEN", "AUTH_TOKENS", "ENVIRONMENT")}
    return subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_the_template_runs_in_production_and_the_local_env_file_runs_the_sample_events(tmp_path: Path) -> None:
    # As deployed (ENVIRONMENT=production, no token given; an empty samconfig.toml instead of the
    # repository's, which names the local env file): init refuses the events' development token.
    empty = tmp_path / "samconfig.toml"
    empty.write_text("version = 0.1\n")
    refused = _invoke_predict("--config-file", str(empty))
    assert "ENVIRONMENT=production" in refused.stdout + refused.stderr, refused.stderr[-3000:]
    assert '"statusCode": 200' not in refused.stdout
    # The README's command, as the repository's samconfig.toml runs it: a development deployment, the sample events' token.
    assert json.loads(LOCAL_ENV.read_text()) == {
        "InferenceFunction": {"ENVIRONMENT": "development", "AUTH_TOKEN": "secret-token"},
        "BatchFunction": {"BATCH_RESULTS_URI": "file://./batch-results/"},
    }
    served = _invoke_predict()
    assert served.returncode == 0, served.stderr[-3000:]
    response = json.loads(served.stdout.strip().splitlines()[-1])
    assert response["statusCode"] == 200, response
    assert json.loads(response["body"])["results"][0]["prediction"] == "positive"
