"""The Lambda Runtime API, like the Runtime Interface Emulator: a runtime process (the real
``awslambdaric``, the Lambda base image's entry point) polls it for invocations.

    AWS_LAMBDA_RUNTIME_API=127.0.0.1:PORT python -m awslambdaric handlers.lambda_http.handler

It is an ``Executor`` of one environment: the runtime that polls. A second invocation while
one is pending is throttled. ``POST /2015-03-31/functions/function/invocations`` invokes it
directly, as on the RIE.

- **Dead pollers.** A runtime killed while it long-polls ``/invocation/next`` closes its
  connection. The poll races the queue against the ASGI ``http.disconnect`` and leaves the
  queue when its client is gone. An invocation that such a poll took at that very moment goes
  back to the queue (unless it has already timed out): a dead runtime is never handed one.
- **The runtime's environment.** ``RuntimeLaunch`` is what the function's runtime runs with:
  ``<python> -m awslambdaric <handler>`` in the task root, with the function's environment and
  ``AWS_LAMBDA_RUNTIME_API``. With ``launch`` the emulator runs it itself, as the RIE does: it
  starts it on the first invocation (or ``warm``), restarts it after it exits, kills it on a
  timeout (as Lambda does) and on ``close``, puts what it prints into each invocation's log
  between START and END, and watches its memory (``Runtime.OutOfMemory``, ``Max Memory Used``).
  Without ``launch`` the user starts the runtime, e.g. from ``write_environment_file`` and
  ``RuntimeLaunch.shell_command``; its output goes wherever it writes, and its late response
  after a timeout is refused.
- **Bounds.** A ``/response`` (or ``/error``) larger than Lambda's response limit is refused
  with the RIE's 413, read without buffering it, and the invocation answers
  ``Function.ResponseSizeTooLarge``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shlex
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive

from emulator import limits, logs
from emulator.function_errors import (
    EXITED,
    OUT_OF_MEMORY,
    RESPONSE_TOO_LARGE,
    error_type,
    exit_error,
    out_of_memory_error,
    response_too_large_error,
)
from emulator.limits import TooLarge, read_bounded
from emulator.pool import DEFAULT_OPTIONS, Invocation, InvokeOptions, LogSink, Throttled, new_trace_id
from emulator.python_runtime import function_arn
from emulator.runtime_process import LaunchedRuntime, RuntimeLaunch
from emulator.template import FunctionSpec

logger = logging.getLogger(__name__)

PREFIX = "/2018-06-01/runtime"
_REFUSED_RESPONSE = {"errorMessage": "Exceeded maximum allowed payload size (6291556 bytes).", "errorType": "RequestEntityTooLarge"}
"""The RIE's answer to a runtime whose /response is over the bound."""


@dataclass(frozen=True)
class _Answer:
    ok: bool
    body: bytes
    error_type: str | None = None
    status: str | None = None
    """The REPORT line's Status ("timeout", "error"); None for a result or a handled function error."""


@dataclass
class _Pending:
    request_id: str
    payload: bytes
    options: InvokeOptions
    answer: asyncio.Future[_Answer] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    started: float | None = None
    """When the runtime was handed the invocation; None while it is queued."""
    finished: float | None = None
    init_ms: float | None = None
    on_taken: Callable[[], None] | None = None
    init_output: list[str] = field(default_factory=list)
    output: list[str] = field(default_factory=list)


def _status(message: str, status: int = 202) -> Response:
    return JSONResponse({"status": message}, status_code=status)


def _client_context_header(client_context: str) -> str:
    """The header as JSON in ASCII (awslambdaric parses it as JSON); text that is not JSON goes as it is."""
    try:
        return json.dumps(json.loads(client_context), separators=(",", ":"))
    except ValueError:
        return client_context


async def _until_disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _response_body(request: Request) -> bytes | None:
    """A runtime's /response, /error or /init/error body; None when it is over Lambda's response limit (read, not kept)."""
    try:
        return await read_bounded(request.stream(), limits.SYNC_RESPONSE_BYTES.value)
    except TooLarge:
        return None


