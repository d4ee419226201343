"""The Lambda HTTP handler in a fresh execution environment: real Mangum, Powertools and models, SAM-generated events."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from emulator.pool import Invocation
from tests.handlers.lambda_events import alb, generate, http_api, rest_api
from tests.handlers.lambda_harness import Run, run_lambda

SEED_BODY = '{"id": "1", "texts": ["I love this product"], "model_version": "v1"}'
TOKEN = {"x-token": "lambda-token"}


@pytest.fixture(scope="module")
def run(models_dir: Path) -> Run:
    v2 = generate("apigateway", "http-api-proxy")
    v1 = generate("apigateway", "aws-proxy")
    events = [
        http_api(v2, "POST", "/api/v1/predict", SEED_BODY, TOKEN, request_id="req-seed"),
        http_api(v2, "POST", "/api/v1/predict", SEED_BODY, TOKEN, b64=True, request_id="req-b64"),
        http_api(v2, "POST", "/api/v1/predict", SEED_BODY, {}, request_id="req-noauth"),
        http_api(v2, "POST", "/api/v1/predict", '{"texts": [', TOKEN, request_id="req-badjson"),
        http_api(v2, "GET", "/health", None, {}, request_id="req-health"),
        rest_api(v1, "POST", "/api/v1/predict", SEED_BODY, TOKEN, stage="prod"),
        alb("POST", "/api/v1/predict", SEED_BODY, {**TOKEN, "x-amzn-trace-id": "Root=1-abc"}),
        http_api(v2, "POST", "/api/v1/predict", '{"model": "iris", "instances": [[6.7, 3.0, 5.2, 2.3]]}', TOKEN, request_id="req-iris"),
        http_api(v2, "POST", "/api/v1/predict", SEED_BODY, {"x-token": "previous-token"}, request_id="req-rotated"),
        http_api(v2, "POST", "/api/v1/predict", SEED_BODY, {"x-token": "secret-token"}, request_id="req-default"),
    ]
    # As template.yaml deploys it: ENVIRONMENT=production, a token of its own, and one being rotated out.
    return run_lambda("handlers.lambda_http", events, ENVIRONMENT="production", AUTH_TOKENS="previous-token")


def _body(response: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(response["body"])
    return body


def test_http_api_event_with_no_content_type(run: Run) -> None:
    response = run.responses[0]
    assert response["statusCode"] == 200, response
    result = _body(response)["results"][0]
    assert result["prediction"] == "positive" and result["scores"]["positive"] > 0.8


def test_base64_body_is_decoded(run: Run) -> None:
    assert run.responses[1]["statusCode"] == 200
    assert _body(run.responses[1])["request_id"] == "1"


def test_errors_are_json_4xx(run: Run) -> None:
    assert (run.responses[2]["statusCode"], _body(run.responses[2])["error"]["code"]) == (401, "unauthorized")
    assert (run.responses[3]["statusCode"], _body(run.responses[3])["error"]["code"]) == (422, "invalid_request")


def test_health(run: Run) -> None:
    assert run.responses[4]["statusCode"] == 200
    assert _body(run.responses[4])["ready"] is True


def test_rest_api_event_with_a_stage(run: Run) -> None:
    assert run.responses[5]["statusCode"] == 200, run.responses[5]
    assert _body(run.responses[5])["results"][0]["prediction"] == "positive"


def test_alb_event(run: Run) -> None:
    assert run.responses[6]["statusCode"] == 200, run.responses[6]
    assert _body(run.responses[6])["model_version"] == "v1"


def test_tabular_model_through_lambda(run: Run) -> None:
    assert _body(run.responses[7])["results"][0]["prediction"] == "virginica"


def test_json_logs_carry_the_correlation_id_and_cold_start(run: Run) -> None:
    requests = [line for line in run.logs if line.get("message") == "http request"]
    assert len(requests) == 10
    assert [line["correlation_id"] for line in requests[:2]] == ["req-seed", "req-b64"]
    assert requests[6]["correlation_id"] == "Root=1-abc"  # ALB: the trace header
    assert [line["cold_start"] for line in requests[:2]] == [True, False]
    assert requests[2]["status"] == 401 and requests[0]["level"] == "INFO"


def test_emf_metrics_cold_start_once_and_per_model(run: Run) -> None:
    emf = [line for line in run.logs if "_aws" in line]
    assert all(m["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "MLInferenceTest" for m in emf)
    assert sum("ColdStart" in m for m in emf) == 1
    predictions = [m for m in emf if "Predictions" in m]
    assert {(m["model"], m["model_version"]) for m in predictions} >= {("sentiment_analysis", "v1"), ("iris", "v1")}
    assert len([m for m in emf if "PredictionLatency" in m]) == len(predictions) == 6


def test_base_path_of_a_custom_domain_is_stripped(models_dir: Path) -> None:
    v1 = generate("apigateway", "aws-proxy")
    event = rest_api(v1, "POST", "/ml/api/v1/predict", SEED_BODY, TOKEN, stage="prod")
    result = run_lambda("handlers.lambda_http", [event], API_GATEWAY_BASE_PATH="/ml")
    assert result.responses[0]["statusCode"] == 200, result.responses[0]


def test_with_tracing_enabled_the_handler_is_traced_and_still_answers(models_dir: Path) -> None:
    event = http_api(generate("apigateway", "http-api-proxy"), "POST", "/api/v1/predict", SEED_BODY, TOKEN)
    # Powertools' Tracer is real here; POWERTOOLS_TRACE_DISABLED keeps it from sending to a daemon.
    result = run_lambda("handlers.lambda_http", [event], ENABLE_TRACING="true")
    assert result.responses[0]["statusCode"] == 200


def test_production_accepts_the_rotated_token_and_never_the_default(run: Run) -> None:
    assert run.responses[8]["statusCode"] == 200, run.responses[8]
    assert (run.responses[9]["statusCode"], _body(run.responses[9])["error"]["code"]) == (401, "unauthorized")


@pytest.mark.parametrize("token", ["secret-token", ""])
def test_production_cold_start_fails_with_the_default_token_or_none(models_dir: Path, token: str) -> None:
    import asyncio
    import os

    from emulator.pool import WorkerPool
    from emulator.template import FunctionSpec
    from tests.conftest import REPO_ROOT
    from tests.handlers.lambda_harness import DEFAULT_ENVIRONMENT, FUNCTION_NAME

    spec = FunctionSpec(
        FUNCTION_NAME,
        "handlers.lambda_http.handler",
        REPO_ROOT,
        memory_mb=2048,
        timeout_s=60.0,
        # No registry either: the refusal must come first, before the engine is built.
        environment={**DEFAULT_ENVIRONMENT, "ENVIRONMENT": "production", "AUTH_TOKEN": token, "MODEL_REGISTRY_PATH": "/nonexistent.yaml"},
    )
    logged: list[str] = []

    async def invoke_once() -> tuple[str | None, bytes]:
        pool = WorkerPool(spec, os.environ, max_concurrency=1, log_sink=lambda _function, text: logged.append(text))
        try:
            event = http_api(generate("apigateway", "http-api-proxy"), "POST", "/api/v1/predict", SEED_BODY, {"x-token": token})
            invocation = await pool.invoke(json.dumps(event).encode())
            return invocation.function_error, invocation.payload
        finally:
            await pool.close()

    function_error, payload = asyncio.run(invoke_once())
    log = "".join(logged)
    assert function_error, payload
    assert "InsecureConfiguration" in payload.decode() + log and "ENVIRONMENT=production" in payload.decode() + log


@pytest.fixture(scope="module")
def pings(models_dir: Path) -> list[Invocation]:
    """Warm-up pings, an HTTP request and an event that is neither, in turn, in one environment."""
    import asyncio
    import os

    from emulator.pool import WorkerPool
    from emulator.template import FunctionSpec
    from tests.conftest import REPO_ROOT
    from tests.handlers.lambda_harness import DEFAULT_ENVIRONMENT, FUNCTION_NAME

    handler = "handlers.lambda_http.handler"
    spec = FunctionSpec(FUNCTION_NAME, handler, REPO_ROOT, memory_mb=2048, timeout_s=60.0, environment=DEFAULT_ENVIRONMENT)
    events = [
        generate("cloudwatch", "scheduled-event"),
        {"warmup": True},
        {"source": "serverless-plugin-warmup"},
        http_api(generate("apigateway", "http-api-proxy"), "POST", "/api/v1/predict", SEED_BODY, TOKEN),
        generate("sqs", "receive-message"),
        ["not", "an", "object"],
    ]

    async def invoke_in_turn() -> list[Invocation]:
        pool = WorkerPool(spec, os.environ, max_concurrency=1, log_sink=lambda _function, _text: None)
        try:
            return [await pool.invoke(json.dumps(event).encode()) for event in events]
        finally:
            await pool.close()

    return asyncio.run(invoke_in_turn())


def _log_lines(invocation: Invocation) -> list[dict[str, Any]]:
    """The function's own JSON log lines of one invocation; EMF metric records left out."""
    lines = [json.loads(line) for line in invocation.log.splitlines() if line.startswith("{")]
    return [line for line in lines if "_aws" not in line]


