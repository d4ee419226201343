"""The execution environments of one function, and the ``Executor`` protocol the fronts call.

A pool scales out one worker per concurrent invocation up to ``max_concurrency``, reuses the
most recently used idle worker (so warm environments stay warm), and throttles beyond the max.
A timed-out or crashed worker is killed and forgotten: the next invocation starts a new one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from emulator import logs
from emulator import worker as worker_module
from emulator.python_runtime import function_arn
from emulator.template import FunctionSpec
from emulator.worker import DEFAULT_ENVIRONMENT, EnvironmentOptions, Reply, Worker, WorkerDied, WorkerTimeout

logger = logging.getLogger(__name__)

LogSink = Callable[[str, str], None]
"""Receives (function name, log text): the function's log stream."""


class Throttled(Exception):
    """Every environment the function may have is busy (TooManyRequestsException)."""


@dataclass(frozen=True)
class InvokeOptions:
    """How a front invoked: which version runs, and what the function's context carries."""

    version: str = "$LATEST"
    """The executed version: "$LATEST", or the published version an alias or number names."""
    invoked_arn: str | None = None
    """The ARN as invoked, with its qualifier (``context.invoked_function_arn``); None: the unqualified ARN."""
    client_context: str | None = None
    """The ClientContext as JSON text (decoded from ``X-Amz-Client-Context``); None when not sent."""
    trace_id: str | None = None
    """The X-Ray trace header (``Root=...;Parent=...;Sampled=...``) for ``_X_AMZN_TRACE_ID``; None: a new one."""


DEFAULT_OPTIONS = InvokeOptions()


@dataclass(frozen=True)
class Invocation:
    """One finished invocation. ``function_error`` is set for an unhandled error or a timeout."""

    request_id: str
    payload: bytes
    function_error: bool
    log: str
    duration_ms: float
    init_ms: float | None = None
    executed_version: str = "$LATEST"
    error_type: str | None = None
    """The payload's ``errorType`` when ``function_error`` (e.g. ``Runtime.OutOfMemory``)."""


class Executor(Protocol):
    """Runs a function's invocations: the emulator's own worker pool, or a Runtime API."""

    spec: FunctionSpec

    async def invoke(self, payload: bytes, request_id: str | None = None, options: InvokeOptions = DEFAULT_OPTIONS) -> Invocation:
        """Invoke once with a JSON payload; raises ``Throttled`` when no environment is free."""
        ...

    async def warm(self) -> None:
        """Start an environment now, before any invocation (``--warm-containers EAGER``)."""
        ...

    async def recycle(self) -> None:
        """Replace every environment: idle ones stop now, busy ones after their invocation (code reload)."""
        ...

    async def close(self) -> None:
        """Stop every environment."""
        ...


