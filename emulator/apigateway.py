"""API Gateway's side of a Lambda proxy integration: the event it sends, the response it makes,
and its own answers when it does not get one.

An HTTP API sends payload 2.0 (or 1.0 when the route says so) with lowercased header names; a
REST API (``Api`` events) sends payload 1.0 with the header names as the client sent them and
its stage in the request context. The two answer their errors differently:

| case | HTTP API | REST API |
|---|---|---|
| no route | 404 ``{"message":"Not Found"}`` | 403 ``{"message":"Missing Authentication Token"}`` |
| body over 10 MB | 413 ``{"message":"Request Entity Too Large"}`` | 413 ``HTTP content length exceeded 10485760 bytes.`` |
| event over Lambda's 6 MB | 413 ``{"message":"Request Entity Too Large"}`` | 413 ``{"message": "Request Too Long"}`` |
| Lambda refuses (throttled) | 500 ``{"message":"Internal Server Error"}`` | 500 ``{"message": "Internal server error"}`` |
| function error | 500 ``{"message":"Internal Server Error"}`` | 502 ``{"message": "Internal server error"}`` |
| malformed response | 502 ``{"message":"Internal Server Error"}`` | 502 ``{"message": "Internal server error"}`` |

Sources: https://docs.aws.amazon.com/lambda/latest/dg/services-apigateway-errors.html (REST: 500 when
Lambda refuses the invocation, 502 for a function error or a malformed response, "Internal server
error"), https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-troubleshooting-lambda.html
(HTTP API: "Internal Server Error"), https://docs.aws.amazon.com/apigateway/latest/developerguide/supported-gateway-response-types.html
(REQUEST_TOO_LARGE 413, MISSING_AUTHENTICATION_TOKEN 403); the REST texts of the two 413s are the
service's, as recorded in koki-develop/lgtm-generator#10.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import urllib.parse
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from emulator import limits
from emulator.pool import new_trace_root
from emulator.routing import Match
from emulator.template import HttpRoute

ACCOUNT_ID = "123456789012"
API_ID = "local"
_TEXT_TYPES = ("application/json", "application/xml", "application/javascript", "application/x-www-form-urlencoded", "application/yaml")
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_REST_RESPONSE_KEYS = {"statusCode", "headers", "multiValueHeaders", "body", "isBase64Encoded"}

Api = Literal["http", "rest"]
Failure = Literal["no_route", "body_too_large", "event_too_large", "throttled", "function_error", "malformed"]


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str
    raw_query: str
    headers: list[tuple[str, str]]
    """Names as the client sent them (where the server kept their case), in order, repeated ones repeated."""
    body: bytes
    source_ip: str
    protocol: str = "HTTP/1.1"
    port: int = 3000
    """The front's port, for ``x-forwarded-port``."""


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def api_of(route: HttpRoute) -> Api:
    """Which kind of API serves the route: "$default" is an HTTP API's stage, never a REST API's."""
    return "http" if route.payload_version == "2.0" or route.stage == "$default" else "rest"


