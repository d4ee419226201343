"""Container / local server mode: uvicorn running the FastAPI app."""

from __future__ import annotations

import logging

import uvicorn
from fastapi import FastAPI

from engine.settings import Settings
from handlers.app import create_app

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format=LOG_FORMAT)


def app_from_env() -> FastAPI:
    """uvicorn factory: each worker process reads the settings and builds its own engine."""
    settings = Settings()
    configure_logging(settings.log_level)
    return create_app(settings)


def serve(settings: Settings, host: str | None = None, port: int | None = None, workers: int | None = None) -> None:
    configure_logging(settings.log_level)
    host = host or settings.host
    if host not in ("127.0.0.1", "localhost", "::1") and settings.auth_token.get_secret_value() == "secret-token":
        logging.getLogger(__name__).warning("serving on %s with the default AUTH_TOKEN; set AUTH_TOKEN", host)
    uvicorn.run(
        "handlers.server:app_from_env",
        factory=True,
        host=host,
        port=port if port is not None else settings.port,
        workers=workers or settings.workers,
        log_level=settings.log_level.lower(),
        access_log=False,
    )