class RuntimeApi:
    def __init__(self, spec: FunctionSpec, log_sink: LogSink, *, runtime: RuntimeLaunch | None = None, launch: bool = False) -> None:
        """``runtime`` says how the function's runtime runs; ``launch`` (which needs it) runs it here."""
        if launch and runtime is None:
            raise ValueError("launching the runtime needs its RuntimeLaunch")
        self.spec = spec
        self.runtime = runtime
        self._log_sink = log_sink
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._current: _Pending | None = None
        self._init_error: bytes | None = None
        self._closing = asyncio.Event()
        self._launched = LaunchedRuntime(spec.name, runtime, self._on_output, self._on_exit) if launch and runtime is not None else None
        self._recycle = False
        self.polling = 0
        """How many ``/invocation/next`` polls wait now, their clients still connected."""
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
        if self._current is not None:
            raise Throttled(f"Rate Exceeded: the runtime of {self.spec.name} is busy")
        pending = _Pending(request_id or str(uuid.uuid4()), payload, options)
        self._current = pending
        try:
            start_error = await self._start_launched(pending.request_id)
            if start_error is not None:
                answer = start_error
            elif self._init_error is not None:
                answer = _Answer(False, self._init_error, error_type(self._init_error), "error")
            else:
                self._queue.put_nowait(pending)
                answer = await self._wait(pending)
        finally:
            self._current = None
            if not pending.answer.done():
                pending.answer.cancel()  # withdrawn: a poll skips it if it was not handed out yet
        invocation = self._finish(pending, answer)
        if self._recycle and self._launched is not None:
            self._recycle = False
            await self._launched.kill()
        return invocation

    async def warm(self) -> None:
        """Start the launched runtime now; an external runtime starts on its own."""
        error = await self._start_launched("warm-up", warm=True)
        if error is not None:
            raise RuntimeError(json.loads(error.body)["errorMessage"])

    async def _start_launched(self, request_id: str, *, warm: bool = False) -> _Answer | None:
        """Start the launched runtime if it is not running; the answer of why it cannot start, if not."""
        if self._launched is None or self._launched.running:
            return None
        self._init_error = None
        try:
            await self._launched.start(warm=warm)
        except OSError as exc:
            message = f"RequestId: {request_id} Error: cannot start the runtime {shlex.join(self._launched.command)}: {exc}"
            return _Answer(
                False,
                json.dumps({"errorMessage": message, "errorType": "Runtime.InvalidEntrypoint"}).encode(),
                "Runtime.InvalidEntrypoint",
                "error",
            )
        return None

    async def recycle(self) -> None:
        """Restart the launched runtime: now when idle, after its invocation otherwise."""
        if self._launched is None:
            return
        if self._current is None:
            await self._launched.kill()
        else:
            self._recycle = True

    def stop_polling(self) -> None:
        """End every waiting poll now (the server is stopping); an invocation in progress goes on.

        An idle launched runtime is killed rather than answered (it would log a failed poll)."""
        if self._launched is not None and self._current is None:
            self._launched.kill_now()
        self._closing.set()

    async def close(self) -> None:
        self.stop_polling()
        pending = self._current
        if pending is not None and not pending.answer.done():
            pending.answer.set_result(_Answer(False, exit_error(pending.request_id, "the emulator stopped"), EXITED, "error"))
        if self._launched is not None:
            await self._launched.kill()

    async def _wait(self, pending: _Pending) -> _Answer:
        """The answer, within Lambda's init limit plus the timeout until handed out, the timeout after."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(limits.INIT_TIMEOUT_S.value + self.spec.timeout_s) as scope:
                pending.on_taken = lambda: scope.reschedule(loop.time() + self.spec.timeout_s)
                return await asyncio.shield(pending.answer)
        except TimeoutError:
            if pending.answer.done() and not pending.answer.cancelled():
                return pending.answer.result()
            pending.answer.cancel()
            if self._launched is not None:
                self._launched.drain()
                await self._launched.kill()  # as on Lambda: the next invocation starts a new runtime
            error = {"errorMessage": logs.timeout_message(pending.request_id, self.spec.timeout_s), "errorType": "Sandbox.Timedout"}
            return _Answer(False, json.dumps(error).encode(), "Sandbox.Timedout", "timeout")

    def _finish(self, pending: _Pending, answer: _Answer) -> Invocation:
        if answer.status == "timeout":
            duration_ms = self.spec.timeout_s * 1000.0
        elif pending.started is None:
            duration_ms = 0.0
        else:
            duration_ms = ((pending.finished or time.perf_counter()) - pending.started) * 1000.0
        output = pending.init_output + pending.output
        if answer.status == "timeout":
            output.append(json.loads(answer.body)["errorMessage"] + "\n")
        # An external runtime's output goes to its own stdout, and its memory is unknown here: 0.
        peak_mb = self._launched.peak_mb() if self._launched is not None else 0
        request_id, version = pending.request_id, pending.options.version
        log = (
            logs.start_line(request_id, version)
            + "".join(output)
            + logs.end_line(request_id)
            + logs.report_line(
                request_id,
                duration_ms=duration_ms,
                memory_mb=self.spec.memory_mb,
                max_memory_mb=peak_mb,
                init_ms=pending.init_ms,
                status=answer.status,
            )
        )
        self._log_sink(self.spec.name, log)
        return Invocation(
            request_id=request_id,
            payload=answer.body,
            function_error=not answer.ok,
            log=log,
            duration_ms=duration_ms,
            init_ms=pending.init_ms,
            executed_version=version,
            error_type=None if answer.ok else answer.error_type,
        )

    def _on_output(self, text: str) -> None:
        pending = self._current
        if pending is None:
            self._log_sink(self.spec.name, text)
        elif pending.started is None:
            pending.init_output.append(text)
        else:
            pending.output.append(text)

    def _on_exit(self, reason: str, out_of_memory: bool) -> None:
        pending = self._current
        if pending is None or pending.answer.done():
            return
        if out_of_memory:
            answer = _Answer(False, out_of_memory_error(pending.request_id), OUT_OF_MEMORY, "error")
        else:
            answer = _Answer(False, exit_error(pending.request_id, reason), EXITED, "error")
        pending.finished = time.perf_counter()
        pending.answer.set_result(answer)

    async def next_invocation(self, request: Request) -> Response:
        if self._launched is not None:
            self._launched.polled()
        self._init_error = None
        self.polling += 1
        try:
            pending = await self._take(request.receive)
        finally:
            self.polling -= 1
        if pending is None:
            if self._closing.is_set() and self._launched is not None:
                self._launched.kill_now()  # it finished its invocation while the server stops
            # Stopping, or the runtime is gone (then nobody reads this).
            return JSONResponse({"errorMessage": "The Runtime API is stopping", "errorType": "Runtime.Stopping"}, status_code=503)
        return self._hand_out(pending)

    async def _take(self, receive: Receive) -> _Pending | None:
        """The next invocation for this poll; None once its client disconnected or the API stops."""
        gone = asyncio.ensure_future(_until_disconnected(receive))
        closing = asyncio.ensure_future(self._closing.wait())
        try:
            while True:
                taking = asyncio.ensure_future(self._queue.get())
                await asyncio.wait({taking, gone, closing}, return_when=asyncio.FIRST_COMPLETED)
                if not taking.done():
                    taking.cancel()  # a cancelled Queue.get leaves its item in the queue
                    return None
                pending = taking.result()
                if pending.answer.done():
                    continue  # withdrawn: it timed out before any runtime took it
                await asyncio.sleep(0)  # one more look for a disconnect that came in the same instant
                if gone.done() or closing.done():
                    self._queue.put_nowait(pending)  # back to the queue: this poll's runtime is gone
                    return None
                return pending
        finally:
            gone.cancel()
            closing.cancel()

    def _hand_out(self, pending: _Pending) -> Response:
        pending.started = time.perf_counter()
        if pending.on_taken is not None:
            pending.on_taken()
        if self._launched is not None:
            pending.init_ms = self._launched.take_init_ms()
        if pending.init_output:  # the runtime's init output comes before the invocation's START, as on Lambda
            self._log_sink(self.spec.name, "".join(pending.init_output))
            pending.init_output.clear()
        options = pending.options
        headers = {
            "Lambda-Runtime-Aws-Request-Id": pending.request_id,
            "Lambda-Runtime-Deadline-Ms": str(int(time.time() * 1000 + self.spec.timeout_s * 1000)),
            "Lambda-Runtime-Invoked-Function-Arn": options.invoked_arn or function_arn(self.spec.name),
            "Lambda-Runtime-Trace-Id": options.trace_id or new_trace_id(),
        }
        if options.client_context is not None:
            headers["Lambda-Runtime-Client-Context"] = _client_context_header(options.client_context)
        return Response(pending.payload, headers=headers, media_type="application/json")

    async def response(self, request: Request) -> Response:
        return await self._answer(request, ok=True)

    async def error(self, request: Request) -> Response:
        return await self._answer(request, ok=False)

    async def init_error(self, request: Request) -> Response:
        body = await _response_body(request)
        self._init_error = body if body is not None else response_too_large_error()
        pending = self._current
        if pending is not None and not pending.answer.done():
            if self._launched is not None:
                self._launched.drain()
            pending.answer.set_result(_Answer(False, self._init_error, error_type(self._init_error), "error"))
        return _status("OK")

    async def invoke_endpoint(self, request: Request) -> Response:
        try:
            invocation = await self.invoke(await request.body() or b"{}")
        except Throttled as exc:
            return JSONResponse({"errorMessage": str(exc), "errorType": "TooManyRequestsException"}, status_code=429)
        return Response(invocation.payload, media_type="application/json")

    async def _answer(self, request: Request, *, ok: bool) -> Response:
        pending = self._current
        if pending is None or pending.request_id != request.path_params["request_id"] or pending.started is None or pending.answer.done():
            return JSONResponse({"errorMessage": "Invalid request ID", "errorType": "InvalidRequestID"}, status_code=400)
        body = await _response_body(request)
        if pending.answer.done():  # timed out while its body was read
            return JSONResponse({"errorMessage": "Invalid request ID", "errorType": "InvalidRequestID"}, status_code=400)
        if self._launched is not None:
            self._launched.drain()
        pending.finished = time.perf_counter()
        if body is None:
            pending.answer.set_result(_Answer(False, response_too_large_error(), RESPONSE_TOO_LARGE))
            return JSONResponse(_REFUSED_RESPONSE, status_code=413)
        pending.answer.set_result(_Answer(ok, body, None if ok else error_type(body)))
        return _status("OK")