def is_text(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media.startswith("text/") or media in _TEXT_TYPES or media.endswith(("+json", "+xml"))


def _body(request: HttpRequest, content_type: str) -> dict[str, Any]:
    if not request.body:
        return {"isBase64Encoded": False}
    if is_text(content_type):
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


def _forwarded(request: HttpRequest) -> list[tuple[str, str]]:
    """The headers API Gateway adds, unless the client sent them (any case)."""
    sent = {name.lower() for name, _ in request.headers}
    added = [
        ("X-Forwarded-For", request.source_ip),
        ("X-Forwarded-Port", str(request.port)),
        ("X-Forwarded-Proto", "http"),
        ("X-Amzn-Trace-Id", new_trace_root()),
    ]
    return [(name, value) for name, value in added if name.lower() not in sent]


def _request_time(now: datetime) -> str:
    return now.strftime("%d/%b/%Y:%H:%M:%S +0000")


def http_api_event(request: HttpRequest, match: Match, request_id: str) -> dict[str, Any]:
    """Payload format 2.0: lowercased names; repeated headers joined with commas."""
    headers: dict[str, str] = {}
    for name, value in request.headers + _forwarded(request):
        name = name.lower()
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    cookie_header = headers.pop("cookie", None)
    now = datetime.now(UTC)
    route_key = match.route.route_key
    host = headers.get("host", "localhost")
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": request.path,
        "rawQueryString": request.raw_query,
        "headers": headers,
        "requestContext": {
            "accountId": ACCOUNT_ID,
            "apiId": API_ID,
            "domainName": host,
            "domainPrefix": host.split(".", 1)[0],
            "http": {
                "method": request.method,
                "path": request.path,
                "protocol": request.protocol,
                "sourceIp": request.source_ip,
                "userAgent": headers.get("user-agent", ""),
            },
            "requestId": request_id,
            "routeKey": route_key,
            "stage": match.route.stage,
            "time": _request_time(now),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        **_body(request, headers.get("content-type", "")),
    }
    if cookie_header:
        event["cookies"] = [cookie.strip() for cookie in cookie_header.split(";") if cookie.strip()]
    if request.raw_query:
        event["queryStringParameters"] = {key: ",".join(values) for key, values in _query(request.raw_query).items()}
    if match.path_parameters:
        event["pathParameters"] = match.path_parameters
    return event


def rest_api_event(request: HttpRequest, match: Match, request_id: str) -> dict[str, Any]:
    """Payload format 1.0. A REST API keeps the names' case; an HTTP API's 1.0 events lowercase them."""
    keep_case = api_of(match.route) == "rest"
    multi_headers: dict[str, list[str]] = {}
    for name, value in request.headers + _forwarded(request):
        multi_headers.setdefault(name if keep_case else name.lower(), []).append(value)
    lowered = {name.lower(): values[-1] for name, values in multi_headers.items()}
    query = _query(request.raw_query)
    now = datetime.now(UTC)
    stage = match.route.stage
    identity: dict[str, Any] = dict.fromkeys(
        ("cognitoIdentityPoolId", "accountId", "cognitoIdentityId", "caller", "accessKey", "cognitoAuthenticationType"), None
    )
    identity |= {"cognitoAuthenticationProvider": None, "userArn": None, "user": None}
    identity |= {"sourceIp": request.source_ip, "userAgent": lowered.get("user-agent", "")}
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
            "domainName": lowered.get("host", "localhost"),
            "extendedRequestId": request_id,
            "httpMethod": request.method,
            "identity": identity,
            # The execute-api domain's path: the stage, then the resource's path.
            "path": f"/{stage}{request.path}" if keep_case else request.path,
            "protocol": request.protocol,
            "requestId": request_id,
            "requestTime": _request_time(now),
            "requestTimeEpoch": int(now.timestamp() * 1000),
            "resourceId": uuid.uuid5(uuid.NAMESPACE_URL, match.route.route_key).hex[:6],
            "resourcePath": match.route.path,
            "stage": stage,
        },
        **_body(request, lowered.get("content-type", "")),
    }


def event_for(request: HttpRequest, match: Match, request_id: str) -> bytes:
    """The event the route's integration sends, as Lambda receives it."""
    build = http_api_event if match.route.payload_version == "2.0" else rest_api_event
    return json.dumps(build(request, match, request_id)).encode()


def event_too_large(event: bytes) -> bool:
    """Whether Lambda would refuse the event (its synchronous request limit; base64 and JSON escapes count)."""
    return len(event) > limits.SYNC_REQUEST_BYTES.value


class Malformed(ValueError):
    """The function's reply is not a proxy integration response API Gateway accepts."""


