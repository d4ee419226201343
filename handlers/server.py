"""Container / local server mode: uvicorn running the FastAPI app, in one process or several."""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Generator

import uvicorn
from fastapi import FastAPI

from engine.cpus import available_cpus
from engine.settings import Settings
from handlers.app import create_app

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format=LOG_FORMAT)


def app_from_env() -> FastAPI:
    """App factory (uvicorn --factory, gunicorn 'handlers.server:app_from_env()'): each worker
    process reads the settings and builds its own engine."""
    settings = Settings()
    configure_logging(settings.log_level)
    # The model instances release the GIL while ONNX Runtime runs, and need it back for a few
    # microseconds after each batch: a short switch interval stops them waiting up to 5 ms on the
    # event loop (measured about +5% texts/s at 32 connections, bench/RESULTS.md).
    sys.setswitchinterval(settings.gil_switch_interval_ms / 1000.0)
    return create_app(settings)


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
    within SHUTDOWN_TIMEOUT_S, then unloads the models."""
    settings = settings if settings is not None else Settings()
    configure_logging(settings.log_level)
    config = uvicorn.Config(
        "handlers.server:app_from_env",
        factory=True,
        host=host or settings.host,
        port=port if port is not None else settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,
        timeout_graceful_shutdown=int(round(settings.shutdown_timeout_s)) or 1,
    )
    return _Server(config)


def serve(settings: Settings, host: str | None = None, port: int | None = None, workers: int | None = None) -> int:
    configure_logging(settings.log_level)
    host = host or settings.host
    port = port if port is not None else settings.port
    # One process per CPU measured best (README, Container mode): the processes share no GIL.
    workers = workers or settings.workers or available_cpus()
    if host not in ("127.0.0.1", "localhost", "::1") and settings.auth_token.get_secret_value() == "secret-token":
        logging.getLogger(__name__).warning("serving on %s with the default AUTH_TOKEN; set AUTH_TOKEN", host)
    if workers == 1:
        uvicorn_server(settings, host, port).run()
        return 0
    from handlers.supervisor import Supervisor

    return Supervisor(host, port, workers, shutdown_timeout_s=settings.shutdown_timeout_s).run()
