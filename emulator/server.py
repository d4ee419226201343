"""``mlinfer emulate``: the HTTP front, the Invoke API and (optionally) the Runtime API, served
by one uvicorn server on one event loop, so that every front shares the functions' pools.

``RuntimeApiServer`` serves one function's Runtime API alone, on a thread of its own, for
synchronous code (a test) that runs an external runtime such as awslambdaric against it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from emulator import limits
from emulator.http_front import HttpFront
from emulator.invoke_api import InvokeApi
from emulator.pool import Executor, Invocation, LogSink, WorkerPool
from emulator.routing import Router
from emulator.runtime_api import PREFIX, RuntimeApi
from emulator.template import FunctionSpec
from emulator.worker import DEFAULT_ENVIRONMENT, EnvironmentOptions

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmulatorConfig:
    host: str = "127.0.0.1"
    port: int = 3000
    lambda_port: int = 3001
    max_concurrency: int = 10
    """Execution environments per function; beyond, invocations are throttled (429)."""
    runtime_api_port: int | None = None
    """Serve this function's invocations through the Runtime API on this port (like the RIE)."""
    runtime_api_function: str | None = None
    runtime_api_launch: bool = False
    """Start the runtime too (``python -m awslambdaric <handler>`` with the function's environment), as the RIE does."""
    warm_containers: Literal["EAGER", "LAZY"] = "LAZY"
    """EAGER: one environment per function starts with the emulator; LAZY: on its first invocation."""
    reload: bool = True
    """Replace warm environments when a source file of a function changes (watchfiles)."""
    event_retry_delays_s: tuple[float, ...] = limits.EVENT_RETRY_DELAYS_S
    """The waits before each retry of a failed Event invocation: AWS's two, by default."""
    environment: EnvironmentOptions = DEFAULT_ENVIRONMENT
    shutdown_timeout_s: float = 5.0
    """SIGTERM or SIGINT stops the emulator within this, whatever is still polling or running."""


class _ByPort:
    """Dispatches each connection to the app of the port it arrived on."""

    def __init__(self, apps: Mapping[int, ASGIApp]) -> None:
        self._apps = dict(apps)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._apps[scope["server"][1]](scope, receive, send)


def build_executors(
    functions: Mapping[str, FunctionSpec], config: EmulatorConfig, host_environment: Mapping[str, str], log_sink: LogSink
) -> dict[str, Executor]:
    executors: dict[str, Executor] = {}
    for name, spec in functions.items():
        if config.runtime_api_port is not None and name == config.runtime_api_function:
            executors[name] = RuntimeApi(spec, log_sink)
        else:
            executors[name] = WorkerPool(spec, host_environment, max_concurrency=config.max_concurrency, log_sink=log_sink)
    return executors


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit it: without it, the response body (a second small write)
    # waits out the client's delayed ACK, 40 ms per request.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


async def serve(
    functions: Mapping[str, FunctionSpec], config: EmulatorConfig, host_environment: Mapping[str, str], log_sink: LogSink
) -> None:
    if config.runtime_api_port is not None:
        chosen = config.runtime_api_function or next(iter(functions), None)
        if chosen not in functions:
            raise ValueError(f"--runtime-api-function {chosen!r} is not a function of the template ({', '.join(functions)})")
        config = EmulatorConfig(**{**config.__dict__, "runtime_api_function": chosen})
    executors = build_executors(functions, config, host_environment, log_sink)
    router = Router(functions)
    invoke_api = InvokeApi(executors)
    apps: dict[int, ASGIApp] = {config.port: HttpFront(executors, router), config.lambda_port: invoke_api.app}
    for name, executor in executors.items():
        if isinstance(executor, RuntimeApi) and config.runtime_api_port is not None:
            apps[config.runtime_api_port] = executor.app
            logger.info("Runtime API for %s on %s:%d (AWS_LAMBDA_RUNTIME_API)", name, config.host, config.runtime_api_port)
    sockets = [_bind(config.host, port) for port in apps]
    for function, route in router.routes():
        logger.info("Mounting %s at http://%s:%d%s [%s]", function, config.host, config.port, route.path, route.method)
    logger.info("Invoke API at http://%s:%d (boto3 endpoint_url)", config.host, config.lambda_port)
    server = uvicorn.Server(uvicorn.Config(_ByPort(apps), lifespan="off", log_level="warning", access_log=False))
    try:
        await server.serve(sockets=sockets)
    finally:
        for executor in executors.values():
            await executor.close()
        for sock in sockets:
            sock.close()