def lambda_response(payload: bytes, route: HttpRoute) -> HttpResponse:
    """The HTTP response for a function's reply; ``Malformed`` when API Gateway would not accept it (a 502)."""
    try:
        reply = json.loads(payload)
    except ValueError as exc:
        raise Malformed("not JSON") from exc
    if route.payload_version == "2.0" and not (isinstance(reply, dict) and "statusCode" in reply):
        # An HTTP API infers a 200 JSON response from any other valid JSON.
        return HttpResponse(200, [("content-type", "application/json")], payload)
    if not isinstance(reply, dict):
        raise Malformed("not an object")
    if api_of(route) == "rest" and not set(reply) <= _REST_RESPONSE_KEYS:
        raise Malformed(f"unexpected fields {sorted(set(reply) - _REST_RESPONSE_KEYS)}")
    status = reply.get("statusCode")
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise Malformed(f"statusCode {status!r}")
    headers = [(_header_name(name), _header_value(value)) for name, value in _mapping(reply, "headers").items()]
    if route.payload_version == "1.0":
        for name, values in _mapping(reply, "multiValueHeaders").items():
            if not isinstance(values, list):
                raise Malformed(f"multiValueHeaders {name!r}")
            headers.extend((_header_name(name), _header_value(value)) for value in values)
    else:
        cookies = reply.get("cookies") or []
        if not isinstance(cookies, list) or not all(isinstance(cookie, str) for cookie in cookies):
            raise Malformed("cookies")
        headers.extend(("set-cookie", _header_value(cookie)) for cookie in cookies)
    if not any(name.lower() == "content-type" for name, _ in headers):
        headers.append(("content-type", "application/json"))
    return HttpResponse(status, headers, _response_body(reply))


def _mapping(reply: dict[str, Any], key: str) -> dict[str, Any]:
    value = reply.get(key) or {}
    if not isinstance(value, dict):
        raise Malformed(key)
    return value


def _header_name(name: str) -> str:
    if not _TOKEN.match(name):
        raise Malformed(f"header name {name!r}")
    return name


def _header_value(value: Any) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str | int | float):
        text = str(value)
    else:
        raise Malformed(f"header value {value!r}")
    if "\r" in text or "\n" in text or not text.isascii() and not _latin1(text):
        raise Malformed(f"header value {value!r}")
    return text


def _latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def _response_body(reply: dict[str, Any]) -> bytes:
    body = reply.get("body")
    if body is None:
        return b""
    if not isinstance(body, str):
        raise Malformed("body is not a string")
    encoded = reply.get("isBase64Encoded", False)
    if not isinstance(encoded, bool):
        raise Malformed("isBase64Encoded")
    if not encoded:
        return body.encode()
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise Malformed("body is not base64") from exc


_HTTP_API_ANSWERS: dict[Failure, tuple[int, str]] = {
    "no_route": (404, "Not Found"),
    "body_too_large": (413, "Request Entity Too Large"),
    "event_too_large": (413, "Request Entity Too Large"),
    "throttled": (500, "Internal Server Error"),
    "function_error": (500, "Internal Server Error"),
    "malformed": (502, "Internal Server Error"),
}
_REST_API_ANSWERS: dict[Failure, tuple[int, str, str]] = {
    "no_route": (403, "Missing Authentication Token", "MissingAuthenticationTokenException"),
    "event_too_large": (413, "Request Too Long", "BadRequestException"),
    "throttled": (500, "Internal server error", "InternalServerErrorException"),
    "function_error": (502, "Internal server error", "InternalServerErrorException"),
    "malformed": (502, "Internal server error", "InternalServerErrorException"),
}


def gateway_error(api: Api, failure: Failure) -> HttpResponse:
    """API Gateway's own answer when it has no response of the function to send (see the module's table)."""
    if api == "http":
        status, message = _HTTP_API_ANSWERS[failure]
        return HttpResponse(status, [("content-type", "application/json")], json.dumps({"message": message}).encode())
    if failure == "body_too_large":
        text = f"HTTP content length exceeded {limits.REST_API_BODY_BYTES.value} bytes."
        return HttpResponse(413, [("content-type", "text/plain; charset=utf-8")], text.encode())
    status, message, error_type = _REST_API_ANSWERS[failure]
    headers = [("content-type", "application/json"), ("x-amzn-ErrorType", error_type)]
    return HttpResponse(status, headers, json.dumps({"message": message}).encode())
