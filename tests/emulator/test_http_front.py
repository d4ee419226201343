"""The HTTP front: real HTTP requests in, API Gateway events (payload 2.0 and 1.0) to the functions, responses out."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from emulator import limits
from tests.emulator.conftest import TOKEN, Emulator, start_emulator
from tests.network import stop_server

BINARY = bytes(range(256))


def test_query_strings_cookies_headers_and_path_parameters(test_emulator: Emulator) -> None:
    response = httpx.get(
        f"{test_emulator.http_url}/echo/a/b",
        params=[("x", "1"), ("x", "2"), ("y", "z")],
        headers={"X-Custom": "value", "Cookie": "session=abc; theme=dark"},
    )
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    event = response.json()
    assert (event["version"], event["routeKey"], event["rawPath"]) == ("2.0", "ANY /echo/{proxy+}", "/echo/a/b")
    assert event["rawQueryString"] == "x=1&x=2&y=z"
    assert event["queryStringParameters"] == {"x": "1,2", "y": "z"}
    assert event["cookies"] == ["session=abc", "theme=dark"]
    assert event["headers"]["x-custom"] == "value" and "cookie" not in event["headers"]
    assert event["pathParameters"] == {"proxy": "a/b"}
    assert event["isBase64Encoded"] is False and "body" not in event
    context = event["requestContext"]
    assert context["http"] == {
        "method": "GET",
        "path": "/echo/a/b",
        "protocol": "HTTP/1.1",
        "sourceIp": "127.0.0.1",
        "userAgent": context["http"]["userAgent"],
    }
    assert context["http"]["userAgent"].startswith("python-httpx")
    assert context["stage"] == "$default" and context["requestId"] == response.headers["apigw-requestid"]
    assert isinstance(context["timeEpoch"], int)


def test_binary_bodies_are_base64_encoded_and_text_bodies_are_not(test_emulator: Emulator) -> None:
    binary = httpx.post(
        f"{test_emulator.http_url}/echo/upload", content=BINARY, headers={"content-type": "application/octet-stream"}
    ).json()
    assert binary["isBase64Encoded"] is True and base64.b64decode(binary["body"]) == BINARY
    text = httpx.post(f"{test_emulator.http_url}/echo/upload", json={"é": 1}).json()
    assert text["isBase64Encoded"] is False and json.loads(text["body"]) == {"é": 1}


def test_lambda_response_with_cookies_headers_and_a_binary_body(test_emulator: Emulator) -> None:
    reply = {
        "statusCode": 201,
        "headers": {"content-type": "image/png", "x-extra": "yes"},
        "cookies": ["a=1; Path=/", "b=2; HttpOnly"],
        "body": base64.b64encode(BINARY).decode(),
        "isBase64Encoded": True,
    }
    response = httpx.post(f"{test_emulator.http_url}/respond", json=reply)
    assert response.status_code == 201
    assert response.content == BINARY
    assert response.headers["content-type"] == "image/png" and response.headers["x-extra"] == "yes"
    assert response.headers.get_list("set-cookie") == ["a=1; Path=/", "b=2; HttpOnly"]


def test_no_route_is_404_and_a_wrong_method_too(test_emulator: Emulator) -> None:
    assert httpx.get(f"{test_emulator.http_url}/nowhere").status_code == 404
    assert httpx.get(f"{test_emulator.http_url}/respond").json() == {"message": "Not Found"}


def test_real_predict_endpoint(real_emulator: Emulator) -> None:
    body = {"id": "1", "texts": ["I love this product"], "model_version": "v1"}
    response = httpx.post(f"{real_emulator.http_url}/api/v1/predict", json=body, headers={"x-token": TOKEN}, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["prediction"] == "positive"
    assert httpx.post(f"{real_emulator.http_url}/api/v1/predict", json=body, timeout=60).status_code == 401
    assert httpx.get(f"{real_emulator.http_url}/health", timeout=60).json()["ready"] is True


# The fronts' template: API Gateway's limits and answers, aliases, REST events.

FRONTS_TEMPLATE = Path(__file__).resolve().parent / "templates" / "fronts.yaml"
INTERNAL_ERROR = {"message": "Internal Server Error"}


@pytest.fixture(scope="module")
def fronts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    log_path = tmp_path_factory.mktemp("fronts") / "http_front.log"
    process, emulator = start_emulator(log_path, FRONTS_TEMPLATE, "--max-concurrency", "1", "--no-reload", "--use-dev-env")
    try:
        yield emulator
    finally:
        stop_server(process)


def _seen(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return response.json()


def test_body_over_10_mb_is_413_and_the_function_is_not_invoked(fronts: Emulator) -> None:
    body = b"x" * (limits.HTTP_API_BODY_BYTES.value + 1)
    response = httpx.post(f"{fronts.http_url}/size", content=body, headers={"content-type": "text/plain"}, timeout=60)
    assert (response.status_code, response.json()) == (413, {"message": "Request Entity Too Large"})
    assert response.headers["content-type"] == "application/json"
    assert "fronts-size: " not in fronts.log_path.read_text()


def test_event_over_lambdas_6_mb_is_not_invoked_counting_base64(fronts: Emulator) -> None:
    # 5 MB of binary is 6.7 MB of base64 in the event: over Lambda's limit, though under the API's.
    binary = httpx.post(
        f"{fronts.http_url}/size", content=b"\x00" * (5 * 1024 * 1024), headers={"content-type": "application/octet-stream"}, timeout=60
    )
    assert (binary.status_code, binary.json()) == (413, {"message": "Request Entity Too Large"})
    assert "fronts-size: " not in fronts.log_path.read_text()
    text = httpx.post(f"{fronts.http_url}/size", content=b"x" * (5 * 1024 * 1024), headers={"content-type": "text/plain"}, timeout=60)
    assert text.status_code == 200 and json.loads(text.text)["event_bytes"] > 5 * 1024 * 1024
    assert fronts.log_path.read_text().count("fronts-size: ") == 1


def test_throttled_function_is_500_not_429(fronts: Emulator) -> None:
    # One environment (--max-concurrency 1), held for a second: a request beside it is throttled.
    with ThreadPoolExecutor(1) as pool:
        holding = pool.submit(httpx.get, f"{fronts.http_url}/hold", params={"seconds": "1"}, timeout=30)
        answers: list[httpx.Response] = []
        deadline = time.monotonic() + 10
        while not holding.done() and time.monotonic() < deadline:
            answers.append(httpx.get(f"{fronts.http_url}/hold", timeout=30))
            time.sleep(0.05)
        answers.append(holding.result())
    statuses = {response.status_code for response in answers}
    assert statuses == {200, 500}, statuses
    assert next(response for response in answers if response.status_code == 500).json() == INTERNAL_ERROR


def test_function_error_is_500(fronts: Emulator) -> None:
    response = httpx.get(f"{fronts.http_url}/fail", timeout=30)
    assert (response.status_code, response.json()) == (500, INTERNAL_ERROR)


@pytest.mark.parametrize(
    "reply",
    [
        {"statusCode": 200, "body": {"an": "object"}},
        {"statusCode": 200, "body": "not base64!", "isBase64Encoded": True},
        {"statusCode": "200", "body": "a string status"},
        {"statusCode": 200, "headers": {"x-list": ["a", "b"]}, "body": ""},
        {"statusCode": 200, "cookies": "a=1", "body": ""},
        {"statusCode": 99, "body": ""},
    ],
)
def test_malformed_replies_are_502_with_a_json_message(fronts: Emulator, reply: dict[str, Any]) -> None:
    http_api = httpx.post(f"{fronts.http_url}/reply", json={"reply": reply}, timeout=30)
    assert (http_api.status_code, http_api.json()) == (502, INTERNAL_ERROR)
    assert http_api.headers["content-type"] == "application/json"
    rest_api = httpx.post(f"{fronts.http_url}/rest/reply", json={"reply": reply}, timeout=30)
    assert (rest_api.status_code, rest_api.json()) == (502, {"message": "Internal server error"})


def test_a_rest_reply_with_extra_fields_is_502_and_an_http_api_one_is_not(fronts: Emulator) -> None:
    reply = {"statusCode": 201, "body": "ok", "extra": 1}
    assert httpx.post(f"{fronts.http_url}/rest/reply", json={"reply": reply}, timeout=30).status_code == 502
    accepted = httpx.post(f"{fronts.http_url}/reply", json={"reply": reply}, timeout=30)
    assert (accepted.status_code, accepted.text) == (201, "ok")


def test_the_function_with_an_alias_is_invoked_through_it(fronts: Emulator) -> None:
    aliased = _seen(httpx.get(f"{fronts.http_url}/aliased", timeout=30))
    arn = "arn:aws:lambda:us-east-1:123456789012:function"
    assert (aliased["function_version"], aliased["invoked_function_arn"]) == ("1", f"{arn}:Aliased:live")
    plain = _seen(httpx.get(f"{fronts.http_url}/plain", timeout=30))
    assert (plain["function_version"], plain["invoked_function_arn"]) == ("$LATEST", f"{arn}:Plain")


def test_http_api_events_carry_the_forwarding_headers(fronts: Emulator) -> None:
    event = _seen(httpx.get(f"{fronts.http_url}/plain", headers={"X-Mixed-Case": "v"}, timeout=30))["event"]
    port = str(httpx.URL(fronts.http_url).port)
    headers = event["headers"]
    assert (headers["x-forwarded-port"], headers["x-forwarded-proto"], headers["x-forwarded-for"]) == (port, "http", "127.0.0.1")
    assert headers["x-mixed-case"] == "v" and event["requestContext"]["stage"] == "$default"


def test_rest_events_carry_the_stage_and_the_forwarding_headers(fronts: Emulator) -> None:
    response = httpx.get(f"{fronts.http_url}/rest/a/b", params={"q": "1"}, headers={"X-Mixed-Case": "v"}, timeout=30)
    event = _seen(response)["event"]
    assert event["headers"]["X-Mixed-Case"] == "v" and event["multiValueHeaders"]["X-Mixed-Case"] == ["v"]  # the case as sent
    port = str(httpx.URL(fronts.http_url).port)
    context = event["requestContext"]
    assert (event["version"], event["resource"], event["path"]) == ("1.0", "/rest/{proxy+}", "/rest/a/b")
    assert (context["stage"], context["path"], context["resourcePath"]) == ("Prod", "/Prod/rest/a/b", "/rest/{proxy+}")
    assert context["requestId"] == response.headers["x-amzn-requestid"] and "apigw-requestid" not in response.headers
    assert event["multiValueHeaders"]["X-Forwarded-Port"] == [port] and event["headers"]["X-Forwarded-Proto"] == "http"
    assert event["pathParameters"] == {"proxy": "a/b"} and event["queryStringParameters"] == {"q": "1"}
