"""``mlinfer emulate``: the HTTP front, the Invoke API and (optionally) the Runtime API, served
by one uvicorn server on one event loop, so that every front shares the functions' pools.

Stopping: SIGTERM and SIGINT both stop it within ``EmulatorConfig.shutdown_timeout_s``, and
``serve`` returns normally (exit status 0). uvicorn alone would wait for every open connection,
and a runtime's long poll on ``/invocation/next`` never closes: so the polls are ended first,
the invocations in progress get half the bound (then uvicorn cancels them), and every
environment is killed in what is left.

``RuntimeApiServer`` serves one function's Runtime API alone, on a thread of its own, for
synchronous code (a test) that runs a runtime such as awslambdaric against it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import shlex
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal

import uvicorn
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from emulator import limits, reload, worker
from emulator.http_front import HeaderCaseProtocol, HttpFront
from emulator.invoke_api import InvokeApi
from emulator.pool import DEFAULT_OPTIONS, Executor, Invocation, InvokeOptions, LogSink, WorkerPool
from emulator.routing import Router
from emulator.runtime_api import PREFIX, RuntimeApi
from emulator.runtime_process import RuntimeLaunch, write_environment_file
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
    """Dispatches each connection to the app of the port it arrived on. A request still in
    progress when the stopping server cancels it gets a 503, not a logged traceback."""

    def __init__(self, apps: Mapping[int, ASGIApp]) -> None:
        self._apps = dict(apps)
        self.stopping = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self._apps[scope["server"][1]](scope, receive, sending)
        except asyncio.CancelledError:
            if not self.stopping or scope["type"] != "http":
                raise
            if not started:
                await _STOPPING(scope, receive, send)


_STOPPING = JSONResponse({"message": "The emulator is stopping"}, status_code=503, headers={"x-amzn-ErrorType": "ServiceException"})


def _connect_host(host: str) -> str:
    """Where a local runtime reaches a server bound to ``host``."""
    return "127.0.0.1" if host in ("", "0.0.0.0") else "::1" if host == "::" else host


def runtime_api(
    spec: FunctionSpec,
    address: str,
    host_environment: Mapping[str, str],
    log_sink: LogSink,
    *,
    options: EnvironmentOptions = DEFAULT_ENVIRONMENT,
    launch: bool = False,
) -> RuntimeApi:
    """The function's Runtime API on ``address`` (``host:port``), its runtime run as the function's environment says."""
    environment = {**worker.environment(spec, host_environment, options), "AWS_LAMBDA_RUNTIME_API": address}
    runtime = RuntimeLaunch(
        command=(options.python, "-m", "awslambdaric", spec.handler),
        cwd=worker.task_root(spec, options),
        environment=environment,
        memory_limit_mb=spec.memory_mb if options.memory_limit else None,
        isolate=options.isolate,
        tmp_mb=spec.ephemeral_storage_mb,
    )
    return RuntimeApi(spec, log_sink, runtime=runtime, launch=launch)


def build_executors(
    functions: Mapping[str, FunctionSpec],
    config: EmulatorConfig,
    host_environment: Mapping[str, str],
    log_sink: LogSink,
    environments: Mapping[str, EnvironmentOptions] | None = None,
) -> dict[str, Executor]:
    """One executor per function; ``environments`` gives a function's options (None, or a function not in it: ``config.environment``)."""
    executors: dict[str, Executor] = {}
    for name, spec in functions.items():
        options = (environments or {}).get(name, config.environment)
        if config.runtime_api_port is not None and name == config.runtime_api_function:
            address = f"{_connect_host(config.host)}:{config.runtime_api_port}"
            executors[name] = runtime_api(spec, address, host_environment, log_sink, options=options, launch=config.runtime_api_launch)
        else:
            executors[name] = WorkerPool(spec, host_environment, max_concurrency=config.max_concurrency, log_sink=log_sink, options=options)
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


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling (``serve`` stops it on SIGTERM and SIGINT, and exits
    0), and whose shutdown first ends the Runtime API polls: an open poll would hold it up."""

    def __init__(self, config: uvicorn.Config, runtime_apis: Sequence[RuntimeApi], dispatch: _ByPort | None = None) -> None:
        super().__init__(config)
        self._runtime_apis = runtime_apis
        self._dispatch = dispatch

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._dispatch is not None:
            self._dispatch.stopping = True
        for api in self._runtime_apis:
            api.stop_polling()
        await super().shutdown(sockets)


class _Stopper:
    """SIGTERM and SIGINT stop the emulator, whatever it is doing: a second SIGINT forces it."""

    def __init__(self, server: _Server, timeout_s: float) -> None:
        self._server = server
        self._timeout_s = timeout_s
        self.deadline: float | None = None
        """When the emulator must be stopped (the loop's clock), from the first signal."""
        self.warming: asyncio.Task[None] | None = None

    def install(self) -> bool:
        loop = asyncio.get_running_loop()
        try:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._stop, sig)
        except (RuntimeError, ValueError):  # not the main thread: the caller stops it (should_exit)
            return False
        return True

    def remove(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)

    def _stop(self, sig: int) -> None:
        if self.deadline is None:
            self.deadline = asyncio.get_running_loop().time() + self._timeout_s
            logger.info("%s: stopping (within %.0f s)", signal.Signals(sig).name, self._timeout_s)
        self._server.handle_exit(sig, None)
        if self.warming is not None:
            self.warming.cancel()