@pytest.mark.parametrize(("index", "source"), [(0, "aws.events"), (1, "warmup"), (2, "serverless-plugin-warmup")])
def test_a_warm_up_ping_gets_a_short_success_and_one_log_line(pings: list[Invocation], index: int, source: str) -> None:
    from tests.handlers.lambda_harness import FUNCTION_NAME

    ping = pings[index]
    assert not ping.function_error, ping.payload
    assert json.loads(ping.payload) == {"warm": True, "function": FUNCTION_NAME, "source": source}
    (line,) = _log_lines(ping)  # nothing else logged: no request, no model loaded
    assert (line["message"], line["source"], line["level"]) == ("warm-up ping", source, "INFO")
    assert line["cold_start"] is (index == 0)


def test_the_environment_still_answers_http_after_pings(pings: list[Invocation]) -> None:
    response = json.loads(pings[3].payload)
    assert response["statusCode"] == 200, response
    assert [line["message"] for line in _log_lines(pings[3])] == ["http request"]


@pytest.mark.parametrize(("index", "shape"), [(4, "keys ['Records']"), (5, "a JSON list")])
def test_any_other_event_is_a_clear_error(pings: list[Invocation], index: int, shape: str) -> None:
    error = json.loads(pings[index].payload)
    assert pings[index].function_error and error["errorType"] == "UnsupportedEvent", error
    assert "API Gateway" in error["errorMessage"] and "warm-up pings" in error["errorMessage"] and shape in error["errorMessage"]
