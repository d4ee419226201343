"""The Lambda Runtime API, like the Runtime Interface Emulator: an external runtime process
(the real ``awslambdaric``, the Lambda base image's entry point) polls it for invocations.

    AWS_LAMBDA_RUNTIME_API=127.0.0.1:PORT python -m awslambdaric handlers.lambda_http.handler

It is an ``Executor`` of one environment: the runtime that polls. A second invocation while
one is pending is throttled; a timeout answers the caller, but the external process cannot be
killed from here (its late response is refused). ``POST /2015-03-31/functions/function/invocations``
invokes it directly, as on the RIE.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from emulator import logs
from emulator.pool import DEFAULT_OPTIONS, Invocation, InvokeOptions, LogSink, Throttled
from emulator.python_runtime import function_arn
from emulator.template import FunctionSpec

PREFIX = "/2018-06-01/runtime"


@dataclass
class _Pending:
    request_id: str
    payload: bytes
    deadline_ms: int
    answer: asyncio.Future[tuple[bool, bytes]] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    started: float | None = None


def _status(message: str, status: int = 202) -> Response:
    return JSONResponse({"status": message}, status_code=status)


class RuntimeApi:
    def __init__(self, spec: FunctionSpec, log_sink: LogSink) -> None:
        self.spec = spec
        self._log_sink = log_sink
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._in_flight: dict[str, _Pending] = {}
        self._init_error: bytes | None = None
        self.app = Starlette(
            routes=[
                Route(f"{PREFIX}/invocation/next", self.next_invocation, methods=["GET"]),
                Route(f"{PREFIX}/invocation/{{request_id}}/response", self.response, methods=["POST"]),
                Route(f"{PREFIX}/invocation/{{request_id}}/error", self.error, methods=["POST"]),
                Route(f"{PREFIX}/init/error", self.init_error, methods=["POST"]),
                Route("/2015-03-31/functions/function/invocations", self.invoke_endpoint, methods=["POST"]),
            ]
        )

    async def invoke(self, payload: bytes, request_id: str | None = None, options: InvokeOptions = DEFAULT_OPTIONS) -> Invocation:
        request_id = request_id or str(uuid.uuid4())
        if self._init_error is not None:
            return self._finish(request_id, False, self._init_error, 0.0, "error")
        if self._in_flight:
            raise Throttled(f"Rate Exceeded: the runtime of {self.spec.name} is busy")
        pending = _Pending(request_id, payload, int(time.time() * 1000 + self.spec.timeout_s * 1000))
        self._queue.put_nowait(pending)
        self._in_flight[request_id] = pending
        try:
            ok, body = await asyncio.wait_for(asyncio.shield(pending.answer), self.spec.timeout_s)
        except TimeoutError:
            error = {"errorMessage": logs.timeout_message(request_id, self.spec.timeout_s), "errorType": "Sandbox.Timedout"}
            return self._finish(request_id, False, json.dumps(error).encode(), self.spec.timeout_s * 1000.0, "timeout")
        finally:
            self._in_flight.pop(request_id, None)
            if not pending.answer.done():
                pending.answer.cancel()  # withdrawn: the runtime skips it if it was not picked up yet
        duration_ms = (time.perf_counter() - (pending.started or time.perf_counter())) * 1000.0
        return self._finish(request_id, ok, body, duration_ms, None)

    async def warm(self) -> None:
        """The external runtime starts on its own: nothing to warm."""

    async def recycle(self) -> None:
        """The external runtime is not the emulator's to restart."""

    async def close(self) -> None:
        for pending in self._in_flight.values():
            if not pending.answer.done():
                pending.answer.cancel()

    def _finish(self, request_id: str, ok: bool, body: bytes, duration_ms: float, status: str | None) -> Invocation:
        # The runtime's own output goes to its own stdout; only the platform lines are known here.
        # Max Memory Used is unknown for an external process: reported as 0.
        log = (
            logs.start_line(request_id)
            + (json.loads(body).get("errorMessage", "") + "\n" if status == "timeout" else "")
            + logs.end_line(request_id)
            + logs.report_line(request_id, duration_ms=duration_ms, memory_mb=self.spec.memory_mb, max_memory_mb=0, status=status)
        )
        self._log_sink(self.spec.name, log)
        return Invocation(request_id=request_id, payload=body, function_error=not ok, log=log, duration_ms=duration_ms)

    async def next_invocation(self, request: Request) -> Response:
        self._init_error = None
        pending = await self._queue.get()
        while pending.answer.done():
            pending = await self._queue.get()
        pending.started = time.perf_counter()
        headers = {
            "Lambda-Runtime-Aws-Request-Id": pending.request_id,
            "Lambda-Runtime-Deadline-Ms": str(pending.deadline_ms),
            "Lambda-Runtime-Invoked-Function-Arn": function_arn(self.spec.name),
            "Lambda-Runtime-Trace-Id": f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};Parent={uuid.uuid4().hex[:16]};Sampled=0",
        }
        return Response(pending.payload, headers=headers, media_type="application/json")

    async def response(self, request: Request) -> Response:
        return await self._answer(request, ok=True)

    async def error(self, request: Request) -> Response:
        return await self._answer(request, ok=False)

    async def init_error(self, request: Request) -> Response:
        self._init_error = await request.body()
        for pending in list(self._in_flight.values()):
            if not pending.answer.done():
                pending.answer.set_result((False, self._init_error))
        return _status("OK")

    async def invoke_endpoint(self, request: Request) -> Response:
        try:
            invocation = await self.invoke(await request.body() or b"{}")
        except Throttled as exc:
            return JSONResponse({"errorMessage": str(exc), "errorType": "TooManyRequestsException"}, status_code=429)
        return Response(invocation.payload, media_type="application/json")

    async def _answer(self, request: Request, *, ok: bool) -> Response:
        pending = self._in_flight.get(request.path_params["request_id"])
        if pending is None or pending.answer.done():
            return JSONResponse({"errorMessage": "Invalid request ID", "errorType": "InvalidRequestID"}, status_code=400)
        pending.answer.set_result((ok, await request.body()))
        return _status("OK")
