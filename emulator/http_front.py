"""The HTTP front (``sam local start-api``): each request becomes an API Gateway proxy event
for the function whose HttpApi (or Api) event matches, and the reply becomes the response."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Mapping

from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from emulator.apigateway import HttpRequest, HttpResponse, error_response, http_api_event, lambda_response, rest_api_event
from emulator.pool import Executor, Throttled
from emulator.routing import Router


def _request_id() -> str:
    # API Gateway's request ids are short base64 strings, e.g. "JKJaXmPLvHcESHA=".
    return base64.b64encode(uuid.uuid4().bytes[:10]).decode()


class HttpFront:
    """An ASGI app over the functions' executors."""

    def __init__(self, executors: Mapping[str, Executor], router: Router) -> None:
        self._executors = executors
        self._router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        client = scope.get("client") or ("127.0.0.1", 0)
        http = HttpRequest(
            method=request.method,
            path=scope.get("raw_path", scope["path"].encode()).decode("latin-1") or "/",
            raw_query=scope.get("query_string", b"").decode("latin-1"),
            headers=[(name.decode("latin-1"), value.decode("latin-1")) for name, value in scope["headers"]],
            body=await request.body(),
            source_ip=client[0],
            protocol=f"HTTP/{scope.get('http_version', '1.1')}",
        )
        request_id = _request_id()
        response = await self.handle(http, request_id)
        headers = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in response.headers]
        headers.append((b"apigw-requestid", request_id.encode()))
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})

    async def handle(self, request: HttpRequest, request_id: str) -> HttpResponse:
        match = self._router.match(request.method, request.path)
        if match is None:
            return error_response(404)
        version = match.route.payload_version
        event = http_api_event(request, match, request_id) if version == "2.0" else rest_api_event(request, match, request_id)
        try:
            invocation = await self._executors[match.function].invoke(json.dumps(event).encode())
        except Throttled:
            return error_response(429)
        if invocation.function_error:
            return error_response(500)
        return lambda_response(invocation.payload, version)
