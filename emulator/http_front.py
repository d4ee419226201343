"""The HTTP front (``sam local start-api``): each request becomes an API Gateway proxy event
for the function whose HttpApi (or Api) event matches, and the reply becomes the response.

As API Gateway does: a body over the API's limit, or an event over Lambda's, never reaches the
function; a throttled or failed function and a malformed reply get API Gateway's answers
(``emulator.apigateway``), never a crash; a function with an AutoPublishAlias is invoked
through its alias, as SAM wires the API to it.

ASGI servers lowercase header names, and a REST API passes them as the client sent them:
``HeaderCaseProtocol`` is uvicorn's httptools protocol keeping the names as sent, per request,
in ``scope["extensions"][HEADER_NAMES]["names"]``. Served without it, names stay lowercase.
"""

from __future__ import annotations

import base64
import logging
import uuid
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from emulator import limits
from emulator.apigateway import (
    Api,
    HttpRequest,
    HttpResponse,
    Malformed,
    api_of,
    event_for,
    event_too_large,
    gateway_error,
    lambda_response,
)
from emulator.invoke_api import qualified_arn
from emulator.limits import TooLarge, read_bounded
from emulator.pool import Executor, InvokeOptions, Throttled
from emulator.routing import Match, Router

logger = logging.getLogger(__name__)

HEADER_NAMES = "emulator.header_names"
"""The ASGI scope extension with the request's header names as sent (``HeaderCaseProtocol``)."""


class HeaderCaseProtocol(HttpToolsProtocol):
    """uvicorn's httptools HTTP/1.1 protocol, keeping each request's header names as the client sent them."""

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope["extensions"] = {HEADER_NAMES: {"names": []}}

    def on_header(self, name: bytes, value: bytes) -> None:
        names = self.scope["extensions"][HEADER_NAMES]["names"]
        assert isinstance(names, list)
        names.append(name)
        super().on_header(name, value)


def _request_id(api: Api) -> str:
    # An HTTP API's request ids are short base64 strings (e.g. "JKJaXmPLvHcESHA="); a REST API's are UUIDs.
    return base64.b64encode(uuid.uuid4().bytes[:10]).decode() if api == "http" else str(uuid.uuid4())


def _header_names(scope: Scope) -> list[bytes]:
    """The names as sent where the server kept them, else the ASGI (lowercased) ones."""
    lowered: list[bytes] = [name for name, _ in scope["headers"]]
    extension: Any = (scope.get("extensions") or {}).get(HEADER_NAMES) or {}
    names = extension.get("names")
    if isinstance(names, list) and len(names) == len(lowered) and all(n.lower() == m for n, m in zip(names, lowered, strict=True)):
        return names
    return lowered


def _body_limit(api: Api) -> int:
    return (limits.HTTP_API_BODY_BYTES if api == "http" else limits.REST_API_BODY_BYTES).value


class HttpFront:
    """An ASGI app over the functions' executors."""

    def __init__(self, executors: Mapping[str, Executor], router: Router) -> None:
        self._executors = executors
        self._router = router
        apis = {api_of(route) for _function, route in router.routes()}
        self._unrouted_api: Api = "rest" if apis == {"rest"} else "http"
        """Who answers a request no route matches: a REST API when the template has only those."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        path = scope.get("raw_path", scope["path"].encode()).decode("latin-1") or "/"
        match = self._router.match(request.method, path)
        api = api_of(match.route) if match is not None else self._unrouted_api
        request_id = _request_id(api)
        try:
            body = await read_bounded(request.stream(), _body_limit(api))
        except TooLarge as exc:
            logger.warning("%s %s: a %d-byte body is over the API's limit; the function is not invoked", request.method, path, exc.size)
            response = gateway_error(api, "body_too_large")
        else:
            if match is None:
                response = gateway_error(api, "no_route")
            else:
                response = await self.handle(self._http_request(scope, path, body), match, request_id)
        await _send(send, response, api, request_id)

    @staticmethod
    def _http_request(scope: Scope, path: str, body: bytes) -> HttpRequest:
        client = scope.get("client") or ("127.0.0.1", 0)
        server = scope.get("server") or ("127.0.0.1", 0)
        names = _header_names(scope)
        return HttpRequest(
            method=scope["method"],
            path=path,
            raw_query=scope.get("query_string", b"").decode("latin-1"),
            headers=[(name.decode("latin-1"), value.decode("latin-1")) for name, (_, value) in zip(names, scope["headers"], strict=True)],
            body=body,
            source_ip=client[0],
            protocol=f"HTTP/{scope.get('http_version', '1.1')}",
            port=int(server[1] or 0),
        )

    async def handle(self, request: HttpRequest, match: Match, request_id: str) -> HttpResponse:
        """The response for a routed request: the function's, or API Gateway's own."""
        api = api_of(match.route)
        event = event_for(request, match, request_id)
        if event_too_large(event):
            logger.warning("%s: a %d-byte event is over Lambda's request limit; the function is not invoked", match.function, len(event))
            return gateway_error(api, "event_too_large")
        executor = self._executors[match.function]
        spec = executor.spec
        # SAM wires an API to the function's alias when it has an AutoPublishAlias.
        options = InvokeOptions(version=spec.published_version or "$LATEST", invoked_arn=qualified_arn(spec.name, spec.alias))
        try:
            invocation = await executor.invoke(event, options=options)
        except Throttled:
            return gateway_error(api, "throttled")
        if invocation.function_error:
            return gateway_error(api, "function_error")
        try:
            return lambda_response(invocation.payload, match.route)
        except Malformed as exc:
            logger.warning("%s: the reply is not a proxy integration response API Gateway accepts (%s)", match.function, exc)
            return gateway_error(api, "malformed")


async def _send(send: Send, response: HttpResponse, api: Api, request_id: str) -> None:
    headers = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in response.headers]
    if api == "http":
        headers.append((b"apigw-requestid", request_id.encode()))
    else:
        headers += [(b"x-amzn-requestid", request_id.encode()), (b"x-amz-apigw-id", request_id[:16].encode())]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})
