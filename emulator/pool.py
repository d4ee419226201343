"""The execution environments of one function, and the ``Executor`` protocol the fronts call.

A pool scales out one worker per concurrent invocation up to ``max_concurrency`` (all versions
together, as Lambda's concurrency is the function's), reuses the most recently used idle worker
of the invoked version (so warm environments stay warm), and throttles beyond the max. Each
version ("$LATEST", or the published version an alias names) has environments of its own, with
its own ``AWS_LAMBDA_FUNCTION_VERSION`` and log stream. A timed-out, crashed or out-of-memory
worker is killed and forgotten: the next invocation starts a new one. ``recycle`` starts a new
generation: idle workers stop now, busy ones once their invocation is answered. ``close`` stops
every worker, busy ones too, and returns once each has exited.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from emulator import logs
from emulator.function_errors import (
    EXITED,
    OUT_OF_MEMORY,
    error_type,
    exit_error,
    exit_message,
    out_of_memory_error,
    response_too_large_error,
    timeout_error,
)
from emulator.python_runtime import function_arn
from emulator.template import FunctionSpec
from emulator.worker import (
    DEFAULT_ENVIRONMENT,
    INIT_TIMEOUT_S,
    EnvironmentOptions,
    Reply,
    Worker,
    WorkerLost,
    WorkerOutOfMemory,
    WorkerTimeout,
)

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
        """Stop every environment, the busy ones too (their invocations end as function errors), and wait until they have exited."""
        ...


class WorkerPool:
    """The emulator's own ``Executor``: environments of ``emulator.worker``, built as ``options`` says."""

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
        self._idle: dict[str, list[Worker]] = {}
        """Idle workers by version, the most recently used last."""
        self._busy: dict[str, int] = {}
        self._started: set[Worker] = set()
        """Every environment not yet known to have exited: idle, busy or initialising (``close`` stops them all)."""
        self._generation = 0
        self._closing = False
        self._no_invocations = asyncio.Event()
        self._no_invocations.set()

    async def invoke(self, payload: bytes, request_id: str | None = None, options: InvokeOptions = DEFAULT_OPTIONS) -> Invocation:
        if sum(self._busy.values()) >= self.max_concurrency:
            raise Throttled(f"Rate Exceeded: {self.spec.name} is at its concurrency limit of {self.max_concurrency}")
        version = options.version
        self._busy[version] = self._busy.get(version, 0) + 1
        self._no_invocations.clear()
        request_id = request_id or str(uuid.uuid4())
        try:
            idle = self._idle.get(version)
            worker = idle.pop() if idle else None
            init_ms: float | None = None
            if worker is None:
                worker, ready = await self._start(request_id, version)
                init_ms = ready.duration_ms
                if worker is None:
                    return self._finish(request_id, ready, version, init_ms=init_ms, status="error")
            invocation = await self._run(worker, request_id, payload, init_ms, options)
            await self._release(worker)
            return invocation
        finally:
            self._busy[version] -= 1
            if not any(self._busy.values()):
                self._no_invocations.set()

    async def warm(self) -> None:
        """One idle environment for each version the function has ("$LATEST", and its alias's version), unless it has one already."""
        versions = ["$LATEST", *filter(None, [self.spec.published_version])]
        await asyncio.gather(*(self._warm(version) for version in versions))

    async def recycle(self) -> None:
        self._generation += 1
        await self._stop_idle()

    async def close(self) -> None:
        self._closing = True  # an environment spawned from now on (by an invocation under way) is killed at once
        self._generation += 1
        self._idle = {}
        stopping, self._started = self._started, set()
        await asyncio.gather(*(worker.kill() for worker in stopping))
        await self._no_invocations.wait()  # each ends, as a function error, once its environment has exited

    async def _warm(self, version: str) -> None:
        if self._idle.get(version) or self._busy.get(version):
            return
        worker, ready = await self._start(str(uuid.uuid4()), version)
        if worker is None:
            if ready.log:
                self._log_sink(self.spec.name, ready.log)
            raise RuntimeError(f"{self.spec.name} ({version}): init failed: {ready.payload.decode(errors='replace')}")
        await self._release(worker)

    async def _release(self, worker: Worker) -> None:
        """Back to the idle ones, or stopped: gone, or of an older generation."""
        if worker.alive and worker.generation == self._generation:
            self._idle.setdefault(worker.version, []).append(worker)
        else:
            await worker.kill()

    def _spawned(self, worker: Worker) -> None:
        if self._closing:
            worker.kill_now()
            return
        self._started = {started for started in self._started if started.alive}
        self._started.add(worker)

    async def _stop_idle(self) -> None:
        idle = [worker for workers in self._idle.values() for worker in workers]
        self._idle = {}
        await asyncio.gather(*(worker.kill() for worker in idle))

    async def _start(self, request_id: str, version: str) -> tuple[Worker | None, Reply]:
        """A new environment, or None and the init failure's reply (with what the process printed)."""
        started = time.perf_counter()
        try:
            worker, ready = await Worker.start(
                self.spec, self._host_environment, self._options, version=version, generation=self._generation, on_spawn=self._spawned
            )
        except WorkerTimeout as exc:
            timeout_s = INIT_TIMEOUT_S + self.spec.timeout_s
            log = _then(exc.log, logs.timeout_message(request_id, self.spec.timeout_s) + "\n")
            return None, Reply("init_error", timeout_error(request_id, timeout_s), log, timeout_s * 1000.0, exc.max_memory_mb)
        except WorkerLost as exc:
            elapsed_ms = (time.perf_counter() - started) * 1000.0
            return None, Reply(
                "init_error", _lost_error(request_id, exc), _then(exc.log, _exit_line(request_id, exc)), elapsed_ms, exc.max_memory_mb
            )
        if worker is not None and ready.log:
            self._log_sink(self.spec.name, ready.log)
        return worker, ready

    async def _run(self, worker: Worker, request_id: str, payload: bytes, init_ms: float | None, options: InvokeOptions) -> Invocation:
        request = {
            "request_id": request_id,
            "payload": payload.decode(),
            "invoked_function_arn": options.invoked_arn or function_arn(self.spec.name),
            "deadline_ms": int(time.time() * 1000 + self.spec.timeout_s * 1000),
            "trace_id": options.trace_id or new_trace_id(),
            "client_context": _client_context(options.client_context),
        }
        started = time.perf_counter()
        try:
            reply = await worker.invoke(request, self.spec.timeout_s)
        except asyncio.CancelledError:  # its reply will never be read: the emulator stops, or the caller gave up
            await worker.kill()
            raise
        except WorkerTimeout as exc:
            log = _then(exc.log, logs.timeout_message(request_id, self.spec.timeout_s) + "\n")
            payload = timeout_error(request_id, self.spec.timeout_s)
            timed_out = Reply("error", payload, log, self.spec.timeout_s * 1000.0, exc.max_memory_mb)
            return self._finish(request_id, timed_out, worker.version, init_ms=init_ms, status="timeout")
        except WorkerLost as exc:
            elapsed_ms = (time.perf_counter() - started) * 1000.0
            lost = Reply("error", _lost_error(request_id, exc), _then(exc.log, _exit_line(request_id, exc)), elapsed_ms, exc.max_memory_mb)
            return self._finish(request_id, lost, worker.version, init_ms=init_ms, status="error")
        if reply.too_large:
            reply = dataclasses.replace(reply, kind="error", payload=response_too_large_error())
        return self._finish(request_id, reply, worker.version, init_ms=init_ms)

    def _finish(self, request_id: str, reply: Reply, version: str, *, init_ms: float | None, status: str | None = None) -> Invocation:
        function_error = reply.kind != "result"
        kind = error_type(reply.payload) if function_error else None
        report = logs.report_line(
            request_id,
            duration_ms=0.0 if reply.kind == "init_error" else reply.duration_ms,
            memory_mb=self.spec.memory_mb,
            max_memory_mb=reply.max_memory_mb,
            init_ms=init_ms,
            status=status,
            error_type=kind,
        )
        log = logs.start_line(request_id, version) + reply.log + logs.end_line(request_id) + report
        self._log_sink(self.spec.name, log)
        return Invocation(
            request_id=request_id,
            payload=reply.payload,
            function_error=function_error,
            log=log,
            duration_ms=reply.duration_ms,
            init_ms=init_ms,
            executed_version=version,
            error_type=kind,
        )


