"""API Gateway's side of the proxy integration: REST events keep the header names' case, replies are
checked as API Gateway checks them, and each kind of API answers its own errors."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from emulator.apigateway import HttpRequest, Malformed, api_of, event_for, gateway_error, lambda_response, rest_api_event
from emulator.http_front import HeaderCaseProtocol, HttpFront
from emulator.pool import WorkerPool
from emulator.routing import Match, Router
from emulator.template import HttpRoute, load_functions
from tests.conftest import REPO_ROOT
from tests.network import free_port

FRONTS_TEMPLATE = Path(__file__).resolve().parent / "templates" / "fronts.yaml"
REST = HttpRoute("/rest/{proxy+}", "ANY", "1.0", "Prod")
HTTP_API_V1 = HttpRoute("/v1/{proxy+}", "ANY", "1.0")
HTTP_API = HttpRoute("/{proxy+}", "ANY", "2.0")


def _request(headers: list[tuple[str, str]]) -> HttpRequest:
    return HttpRequest("GET", "/rest/a", "", headers, b"", "127.0.0.1", port=3000)


def test_api_kind_follows_the_route() -> None:
    assert (api_of(REST), api_of(HTTP_API_V1), api_of(HTTP_API)) == ("rest", "http", "http")


def test_rest_events_keep_the_header_case_and_http_api_v1_events_lowercase_it() -> None:
    headers = [("X-Custom", "a"), ("X-Custom", "b"), ("Content-Type", "text/plain")]
    rest = rest_api_event(_request(headers), Match("F", REST, {"proxy": "a"}), "id")
    assert rest["multiValueHeaders"]["X-Custom"] == ["a", "b"] and rest["headers"]["X-Custom"] == "b"
    assert rest["headers"]["X-Forwarded-Port"] == "3000" and rest["requestContext"]["stage"] == "Prod"
    v1 = rest_api_event(_request(headers), Match("F", HTTP_API_V1, {"proxy": "a"}), "id")
    assert v1["multiValueHeaders"]["x-custom"] == ["a", "b"] and "X-Custom" not in v1["headers"]
    assert v1["requestContext"]["stage"] == "$default"


def test_a_header_the_client_sent_is_not_added_again() -> None:
    rest = rest_api_event(_request([("x-forwarded-for", "10.0.0.1")]), Match("F", REST, {}), "id")
    assert rest["multiValueHeaders"]["x-forwarded-for"] == ["10.0.0.1"] and "X-Forwarded-For" not in rest["headers"]


@pytest.mark.parametrize(("recorded", "route"), [("rest_api_predict.json", REST), ("http_api_predict.json", HTTP_API)])
def test_events_have_every_field_of_sams_generated_ones(recorded: str, route: HttpRoute) -> None:
    """The recorded events have the shape of ``sam local generate-event apigateway aws-proxy`` / ``http-api-proxy``."""
    sam = json.loads((REPO_ROOT / "events" / recorded).read_text())
    request = HttpRequest("POST", "/api/v1/predict", "", [("Content-Type", "application/json")], b"{}", "127.0.0.1")
    ours = json.loads(event_for(request, Match("F", route, {"proxy": "api/v1/predict"}), "id"))
    assert set(sam) <= set(ours) and set(sam["requestContext"]) <= set(ours["requestContext"])
    assert set(sam["requestContext"].get("identity", {})) <= set(ours["requestContext"].get("identity", {}))


@pytest.mark.parametrize(
    "reply",
    [
        "not json",
        json.dumps([1, 2]),
        json.dumps({"statusCode": True}),
        json.dumps({"statusCode": 200, "headers": {"bad name": "v"}}),
        json.dumps({"statusCode": 200, "headers": {"x": "a\r\nSet-Cookie: injected"}}),
        json.dumps({"statusCode": 200, "multiValueHeaders": {"x": "not a list"}}),
        json.dumps({"statusCode": 200, "body": "e30", "isBase64Encoded": "yes"}),
    ],
)
def test_malformed_replies(reply: str) -> None:
    with pytest.raises(Malformed):
        lambda_response(reply.encode(), REST)


def test_a_well_formed_reply_gets_json_by_default() -> None:
    response = lambda_response(json.dumps({"statusCode": 204, "multiValueHeaders": {"X-A": [1, True]}}).encode(), REST)
    assert (response.status, response.body) == (204, b"")
    assert response.headers == [("X-A", "1"), ("X-A", "true"), ("content-type", "application/json")]
    inferred = lambda_response(b'"just a string"', HTTP_API)
    assert (inferred.status, inferred.body) == (200, b'"just a string"')


def test_each_kind_of_api_answers_its_own_errors() -> None:
    def answer(api: Any, failure: Any) -> tuple[int, bytes]:
        response = gateway_error(api, failure)
        return response.status, response.body

    assert answer("http", "no_route") == (404, b'{"message": "Not Found"}')
    assert answer("rest", "no_route") == (403, b'{"message": "Missing Authentication Token"}')
    assert answer("http", "function_error") == (500, b'{"message": "Internal Server Error"}')
    assert answer("rest", "function_error") == (502, b'{"message": "Internal server error"}')
    assert answer("rest", "throttled") == (500, b'{"message": "Internal server error"}')
    assert answer("rest", "event_too_large") == (413, b'{"message": "Request Too Long"}')
    assert answer("rest", "body_too_large") == (413, b"HTTP content length exceeded 10485760 bytes.")


@pytest.fixture(scope="module")
def rest_front() -> Iterator[str]:
    """The HTTP front over the REST function's real environment, served by uvicorn with HeaderCaseProtocol."""
    spec = load_functions(FRONTS_TEMPLATE)["RestEcho"]
    pool = WorkerPool(spec, os.environ, max_concurrency=1, log_sink=lambda _name, _text: None)
    front = HttpFront({spec.name: pool}, Router({spec.name: spec}))
    port = free_port()
    config = uvicorn.Config(front, host="127.0.0.1", port=port, http=HeaderCaseProtocol, lifespan="off", log_level="warning")
    server = uvicorn.Server(config)

    async def serve() -> None:
        try:
            await server.serve()
        finally:
            await pool.close()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        threading.Event().wait(0.05)
    assert server.started, "the front did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_rest_events_carry_the_header_names_as_sent(rest_front: str) -> None:
    headers = [("X-Mixed-Case", "one"), ("x-lower", "two"), ("X-Mixed-Case", "three")]
    response = httpx.get(f"{rest_front}/rest/a", headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    event = response.json()["event"]
    assert event["multiValueHeaders"]["X-Mixed-Case"] == ["one", "three"] and event["headers"]["x-lower"] == "two"
    assert "Host" in event["headers"] and "User-Agent" in event["headers"]


def test_a_rest_only_front_answers_403_for_no_route(rest_front: str) -> None:
    response = httpx.get(f"{rest_front}/elsewhere", timeout=30)
    assert (response.status_code, response.json()) == (403, {"message": "Missing Authentication Token"})
    assert response.headers["x-amzn-errortype"] == "MissingAuthenticationTokenException"
