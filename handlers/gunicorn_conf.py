"""gunicorn settings for the seed's production command, with every worker served as one.

    gunicorn -c python:handlers.gunicorn_conf -w 4 -k uvicorn.workers.UvicornWorker 'handlers.server:app_from_env()'

As with ``mlinfer serve --workers N`` (which measured better, see the README): /metrics sums
every worker (``PROMETHEUS_MULTIPROC_DIR``, a fresh folder unless already set), a reload that
reaches one worker reaches all of them (``WORKERS_DIR``), and SIGTERM lets in-flight requests
finish within ``SHUTDOWN_TIMEOUT_S``. Each worker serves with the same connection limits
(``handlers.http_protocol``) and raises its open files limit to fit them. Binds ``HOST:PORT`` (127.0.0.1:8000) unless ``-b`` says otherwise.

This module runs in the gunicorn master before any worker starts: the folders must be in the
environment before a worker imports prometheus_client, which reads it once at import.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

_OWNED = "PROMETHEUS_MULTIPROC_DIR" not in os.environ
_RUN_DIR = Path(tempfile.mkdtemp(prefix="mlinfer-gunicorn-"))
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(_RUN_DIR / "metrics"))
os.environ.setdefault("WORKERS_DIR", str(_RUN_DIR / "workers"))
for _name in ("PROMETHEUS_MULTIPROC_DIR", "WORKERS_DIR"):
    Path(os.environ[_name]).mkdir(parents=True, exist_ok=True)

bind = [f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"]
reuse_port = True
graceful_timeout = int(float(os.environ.get("SHUTDOWN_TIMEOUT_S", "20"))) + 5
timeout = 120  # model load and warm-up happen in the worker before it answers gunicorn's heartbeat
accesslog = None


def post_fork(server: Any, worker: Any) -> None:
    # In the worker, before it builds its server: gunicorn made the worker's uvicorn config in
    # the master with uvicorn's own protocol; give it ours.
    from engine.settings import Settings
    from handlers.server import configure_logging, http_protocol

    settings = Settings()
    configure_logging(settings)
    worker.config.http = http_protocol(settings)


def child_exit(server: Any, worker: Any) -> None:
    from handlers.supervisor import forget_worker

    forget_worker(worker.pid, Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]), Path(os.environ["WORKERS_DIR"]))


def on_exit(server: Any) -> None:
    if _OWNED:
        shutil.rmtree(_RUN_DIR, ignore_errors=True)