class WorkerPool:
    def __init__(
        self,
        spec: FunctionSpec,
        host_environment: Mapping[str, str],
        *,
        max_concurrency: int,
        log_sink: LogSink,
        options: EnvironmentOptions = DEFAULT_ENVIRONMENT,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.spec = spec
        self.max_concurrency = max_concurrency
        self._host_environment = dict(host_environment)
        self._options = options
        self._log_sink = log_sink
        self._idle: list[Worker] = []
        self._busy = 0

    async def invoke(self, payload: bytes, request_id: str | None = None, options: InvokeOptions = DEFAULT_OPTIONS) -> Invocation:
        if self._busy >= self.max_concurrency:
            raise Throttled(f"Rate Exceeded: {self.spec.name} is at its concurrency limit of {self.max_concurrency}")
        self._busy += 1
        request_id = request_id or str(uuid.uuid4())
        try:
            worker = self._idle.pop() if self._idle else None
            init_ms: float | None = None
            if worker is None:
                worker, ready = await self._start(request_id)
                init_ms = ready.duration_ms
                if worker is None:
                    return self._finish(request_id, ready, init_ms=init_ms, status="error")
            invocation = await self._run(worker, request_id, payload, init_ms)
            if worker.alive:
                self._idle.append(worker)
            return invocation
        finally:
            self._busy -= 1

    async def warm(self) -> None:
        if self._idle or self._busy:
            return
        worker, _ready = await self._start(str(uuid.uuid4()))
        if worker is not None:
            self._idle.append(worker)

    async def recycle(self) -> None:
        await self.close()

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        await asyncio.gather(*(worker.kill() for worker in idle))

    async def _start(self, request_id: str) -> tuple[Worker | None, Reply]:
        try:
            worker, ready = await Worker.start(self.spec, self._host_environment)
        except WorkerTimeout as exc:
            message = logs.timeout_message(request_id, self.spec.timeout_s) + "\n"
            timeout_s = worker_module.INIT_TIMEOUT_S + self.spec.timeout_s
            return None, Reply("init_error", _timeout_error(request_id, timeout_s), message, timeout_s * 1000.0, exc.max_memory_mb)
        except WorkerDied as exc:
            return None, Reply("init_error", _exit_error(request_id, str(exc)), "")
        if worker is not None and ready.log:
            self._log_sink(self.spec.name, ready.log)
        return worker, ready

    async def _run(self, worker: Worker, request_id: str, payload: bytes, init_ms: float | None) -> Invocation:
        request = {
            "request_id": request_id,
            "payload": payload.decode(),
            "invoked_function_arn": function_arn(self.spec.name),
            "deadline_ms": int(time.time() * 1000 + self.spec.timeout_s * 1000),
        }
        started = time.perf_counter()
        try:
            reply = await worker.invoke(request, self.spec.timeout_s)
        except asyncio.CancelledError:
            worker.abandon()
            raise
        except WorkerTimeout as exc:
            message = logs.timeout_message(request_id, self.spec.timeout_s) + "\n"
            timed_out = Reply(
                "error", _timeout_error(request_id, self.spec.timeout_s), message, self.spec.timeout_s * 1000.0, exc.max_memory_mb
            )
            return self._finish(request_id, timed_out, init_ms=init_ms, status="timeout")
        except WorkerDied as exc:
            died = Reply("error", _exit_error(request_id, str(exc)), "", (time.perf_counter() - started) * 1000.0)
            return self._finish(request_id, died, init_ms=init_ms, status="error")
        return self._finish(request_id, reply, init_ms=init_ms)

    def _finish(self, request_id: str, reply: Reply, *, init_ms: float | None, status: str | None = None) -> Invocation:
        log = (
            logs.start_line(request_id)
            + reply.log
            + logs.end_line(request_id)
            + logs.report_line(
                request_id,
                duration_ms=0.0 if reply.kind == "init_error" else reply.duration_ms,
                memory_mb=self.spec.memory_mb,
                max_memory_mb=reply.max_memory_mb,
                init_ms=init_ms,
                status=status,
            )
        )
        self._log_sink(self.spec.name, log)
        return Invocation(
            request_id=request_id,
            payload=reply.payload,
            function_error=reply.kind != "result",
            log=log,
            duration_ms=reply.duration_ms,
            init_ms=init_ms,
        )


def _timeout_error(request_id: str, timeout_s: float) -> bytes:
    return json.dumps({"errorMessage": logs.timeout_message(request_id, timeout_s), "errorType": "Sandbox.Timedout"}).encode()


def _exit_error(request_id: str, reason: str) -> bytes:
    message = f"RequestId: {request_id} Error: Runtime exited with error: {reason}"
    return json.dumps({"errorMessage": message, "errorType": "Runtime.ExitError"}).encode()


async def invoke_once(spec: FunctionSpec, payload: bytes, host_environment: Mapping[str, str], log_sink: LogSink) -> Invocation:
    """One invocation in a fresh environment (``sam local invoke``): always a cold start."""
    pool = WorkerPool(spec, host_environment, max_concurrency=1, log_sink=log_sink)
    try:
        return await pool.invoke(payload)
    finally:
        await pool.close()
