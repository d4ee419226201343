"""The HTTP front: real HTTP requests in, API Gateway payload 2.0 events to the functions, responses out."""

from __future__ import annotations

import base64
import json

import httpx

from tests.emulator.conftest import TOKEN, Emulator

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