def _then(log: str, line: str) -> str:
    """The platform's line after what the function printed, on a line of its own."""
    return log + line if not log or log.endswith("\n") else f"{log}\n{line}"


def new_trace_root() -> str:
    """A new X-Ray trace id (``Root=1-<time>-<24 hex>``), as API Gateway or Lambda starts a trace."""
    return f"Root=1-{int(time.time()):08x}-{secrets.token_hex(12)}"


def new_trace_id() -> str:
    """A new X-Ray trace header, as Lambda sets ``_X_AMZN_TRACE_ID`` for an untraced invocation (not sampled)."""
    return f"{new_trace_root()};Parent={secrets.token_hex(8)};Sampled=0"


def _client_context(text: str | None) -> dict[str, Any] | None:
    """The ClientContext the function's context gets (the Invoke API has checked it is a JSON object)."""
    if text is None:
        return None
    try:
        decoded = json.loads(text)
    except ValueError:
        logger.warning("ClientContext is not JSON: the function gets none")
        return None
    return decoded if isinstance(decoded, dict) else None


def _lost_error(request_id: str, lost: WorkerLost) -> bytes:
    """The payload of an environment gone mid-phase: out of memory, or the runtime's exit."""
    if isinstance(lost, WorkerOutOfMemory):
        return out_of_memory_error(request_id)
    return exit_error(request_id, lost.reason)


def _exit_line(request_id: str, lost: WorkerLost) -> str:
    """The platform's log line when a runtime exits, and (out of memory) its error type, as Lambda logs them."""
    line = exit_message(request_id, lost.reason) + "\n"
    return line + (OUT_OF_MEMORY if isinstance(lost, WorkerOutOfMemory) else EXITED) + "\n"


async def invoke_once(
    spec: FunctionSpec,
    payload: bytes,
    host_environment: Mapping[str, str],
    log_sink: LogSink,
    options: EnvironmentOptions = DEFAULT_ENVIRONMENT,
    invoke_options: InvokeOptions = DEFAULT_OPTIONS,
) -> Invocation:
    """One invocation in a fresh environment (``sam local invoke``): always a cold start."""
    pool = WorkerPool(spec, host_environment, max_concurrency=1, log_sink=log_sink, options=options)
    try:
        return await pool.invoke(payload, options=invoke_options)
    finally:
        await pool.close()
