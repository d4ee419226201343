"""Container / local server mode: uvicorn running the FastAPI app, in one process or several."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import signal
import sys
import threading
from collections.abc import Generator

import uvicorn
from fastapi import FastAPI

from engine import tracing
from engine.cpus import available_cpus
from engine.settings import Settings
from handlers import logs
from handlers.app import create_app
from handlers.auth import DEFAULT_TOKEN, InsecureConfiguration, check_production
from handlers.http_protocol import ConnectionLimits, protocol_class

FD_HEADROOM = 256
"""Open files a server process needs besides its connections: model files, metrics files, Redis, logs, pipes."""

logger = logging.getLogger(__name__)


def configure_logging(settings: Settings) -> None:
    """LOG_LEVEL and LOG_FORMAT (text or json) for every logger of the process, uvicorn's included."""
    logs.configure(settings.log_level, settings.log_format)


def app_from_env() -> FastAPI:
    """App factory (uvicorn --factory, gunicorn 'handlers.server:app_from_env()'): each worker
    process reads the settings and builds its own engine, and its own tracer (ENABLE_TRACING):
    a tracer's export thread does not survive a fork."""
    settings = Settings()
    configure_logging(settings)
    tracing.configure(settings)
    # The model instances release the GIL while ONNX Runtime runs, and need it back for a few
    # microseconds after each batch: a short switch interval stops them waiting up to 5 ms on the
    # event loop (measured about +5% texts/s at 32 connections, bench/RESULTS.md).
    sys.setswitchinterval(settings.gil_switch_interval_ms / 1000.0)
    return create_app(settings)


def fit_open_files(max_connections: int) -> int:
    """Raise the soft RLIMIT_NOFILE towards the hard limit, to fit ``max_connections`` plus
    headroom, and log the result; returns the connections that fit (``max_connections``, or
    fewer, with a WARNING, when the hard limit is too low)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max_connections + FD_HEADROOM
    unlimited = resource.RLIM_INFINITY
    if soft != unlimited and soft < wanted:
        target = wanted if hard == unlimited else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            logger.warning("open files: cannot raise the soft limit from %d to %d: %s", soft, target, exc)
        else:
            logger.info("open files: soft limit raised from %d to %d (hard %s)", soft, target, _limit(hard))
            soft = target
    else:
        logger.info("open files: soft limit %s (hard %s) fits MAX_CONNECTIONS=%d", _limit(soft), _limit(hard), max_connections)
    if soft == unlimited or soft >= wanted:
        return max_connections
    kept = min(FD_HEADROOM, soft // 2)
    fit = max(1, soft - kept)
    logger.warning(
        "MAX_CONNECTIONS=%d does not fit in %d open files (hard limit %s, %d kept for the process): serving at most %d connections",
        max_connections,
        soft,
        _limit(hard),
        kept,
        fit,
    )
    return fit


def _limit(value: int) -> str:
    return "unlimited" if value == resource.RLIM_INFINITY else str(value)


def http_protocol(settings: Settings) -> type[asyncio.Protocol]:
    """The HTTP protocol of a serving process (its own, a supervisor's worker, a gunicorn worker):
    uvicorn's httptools protocol with the connection limits, once RLIMIT_NOFILE fits them."""
    return protocol_class(ConnectionLimits.from_settings(settings, max_connections=fit_open_files(settings.max_connections)))


class _Server(uvicorn.Server):
    """uvicorn's server, except that a drained SIGTERM or SIGINT exits 0 instead of re-raising
    the signal (orchestrators read a signal death as a crash)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def uvicorn_server(settings: Settings | None = None, host: str | None = None, port: int | None = None) -> uvicorn.Server:
    """The server of one process. On SIGTERM it stops accepting, lets in-flight requests finish
    within SHUTDOWN_TIMEOUT_S, then unloads the models. Connections are limited as
    ``handlers.http_protocol`` says."""
    settings = settings if settings is not None else Settings()
    configure_logging(settings)
    config = uvicorn.Config(
        "handlers.server:app_from_env",
        factory=True,
        http=http_protocol(settings),
        host=host or settings.host,
        port=port if port is not None else settings.port,
        log_level=settings.log_level.lower(),
        log_config=None,  # uvicorn's loggers propagate to the process's one handler (handlers.logs)
        access_log=False,  # the app's access log (handlers.access_log) has the request id and the model
        timeout_graceful_shutdown=int(round(settings.shutdown_timeout_s)) or 1,
    )
    return _Server(config)


def serve(settings: Settings, host: str | None = None, port: int | None = None, workers: int | None = None) -> int:
    configure_logging(settings)
    host = host or settings.host
    port = port if port is not None else settings.port
    # One process per CPU measured best (README, Container mode): the processes share no GIL.
    workers = workers or settings.workers or available_cpus()
    try:
        check_production(settings)  # once, before any worker starts, instead of each worker failing
    except InsecureConfiguration as exc:
        logging.getLogger(__name__).error("%s", exc)
        return 1
    try:
        tracing.check_available(settings)  # ENABLE_TRACING without OpenTelemetry: say how to install it, once
    except tracing.TracingUnavailable as exc:
        logging.getLogger(__name__).error("%s", exc)
        return 1
    if host not in ("127.0.0.1", "localhost", "::1") and settings.auth_token.get_secret_value() == DEFAULT_TOKEN:
        logging.getLogger(__name__).warning(
            "serving on %s with the default AUTH_TOKEN; set AUTH_TOKEN (ENVIRONMENT=production refuses to start like this)", host
        )
    if workers == 1:
        uvicorn_server(settings, host, port).run()
        return 0
    from handlers.supervisor import Supervisor

    return Supervisor(host, port, workers, shutdown_timeout_s=settings.shutdown_timeout_s).run()
