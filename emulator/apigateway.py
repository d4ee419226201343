"""API Gateway's side of a Lambda proxy integration: the event it sends, the response it makes.

Payload 2.0 (HTTP API) and 1.0 (REST API, or an HTTP API event with PayloadFormatVersion 1.0).
"""

from __future__ import annotations

import base64
import json
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from emulator.routing import Match

ACCOUNT_ID = "123456789012"
API_ID = "local"
_TEXT_TYPES = ("application/json", "application/xml", "application/javascript", "application/x-www-form-urlencoded", "application/yaml")


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str
    raw_query: str
    headers: list[tuple[str, str]]
    body: bytes
    source_ip: str
    protocol: str = "HTTP/1.1"


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def is_text(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media.startswith("text/") or media in _TEXT_TYPES or media.endswith(("+json", "+xml"))


def _body(request: HttpRequest, headers: dict[str, str]) -> dict[str, Any]:
    if not request.body:
        return {"isBase64Encoded": False}
    if is_text(headers.get("content-type", "")):
        try:
            return {"body": request.body.decode("utf-8"), "isBase64Encoded": False}
        except UnicodeDecodeError:
            pass
    return {"body": base64.b64encode(request.body).decode(), "isBase64Encoded": True}


def _query(raw_query: str) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for key, value in urllib.parse.parse_qsl(raw_query, keep_blank_values=True):
        values.setdefault(key, []).append(value)
    return values


def _headers(request: HttpRequest) -> dict[str, str]:
    """Lowercased names; repeated headers joined with commas; the forwarding headers API Gateway adds."""
    joined: dict[str, str] = {}
    for name, value in request.headers:
        name = name.lower()
        joined[name] = f"{joined[name]},{value}" if name in joined else value
    joined.setdefault("x-forwarded-for", request.source_ip)
    joined.setdefault("x-forwarded-proto", "http")
    joined.setdefault("x-amzn-trace-id", f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]}")
    return joined


def _request_time(now: datetime) -> str:
    return now.strftime("%d/%b/%Y:%H:%M:%S +0000")


def http_api_event(request: HttpRequest, match: Match, request_id: str) -> dict[str, Any]:
    """Payload format 2.0."""
    headers = _headers(request)
    cookie_header = headers.pop("cookie", None)
    now = datetime.now(UTC)
    route_key = match.route.route_key
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": request.path,
        "rawQueryString": request.raw_query,
        "headers": headers,
        "requestContext": {
            "accountId": ACCOUNT_ID,
            "apiId": API_ID,
            "domainName": headers.get("host", "localhost"),
            "domainPrefix": headers.get("host", "localhost").split(".", 1)[0],
            "http": {
                "method": request.method,
                "path": request.path,
                "protocol": request.protocol,
                "sourceIp": request.source_ip,
                "userAgent": headers.get("user-agent", ""),
            },
            "requestId": request_id,
            "routeKey": route_key,
            "stage": "$default",
            "time": _request_time(now),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        **_body(request, headers),
    }
    if cookie_header:
        event["cookies"] = [cookie.strip() for cookie in cookie_header.split(";") if cookie.strip()]
    if request.raw_query:
        event["queryStringParameters"] = {key: ",".join(values) for key, values in _query(request.raw_query).items()}
    if match.path_parameters:
        event["pathParameters"] = match.path_parameters
    return event


def rest_api_event(request: HttpRequest, match: Match, request_id: str) -> dict[str, Any]:
    """Payload format 1.0."""
    multi_headers: dict[str, list[str]] = {}
    for name, value in request.headers:
        multi_headers.setdefault(name, []).append(value)
    query = _query(request.raw_query)
    now = datetime.now(UTC)
    return {
        "version": "1.0",
        "resource": match.route.path,
        "path": request.path,
        "httpMethod": request.method,
        "headers": {name: values[-1] for name, values in multi_headers.items()},
        "multiValueHeaders": multi_headers,
        "queryStringParameters": {key: values[-1] for key, values in query.items()} or None,
        "multiValueQueryStringParameters": query or None,
        "pathParameters": match.path_parameters or None,
        "stageVariables": None,
        "requestContext": {
            "accountId": ACCOUNT_ID,
            "apiId": API_ID,
            "httpMethod": request.method,
            "identity": {"sourceIp": request.source_ip, "userAgent": dict(request.headers).get("user-agent", "")},
            "path": request.path,
            "protocol": request.protocol,
            "requestId": request_id,
            "requestTime": _request_time(now),
            "requestTimeEpoch": int(now.timestamp() * 1000),
            "resourcePath": match.route.path,
            "stage": "$default",
        },
        **_body(request, {name.lower(): values[-1] for name, values in multi_headers.items()}),
    }


def lambda_response(payload: bytes, version: str) -> HttpResponse:
    """The HTTP response for a function's reply; 502 when the reply is not a valid response."""
    try:
        reply = json.loads(payload)
    except ValueError:
        return _message(502, "Internal Server Error")
    if version == "2.0" and not (isinstance(reply, dict) and "statusCode" in reply):
        # An HTTP API infers a 200 JSON response from any other valid JSON.
        return HttpResponse(200, [("content-type", "application/json")], payload)
    if not isinstance(reply, dict) or not isinstance(reply.get("statusCode"), int):
        return _message(502, "Internal Server Error")
    headers = [(str(k), str(v)) for k, v in (reply.get("headers") or {}).items()]
    for name, values in (reply.get("multiValueHeaders") or {}).items():
        headers.extend((str(name), str(value)) for value in values)
    headers.extend(("set-cookie", str(cookie)) for cookie in reply.get("cookies") or [])
    body = reply.get("body") or ""
    data = base64.b64decode(body) if reply.get("isBase64Encoded") else str(body).encode()
    return HttpResponse(reply["statusCode"], headers, data)


def error_response(status: int) -> HttpResponse:
    """API Gateway's own answers: 404 no route, 429 throttled, 500 function error."""
    return _message(status, {404: "Not Found", 429: "Too Many Requests", 500: "Internal Server Error"}.get(status, "Error"))


def _message(status: int, message: str) -> HttpResponse:
    return HttpResponse(status, [("content-type", "application/json")], json.dumps({"message": message}).encode())
