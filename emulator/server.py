"""``mlinfer emulate``: the HTTP front, the Invoke API and (optionally) the Runtime API, served
by one uvicorn server on one event loop, so that every front shares the functions' pools."""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping
from dataclasses import dataclass

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from emulator.http_front import HttpFront
from emulator.invoke_api import InvokeApi
from emulator.pool import Executor, LogSink, WorkerPool
from emulator.routing import Router
from emulator.runtime_api import RuntimeApi
from emulator.template import FunctionSpec

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
