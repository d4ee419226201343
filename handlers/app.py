"""The FastAPI application: thin routes over the engine facade."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response, Security
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel

from engine.facade import InferenceEngine
from engine.factory import build_engine
from engine.schemas import HealthReport, ModelsReport, PredictRequest, PredictResponse, ReloadReport
from engine.settings import Settings
from handlers.auth import Authenticator
from handlers.body import RequestBodyMiddleware
from handlers.errors import error_response, install_error_handlers
from handlers.peers import Peers

logger = logging.getLogger(__name__)


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: object | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


class CacheInvalidation(BaseModel):
    deleted: int


class Probe(BaseModel):
    status: str
    ready: bool


def _errors(*statuses: int) -> dict[int | str, dict[str, object]]:
    return {status: {"model": ErrorBody} for status in statuses}


def _reload_on_sighup(engine: InferenceEngine, peers: Peers) -> None:
    """Server mode: SIGHUP re-reads the registry, as POST /admin/reload does."""
    loop = asyncio.get_running_loop()

    def reload() -> None:
        engine.reload()
        peers.publish(engine)

    def on_sighup() -> None:
        loop.run_in_executor(None, reload)

    try:
        loop.add_signal_handler(signal.SIGHUP, on_sighup)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no signals here
        logger.info("SIGHUP reload is not available in this process")


def _stop_reload_on_sighup() -> None:
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)


# Declares the X-Token header for the OpenAPI docs; the check itself is _token_checked_route's.
_TOKEN_HEADER = APIKeyHeader(name="X-Token", auto_error=False)


def _token_checked_route(auth: Authenticator) -> type[APIRoute]:
    """A route class that checks X-Token before FastAPI reads the body, so that an
    unauthenticated caller gets 401 whatever it sent, never a 422 about its body."""

    class TokenCheckedRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def checked(request: Request) -> Response:
                auth.check(request.headers.get("x-token"))
                return await handler(request)

            return checked

    return TokenCheckedRoute


class _Disconnected(Exception):
    """The client went away before its answer was ready."""


async def _wait_for_disconnect(request: Request) -> None:
    # Once the body is read, the server's next message is the disconnect: sent when the client
    # goes, or after the response (uvicorn, Mangum).
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _unless_disconnected(request: Request, work: Coroutine[Any, Any, PredictResponse]) -> PredictResponse:
    """Run ``work``; cancel it if the client disconnects first, so its queued inputs never run."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_for_disconnect(request))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise _Disconnected
    return task.result()


def create_app(settings: Settings | None = None, engine: InferenceEngine | None = None, *, manage_engine: bool = True) -> FastAPI:
    """Build the app. With ``manage_engine`` the lifespan loads the models and closes the engine;
    the Lambda edge passes an engine it already loaded and turns the lifespan off."""
    settings = settings if settings is not None else Settings()
    engine = engine if engine is not None else build_engine(settings)
    auth = Authenticator(settings)
    peers = Peers(settings.workers_dir)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if manage_engine:
            await engine.start()
            _reload_on_sighup(engine, peers)
            peers.publish(engine)
        try:
            yield
        finally:
            if manage_engine:
                peers.withdraw()
                _stop_reload_on_sighup()
                await engine.aclose()

    app = FastAPI(
        title="ml-inference-system",
        summary="Real-time ONNX model inference",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.engine = engine
    install_error_handlers(app)
    app.add_middleware(RequestBodyMiddleware, max_body_bytes=settings.max_body_bytes)

    api = settings.api_v1_str
    protected = APIRouter(route_class=_token_checked_route(auth), dependencies=[Security(_TOKEN_HEADER)])

    @protected.post(
        f"{api}/predict",
        response_model=PredictResponse,
        responses=_errors(401, 404, 413, 422, 503),
        summary="Classify one or more texts",
        tags=["inference"],
    )
    async def predict(body: PredictRequest, request: Request, response: Response) -> PredictResponse | Response:
        try:
            result = await _unless_disconnected(request, engine.predict(body, routing_key=request.headers.get("x-routing-key")))
        except _Disconnected:
            return Response(status_code=499)  # nobody reads it: the client has gone
        response.headers["X-Request-ID"] = result.request_id
        return result

    app.include_router(protected)

    @app.post(
        f"{api}/admin/reload",
        response_model=ReloadReport,
        responses=_errors(401, 403, 409),
        summary="Re-read the model registry",
        tags=["operations"],
    )
    async def reload(request: Request) -> ReloadReport:
        auth.check_admin(request.headers.get("x-admin-token"))
        before = {info.pid: info.reloads for info in peers.records() or []}
        report = await asyncio.to_thread(engine.reload_or_raise)
        peers.publish(engine)
        if peers.enabled:  # the other workers reload too; answer once each one has
            signalled = peers.signal_others()
            report.workers = await peers.wait_for(report.registry_digest or "", signalled, before)
        return report

    @app.delete(
        f"{api}/cache",
        response_model=CacheInvalidation,
        responses=_errors(401, 403, 422),
        summary="Delete cached results of a model (and version), or all",
        tags=["operations"],
    )
    async def invalidate_cache(request: Request, model: str | None = None, version: str | None = None) -> CacheInvalidation:
        auth.check_admin(request.headers.get("x-admin-token"))
        return CacheInvalidation(deleted=await engine.invalidate_cache(model, version))

    @app.get(f"{api}/models", response_model=ModelsReport, summary="List models and versions", tags=["models"])
    @app.get("/models", response_model=ModelsReport, include_in_schema=False)
    async def models() -> ModelsReport:
        return engine.list_models()

    @app.get("/health", response_model=HealthReport, responses={503: {"model": HealthReport}}, tags=["operations"])
    async def health() -> JSONResponse:
        report = engine.health()
        report.workers = peers.records()
        return JSONResponse(report.model_dump(), status_code=200 if report.ready else 503)

    @app.get("/health/live", response_model=Probe, tags=["operations"], summary="Liveness: the process answers")
    async def live() -> Probe:
        return Probe(status="alive", ready=engine.health().ready)

    @app.get(
        "/health/ready",
        response_model=Probe,
        responses={503: {"model": Probe}},
        tags=["operations"],
        summary="Readiness: default versions loaded and warmed (and on a GPU with REQUIRE_GPU)",
    )
    async def ready() -> JSONResponse:
        report = engine.health()
        probe = Probe(status=report.status, ready=report.ready)
        return JSONResponse(probe.model_dump(), status_code=200 if report.ready else 503)

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics")
    async def metrics() -> Response:
        if not settings.enable_metrics:
            return error_response(404, "not_found", "metrics are disabled (ENABLE_METRICS=false)")
        return Response(engine.render_metrics(), media_type=CONTENT_TYPE_LATEST)

    return app