def _discard(function: str, text: str) -> None:
    pass


class RuntimeApiServer:
    """One function's Runtime API on its own thread and event loop, started and stopped with ``with``::

        spec = FunctionSpec("Echo", "handlers.lambda_http.handler", Path("."), timeout_s=60)
        with RuntimeApiServer(spec) as api:
            env = {**os.environ, "AWS_LAMBDA_RUNTIME_API": api.address}
            runtime = subprocess.Popen([sys.executable, "-m", "awslambdaric", spec.handler], env=env)
            assert api.wait_until_initialised(120), "the runtime neither polled nor reported an init error"
            invocation = api.invoke(b'{"n": 1}')  # blocks until the runtime answers
            runtime.terminate()

    ``port`` 0 binds a free port; ``address`` is the ``host:port`` bound. An invocation waits up
    to ``spec.timeout_s`` for the runtime's answer, counted from the invoke: its init included
    when the runtime is still initialising, hence ``wait_until_initialised`` first.
    ``log_sink`` gets the platform's START / END / REPORT lines; the runtime's own output goes
    wherever its process writes.
    """

    def __init__(self, spec: FunctionSpec, *, host: str = "127.0.0.1", port: int = 0, log_sink: LogSink = _discard) -> None:
        self.spec = spec
        self._log_sink = log_sink
        self._socket = _bind(host, port)
        self.address = f"{host}:{self._socket.getsockname()[1]}"
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._initialised = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._api: RuntimeApi | None = None
        self._server: uvicorn.Server | None = None
        self._thread = threading.Thread(target=self._run, name=f"runtime-api-{spec.name}", daemon=True)

    def start(self, timeout_s: float = 10.0) -> None:
        self._thread.start()
        if not self._ready.wait(timeout_s) or self._server is None or not self._server.started:
            self.stop()
            raise RuntimeError(f"the Runtime API of {self.spec.name} did not start on {self.address}")

    def wait_until_initialised(self, timeout_s: float) -> bool:
        """Whether, within ``timeout_s``, the runtime finished its init: it polled for an invocation or reported an init error."""
        return self._initialised.wait(timeout_s)

    def invoke(self, payload: bytes, request_id: str | None = None) -> Invocation:
        """One invocation through the runtime that polls; raises ``Throttled`` while one is pending."""
        if self._loop is None or self._api is None:
            raise RuntimeError("the Runtime API server is not started")
        return asyncio.run_coroutine_threadsafe(self._api.invoke(payload, request_id), self._loop).result()

    def stop(self) -> None:
        """Stop serving, without waiting for a runtime still polling."""
        self._stopping.set()
        if self._server is not None:
            self._server.should_exit = self._server.force_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self._socket.close()

    def __enter__(self) -> RuntimeApiServer:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.stop()

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _app(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self._api is not None
        path = scope.get("path", "")
        if path == f"{PREFIX}/invocation/next":
            self._initialised.set()
        try:
            await self._api.app(scope, receive, send)
        except asyncio.CancelledError:
            if not self._stopping.is_set():
                raise
            # Stopped while a runtime was polling: the poll ends with the server, quietly.
        finally:
            if path == f"{PREFIX}/init/error":
                self._initialised.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._api = RuntimeApi(self.spec, self._log_sink)
        # log_config None: the caller's logging is left as it is; uvicorn's own loggers propagate to it.
        config = uvicorn.Config(self._app, interface="asgi3", lifespan="off", log_config=None, log_level="warning", access_log=False)
        self._server = uvicorn.Server(config)
        serving = asyncio.create_task(self._server.serve(sockets=[self._socket]))
        try:
            while not self._server.started and not serving.done():
                await asyncio.sleep(0.01)
            self._ready.set()
            await serving
        finally:
            self._ready.set()
            await self._api.close()
