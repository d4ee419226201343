"""A naive ONNX inference server: the baseline ``bench/bench_wrk.py`` measures ``mlinfer serve`` against.

One model file (``model.onnx`` with ``tokenizer.json`` and ``labels.json`` beside it), plain
onnxruntime, one ``session.run`` per request on the request's texts, tokenised with the engine's
``TextTokenizer`` (padded to the longest text of the request), so tokenisation is the same as
ours. It checks X-Token and answers the shape of ``POST /api/v1/predict``; ``GET /health`` is 200
once the model is loaded (before the server listens). No batching across requests, no cache,
no rollout: ``model`` and ``model_version`` in the body are accepted and echoed, not used.

Variants:

- ``--route async``: an ``async def`` route that runs the model on the event loop (the seed's
  architecture), uvicorn, 1 worker, ORT's default thread count;
- ``--route def``: a ``def`` route, which FastAPI runs in its threadpool; uvicorn, 1 worker;
- ``--workers N``: gunicorn with N uvicorn workers (each loads its own session), usually with
  ``--intra-op-threads 1``.

Run from the repository root; it binds 127.0.0.1 only::

    .venv/bin/python -m bench.peers.naive --model models/sentiment_v1/model.onnx --route async --port 8100
    .venv/bin/python -m bench.peers.naive --model models/sentiment_v1/model.onnx --route def --workers 2 --intra-op-threads 1
"""

from __future__ import annotations

import argparse
import hmac
import importlib.util
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, Header
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from engine.tokenization import TextTokenizer

HOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parents[2]  # gunicorn imports bench.peers.naive from here
DEFAULT_TOKEN = "secret-token"  # ours' default too; the benchmark sets AUTH_TOKEN
PREDICT_PATH = "/api/v1/predict"

# The gunicorn workers build the app from these (set by ``main``).
ENV_MODEL = "NAIVE_MODEL"
ENV_ROUTE = "NAIVE_ROUTE"
ENV_THREADS = "NAIVE_INTRA_OP_THREADS"

Route = Literal["async", "def"]


class PredictBody(BaseModel):
    texts: list[str] = Field(min_length=1)
    model: str | None = None
    model_version: str | None = None
    id: str | None = None


class TextResult(BaseModel):
    text: str
    prediction: str
    scores: dict[str, float]
    latency_ms: float
    cached: bool = False


class PredictReply(BaseModel):
    request_id: str
    model: str
    model_version: str
    results: list[TextResult]
    latency_ms: float


class Model:
    """The session, tokenizer and labels of one model file."""

    def __init__(self, model_path: Path, intra_op_threads: int | None) -> None:
        options = ort.SessionOptions()
        if intra_op_threads is not None:
            options.intra_op_num_threads = intra_op_threads
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(model_path), sess_options=options, providers=["CPUExecutionProvider"])
        self.tokenizer = TextTokenizer.from_file(model_path.parent / "tokenizer.json")
        self.labels: list[str] = json.loads((model_path.parent / "labels.json").read_text())
        self.output = self.session.get_outputs()[0].name

    def predict(self, body: PredictBody) -> PredictReply:
        started = time.perf_counter()
        batch = self.tokenizer.encode(body.texts)
        probabilities: np.ndarray = self.session.run([self.output], batch.feeds())[0]
        latency_ms = (time.perf_counter() - started) * 1000.0
        results = [
            TextResult(
                text=text,
                prediction=self.labels[int(np.argmax(row))],
                scores=dict(zip(self.labels, map(float, row), strict=True)),
                latency_ms=latency_ms,
            )
            for text, row in zip(body.texts, probabilities, strict=True)
        ]
        return PredictReply(
            request_id=body.id or uuid.uuid4().hex,
            model=body.model or "model",
            model_version=body.model_version or "file",
            results=results,
            latency_ms=latency_ms,
        )


def _unauthorized() -> JSONResponse:
    return JSONResponse({"error": {"code": "unauthorized", "message": "missing or invalid X-Token header"}}, status_code=401)