async def _warm(executors: Mapping[str, Executor]) -> None:
    """``--warm-containers EAGER``: one environment per function now; a failed init is logged, not fatal."""
    results = await asyncio.gather(*(executor.warm() for executor in executors.values()), return_exceptions=True)
    for name, result in zip(executors, results, strict=True):
        if isinstance(result, Exception):
            logger.warning("%s: warm-up failed: %s", name, result)


async def _close(executors: Mapping[str, Executor], timeout_s: float) -> None:
    """Every environment stopped, within ``timeout_s``."""
    closing = asyncio.gather(*(executor.close() for executor in executors.values()), return_exceptions=True)
    try:
        results = await asyncio.wait_for(closing, max(timeout_s, 0.1))
    except TimeoutError:
        logger.warning("environments still stopping after %.1f s", timeout_s)
        return
    for name, result in zip(executors, results, strict=True):
        if isinstance(result, Exception):
            logger.warning("%s: stopping failed: %s", name, result)


def _code_roots(functions: Mapping[str, FunctionSpec]) -> list[Path]:
    return list(dict.fromkeys(spec.code_root for spec in functions.values()))


def _announce_runtime(name: str, api: RuntimeApi, config: EmulatorConfig) -> Path | None:
    """Log how the runtime is run; for a runtime the user starts, write its environment to a file first."""
    logger.info("Runtime API for %s on %s:%d (AWS_LAMBDA_RUNTIME_API)", name, config.host, config.runtime_api_port)
    if api.runtime is None:
        return None
    if config.runtime_api_launch:
        logger.info("Runtime for %s: %s (started by the emulator)", name, shlex.join(api.runtime.command))
        return None
    path = Path(tempfile.gettempdir()) / f"mlinfer-{name}-{config.runtime_api_port}.env"
    write_environment_file(path, api.runtime.environment)
    logger.info("Start the runtime of %s with its environment: %s", name, api.runtime.shell_command(path))
    return path


def _runtime_function(functions: Mapping[str, FunctionSpec], config: EmulatorConfig) -> EmulatorConfig:
    """The config with the Runtime API's function chosen: the one named, or the first."""
    if config.runtime_api_port is None:
        return config
    chosen = config.runtime_api_function or next(iter(functions), None)
    if chosen not in functions:
        raise ValueError(f"--runtime-api-function {chosen!r} is not a function of the template ({', '.join(functions)})")
    return dataclasses.replace(config, runtime_api_function=chosen)


def _uvicorn_config(app: _ByPort, config: EmulatorConfig) -> uvicorn.Config:
    # Half the bound for the invocations in progress to finish (uvicorn cancels them then), the rest to stop every environment.
    graceful_s = max(1, int(config.shutdown_timeout_s / 2))
    # HeaderCaseProtocol: a REST API event carries the header names as the client sent them.
    return uvicorn.Config(
        app, http=HeaderCaseProtocol, lifespan="off", log_level="warning", access_log=False, timeout_graceful_shutdown=graceful_s
    )


async def _get_ready(executors: Mapping[str, Executor], router: Router, config: EmulatorConfig, stopper: _Stopper) -> bool:
    """Warm up (EAGER), then say where everything is; False when stopped meanwhile."""
    if config.warm_containers == "EAGER":
        stopper.warming = asyncio.create_task(_warm(executors))
        await asyncio.wait({stopper.warming})
        stopper.warming = None
    if stopper.deadline is not None:
        return False
    for function, route in router.routes():
        logger.info("Mounting %s at http://%s:%d%s [%s]", function, config.host, config.port, route.path, route.method)
    logger.info("Invoke API at http://%s:%d (boto3 endpoint_url)", config.host, config.lambda_port)
    return True


