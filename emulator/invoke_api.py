"""The Lambda Invoke API (``sam local start-lambda``), as boto3's ``lambda`` client calls it.

``POST /2015-03-31/functions/{name}/invocations`` with ``X-Amz-Invocation-Type``
(RequestResponse, Event, DryRun) and ``X-Amz-Log-Type: Tail``. Errors have the rest-json shape
botocore parses into its modelled exceptions: the ``x-amzn-ErrorType`` header and a
``{"Type": "User", "message": ...}`` body.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Mapping

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from emulator import logs
from emulator.pool import Executor, Throttled
from emulator.python_runtime import function_arn

logger = logging.getLogger(__name__)

EVENT_RETRY_S = 60.0
"""How long an asynchronous (Event) invocation waits for a free environment before it is dropped."""


def _error(status: int, error_type: str, message: str, **extra: str) -> Response:
    return JSONResponse(
        {"Type": "User", "message": message, **extra},
        status_code=status,
        headers={"x-amzn-ErrorType": error_type, "x-amzn-RequestId": str(uuid.uuid4())},
    )


def _function_name(identifier: str) -> str:
    """A name, a partial ``Name:qualifier`` or a full ARN, down to the function's name."""
    if identifier.startswith("arn:"):
        identifier = identifier.split(":", 6)[6]
    return identifier.split(":", 1)[0]


class InvokeApi:
    def __init__(self, executors: Mapping[str, Executor]) -> None:
        self._executors = executors
        self._background: set[asyncio.Task[None]] = set()
        self.app = Starlette(
            routes=[
                Route("/2015-03-31/functions/{name}/invocations", self.invoke, methods=["POST"]),
                Route("/2015-03-31/functions/", self.list_functions, methods=["GET"]),
            ]
        )

    async def invoke(self, request: Request) -> Response:
        name = _function_name(request.path_params["name"])
        executor = self._executors.get(name)
        if executor is None:
            return _error(404, "ResourceNotFoundException", f"Function not found: {function_arn(name)}")
        payload = await request.body() or b"{}"
        try:
            json.loads(payload)
        except ValueError as exc:
            return _error(400, "InvalidRequestContentException", f"Could not parse request body into json: {exc}")
        invocation_type = request.headers.get("x-amz-invocation-type", "RequestResponse")
        if invocation_type == "DryRun":
            return Response(status_code=204)
        if invocation_type == "Event":
            request_id = str(uuid.uuid4())
            task = asyncio.create_task(self._invoke_later(executor, payload, request_id))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            return Response(status_code=202, headers={"x-amzn-RequestId": request_id})
        if invocation_type != "RequestResponse":
            return _error(400, "InvalidParameterValueException", f"Unsupported invocation type {invocation_type}")
        try:
            invocation = await executor.invoke(payload)
        except Throttled as exc:
            return _error(429, "TooManyRequestsException", str(exc), Reason="ReservedFunctionConcurrentInvocationLimitExceeded")
        headers = {"x-amzn-RequestId": invocation.request_id, "X-Amz-Executed-Version": "$LATEST"}
        if invocation.function_error:
            headers["X-Amz-Function-Error"] = "Unhandled"
        if request.headers.get("x-amz-log-type") == "Tail":
            headers["X-Amz-Log-Result"] = logs.tail(invocation.log)
        return Response(invocation.payload, status_code=200, headers=headers, media_type="application/json")

    async def list_functions(self, request: Request) -> Response:
        functions = [
            {
                "FunctionName": name,
                "FunctionArn": function_arn(name),
                "Handler": executor.spec.handler,
                "MemorySize": executor.spec.memory_mb,
                "Timeout": int(executor.spec.timeout_s),
                "Version": "$LATEST",
            }
            for name, executor in self._executors.items()
        ]
        return JSONResponse({"Functions": functions})

    async def _invoke_later(self, executor: Executor, payload: bytes, request_id: str) -> None:
        """Lambda queues an Event invocation and retries it while the function is throttled."""
        loop = asyncio.get_running_loop()
        deadline, delay = loop.time() + EVENT_RETRY_S, 0.05
        while True:
            try:
                await executor.invoke(payload, request_id)
                return
            except Throttled:
                if loop.time() >= deadline:
                    logger.warning("%s: event %s dropped, still throttled after %.0f s", executor.spec.name, request_id, EVENT_RETRY_S)
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