def create_app(model_path: Path, route: Route = "async", intra_op_threads: int | None = None, token: str | None = None) -> FastAPI:
    """The app; the model loads here, so the server is ready when it listens."""
    model = Model(model_path, intra_op_threads)
    expected = (token if token is not None else os.environ.get("AUTH_TOKEN", DEFAULT_TOKEN)).encode("utf-8")
    app = FastAPI(title=f"naive peer ({route} route)")

    def authorized(x_token: str | None) -> bool:
        return x_token is not None and hmac.compare_digest(x_token.encode("utf-8"), expected)

    if route == "async":

        @app.post(PREDICT_PATH, response_model=PredictReply)
        async def predict_async(body: PredictBody, x_token: str | None = Header(None)) -> Any:
            if not authorized(x_token):
                return _unauthorized()
            return model.predict(body)  # blocks the event loop while the model runs

    else:

        @app.post(PREDICT_PATH, response_model=PredictReply)
        def predict_sync(body: PredictBody, x_token: str | None = Header(None)) -> Any:
            if not authorized(x_token):
                return _unauthorized()
            return model.predict(body)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "active", "ready": True, "model": str(model_path), "route": route}

    return app


def app_from_env() -> FastAPI:
    """gunicorn factory (``bench.peers.naive:app_from_env()``): every worker loads its own session."""
    threads = os.environ.get(ENV_THREADS, "")
    route = os.environ.get(ENV_ROUTE, "async")
    if route not in ("async", "def"):
        raise ValueError(f"{ENV_ROUTE}={route!r}: expected async or def")
    return create_app(Path(os.environ[ENV_MODEL]), "async" if route == "async" else "def", int(threads) if threads else None)


def gunicorn_worker_class() -> str:
    """The ``uvicorn-worker`` package's class when installed, else uvicorn's own (deprecated, still shipped)."""
    return "uvicorn_worker.UvicornWorker" if importlib.util.find_spec("uvicorn_worker") else "uvicorn.workers.UvicornWorker"


def gunicorn_missing() -> str | None:
    """Why gunicorn mode cannot run here, or None."""
    if importlib.util.find_spec("gunicorn") is None:
        return "gunicorn is not installed in this environment: pip install gunicorn (add 'gunicorn>=23' to the dev extra)"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peers.naive", description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--model", type=Path, required=True, help="model.onnx, with tokenizer.json and labels.json beside it")
    parser.add_argument("--route", choices=("async", "def"), default="async", help="async def (on the event loop) or def (threadpool)")
    parser.add_argument("--port", type=int, default=8100, help="port on 127.0.0.1 (default: 8100)")
    parser.add_argument("--workers", type=int, default=1, help="1: uvicorn; more: gunicorn with that many uvicorn workers")
    parser.add_argument("--intra-op-threads", type=int, help="ORT intra-op threads per session (default: ORT's own choice)")
    args = parser.parse_args(argv)
    model_path: Path = args.model.resolve()
    for needed in (model_path, model_path.parent / "tokenizer.json", model_path.parent / "labels.json"):
        if not needed.is_file():
            parser.error(f"{needed} not found")

    if args.workers <= 1:
        import uvicorn

        app = create_app(model_path, args.route, args.intra_op_threads)
        uvicorn.run(app, host=HOST, port=args.port, log_level="warning", access_log=False)
        return 0

    missing = gunicorn_missing()
    if missing:
        print(missing, file=sys.stderr)
        return 2
    os.environ[ENV_MODEL] = str(model_path)
    os.environ[ENV_ROUTE] = args.route
    os.environ[ENV_THREADS] = "" if args.intra_op_threads is None else str(args.intra_op_threads)
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "--workers",
        str(args.workers),
        "--worker-class",
        gunicorn_worker_class(),
        "--bind",
        f"{HOST}:{args.port}",
        "--timeout",
        "120",
        "--graceful-timeout",
        "5",
        "--log-level",
        "warning",
        "--chdir",
        str(REPO_ROOT),
        "bench.peers.naive:app_from_env()",
    ]
    os.execv(sys.executable, command)  # the caller's process becomes the gunicorn master


if __name__ == "__main__":
    sys.exit(main())