async def serve(
    functions: Mapping[str, FunctionSpec],
    config: EmulatorConfig,
    host_environment: Mapping[str, str],
    log_sink: LogSink,
    environments: Mapping[str, EnvironmentOptions] | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT (then stop within ``config.shutdown_timeout_s``); ``environments``
    as in ``build_executors``."""
    config = _runtime_function(functions, config)
    executors = build_executors(functions, config, host_environment, log_sink, environments)
    router = Router(functions)
    invoke_api = InvokeApi(executors, event_retry_delays_s=config.event_retry_delays_s)
    apps: dict[int, ASGIApp] = {config.port: HttpFront(executors, router), config.lambda_port: invoke_api.app}
    runtime_apis = [executor for executor in executors.values() if isinstance(executor, RuntimeApi)]
    if config.runtime_api_port is not None:
        apps[config.runtime_api_port] = runtime_apis[0].app
    sockets = [_bind(config.host, port) for port in apps]
    dispatch = _ByPort(apps)
    server = _Server(_uvicorn_config(dispatch, config), runtime_apis, dispatch)
    stopper = _Stopper(server, config.shutdown_timeout_s)
    handles_signals = stopper.install()
    environment_file: Path | None = None
    reloading: asyncio.Task[None] | None = None
    try:
        if runtime_apis:
            environment_file = _announce_runtime(config.runtime_api_function or "", runtime_apis[0], config)
        if await _get_ready(executors, router, config, stopper):
            if config.reload:
                reloading = asyncio.create_task(reload.watch(_code_roots(functions), executors))
            await server.serve(sockets=sockets)
    finally:
        if reloading is not None:
            reloading.cancel()
            await asyncio.wait({reloading})
        await invoke_api.close()  # queued Event retries end with the emulator
        loop = asyncio.get_running_loop()
        deadline = stopper.deadline if stopper.deadline is not None else loop.time() + config.shutdown_timeout_s
        await _close(executors, deadline - loop.time() - 0.5)  # less a margin for the interpreter's own exit
        for sock in sockets:
            sock.close()
        if environment_file is not None:
            environment_file.unlink(missing_ok=True)
        if handles_signals:
            stopper.remove()


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
    to Lambda's init limit plus ``spec.timeout_s`` for the runtime to take it, then
    ``spec.timeout_s`` for its answer. ``log_sink`` gets the invocations' logs: the platform's
    START / END / REPORT lines, and between them what a launched runtime printed.

    ``launch`` runs the runtime here (``options.python -m awslambdaric``, the function's
    environment from ``host_environment`` and ``options``), as ``mlinfer emulate`` does with
    ``runtime_api_launch``; ``runtime_environment`` is that environment either way.
    """

    def __init__(
        self,
        spec: FunctionSpec,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        log_sink: LogSink = _discard,
        launch: bool = False,
        host_environment: Mapping[str, str] | None = None,
        options: EnvironmentOptions = DEFAULT_ENVIRONMENT,
    ) -> None:
        self.spec = spec
        self._log_sink = log_sink
        self._socket = _bind(host, port)
        self.address = f"{host}:{self._socket.getsockname()[1]}"
        self._launch = launch
        self._host_environment = dict(host_environment if host_environment is not None else {})
        self._options = options
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._initialised = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._api: RuntimeApi | None = None
        self._server: uvicorn.Server | None = None
        self._thread = threading.Thread(target=self._run, name=f"runtime-api-{spec.name}", daemon=True)

    @property
    def runtime_environment(self) -> Mapping[str, str]:
        """The function's runtime environment, ``AWS_LAMBDA_RUNTIME_API`` included."""
        if self._api is None or self._api.runtime is None:
            raise RuntimeError("the Runtime API server is not started")
        return self._api.runtime.environment

    def start(self, timeout_s: float = 10.0) -> None:
        self._thread.start()
        if not self._ready.wait(timeout_s) or self._server is None or not self._server.started:
            self.stop()
            raise RuntimeError(f"the Runtime API of {self.spec.name} did not start on {self.address}")

    def wait_until_initialised(self, timeout_s: float) -> bool:
        """Whether, within ``timeout_s``, the runtime finished its init: it polled for an invocation or reported an init error."""
        return self._initialised.wait(timeout_s)

    @property
    def polling(self) -> int:
        """How many runtimes wait on ``/invocation/next`` now, their connections open."""
        return self._api.polling if self._api is not None else 0

    def wait_until_polling(self, timeout_s: float) -> bool:
        """Whether, within ``timeout_s``, a runtime is waiting on ``/invocation/next`` (its connection open)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.polling > 0:
                return True
            time.sleep(0.01)
        return False

    def invoke(self, payload: bytes, request_id: str | None = None, options: InvokeOptions = DEFAULT_OPTIONS) -> Invocation:
        """One invocation through the runtime that polls; raises ``Throttled`` while one is pending."""
        if self._loop is None or self._api is None:
            raise RuntimeError("the Runtime API server is not started")
        return asyncio.run_coroutine_threadsafe(self._api.invoke(payload, request_id, options), self._loop).result()

    def recycle(self) -> None:
        """Replace the launched runtime: the next invocation starts a new one."""
        if self._loop is None or self._api is None:
            raise RuntimeError("the Runtime API server is not started")
        asyncio.run_coroutine_threadsafe(self._api.recycle(), self._loop).result()

    def stop(self) -> None:
        """Stop serving, without waiting for a runtime still polling; a launched runtime is killed."""
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
        self._api = runtime_api(self.spec, self.address, self._host_environment, self._log_sink, options=self._options, launch=self._launch)
        # log_config None: the caller's logging is left as it is; uvicorn's own loggers propagate to it.
        config = uvicorn.Config(self._app, interface="asgi3", lifespan="off", log_config=None, log_level="warning", access_log=False)
        self._server = _Server(config, [self._api])
        serving = asyncio.create_task(self._server.serve(sockets=[self._socket]))
        try:
            while not self._server.started and not serving.done():
                await asyncio.sleep(0.01)
            self._ready.set()
            await serving
        finally:
            self._ready.set()
            await self._api.close()
