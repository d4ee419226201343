"""The FastAPI application: thin routes over the engine facade."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Body, FastAPI, Request, Response, Security
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.models import Example
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException

from engine.facade import InferenceEngine
from engine.factory import build_engine
from engine.schemas import (
    PREDICT_REQUEST_EXAMPLES,
    PREDICT_RESPONSE_EXAMPLES,
    HealthReport,
    ModelHealth,
    ModelsReport,
    PredictRequest,
    PredictResponse,
    ReloadReport,
)
from engine.settings import Settings
from handlers.access_log import AccessLogMiddleware
from handlers.auth import Authenticator
from handlers.body import Guard, RequestBodyMiddleware
from handlers.disconnect import Disconnected, unless_disconnected
from handlers.docs import BODY_CODES, PROTOCOL_CODES, error_examples, install_docs, named_examples, status_of
from handlers.errors import HTTP_ERRORS_STATE, ErrorReplies, install_error_handlers
from handlers.peers import Peers
from handlers.v2.rest import v2_guards, v2_router

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


_STATUS_MEANINGS = {
    401: "Token missing or wrong (checked on the headers, before the body; the connection is then closed)",
    403: "Admin endpoints are disabled (ADMIN_TOKEN unset)",
    404: "Unknown model, version or route",
    409: "Reload refused; the previous registry keeps serving",
    413: "Too many inputs, a text too long, or a body over MAX_BODY_BYTES (decoded size for gzip)",
    415: "Content-Encoding other than gzip or identity",
    422: "Not JSON, not a valid request, or inputs that do not fit the model",
    500: "The runtime failed while computing a batch",
    503: "Not ready, overloaded or past its deadline, or the token store unreadable (Retry-After says when to retry)",
}
# Sent for any request by the HTTP server itself, before a route is chosen.
_PROTOCOL_MEANINGS = {
    400: "Not valid HTTP/1.1 (malformed_request)",
    408: "Request line, headers or body not received in time",
    431: "Request headers too large or too many",
    503: "MAX_CONNECTIONS connections already open on this process (too_many_connections)",
}


def _meaning(status: int, route_statuses: tuple[int, ...]) -> str:
    parts = (_STATUS_MEANINGS[status] if status in route_statuses else None, _PROTOCOL_MEANINGS.get(status))
    return "; or: ".join(part for part in parts if part)


def _errors(*codes: str) -> dict[int | str, dict[str, Any]]:
    """The error responses of a route that sends ``codes``, and of the HTTP server, which any
    request may get: each status described, with an example per code."""
    statuses = tuple(status_of(code) for code in codes)
    examples = error_examples((*codes, *PROTOCOL_CODES))
    return {
        status: {
            "model": ErrorBody,
            "description": _meaning(status, statuses),
            "content": {"application/json": {"examples": examples[status]}},
        }
        for status in sorted(examples)
    }


def _not_ready(model: type[BaseModel], not_ready: BaseModel) -> dict[int | str, dict[str, Any]]:
    """A probe's error responses: its 503 is the probe's own body when not ready."""
    examples = {"not_ready": Example(summary="Not ready", value=not_ready.model_dump(mode="json")), **error_examples(PROTOCOL_CODES)[503]}
    content = {"application/json": {"examples": examples}}
    return {**_errors(), 503: {"model": model, "description": f"Not ready; or: {_PROTOCOL_MEANINGS[503]}", "content": content}}


_LOADING = HealthReport(
    status="loading",
    ready=False,
    active_models=[],
    providers=["CPUExecutionProvider"],
    models=[ModelHealth(name="sentiment_analysis", version="v1", state="loading")],
)
_PREDICT_BODY = Body(openapi_examples=named_examples(PREDICT_REQUEST_EXAMPLES))


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


# Declare the headers for the OpenAPI docs. The checks run twice: as the body middleware's
# guards, on the headers before the body is read, and again in the route, which stays the
# authority whatever path the middleware saw.
_TOKEN_HEADER = APIKeyHeader(name="X-Token", auto_error=False)
_ADMIN_HEADER = APIKeyHeader(name="X-Admin-Token", auto_error=False, scheme_name="AdminToken")
_METRICS_BEARER = HTTPBearer(auto_error=False, scheme_name="MetricsToken", description="METRICS_TOKEN, when it is set")


def _checked_json_route(check: Guard) -> type[APIRoute]:
    """A route class that runs ``check`` on the headers before FastAPI parses the body, and makes
    a body that is not JSON Python can read (invalid UTF-8, a number of thousands of digits,
    nesting deeper than the parser's stack) a 422 like any other invalid body (FastAPI: 400)."""

    class CheckedJsonRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def parsed(request: Request) -> Response:
                check(request.headers)
                try:
                    return await handler(request)
                except HTTPException as exc:
                    if exc.status_code != 400:
                        raise
                    cause = exc.__cause__
                    reason = f"{type(cause).__name__}: {cause}"[:200] if cause is not None else str(exc.detail)
                    error = {"type": "json_invalid", "loc": ("body",), "msg": f"the body is not readable JSON ({reason})"}
                    raise RequestValidationError([error]) from exc

            return parsed

    return CheckedJsonRoute


def create_app(settings: Settings | None = None, engine: InferenceEngine | None = None, *, manage_engine: bool = True) -> FastAPI:
    """Build the app. With ``manage_engine`` the lifespan loads the models and closes the engine;
    the Lambda edge passes an engine it already loaded and turns the lifespan off."""
    settings = settings if settings is not None else Settings()
    auth = Authenticator(settings)  # first: ENVIRONMENT=production refuses insecure tokens before any model loads
    engine = engine if engine is not None else build_engine(settings)
    peers = Peers(settings.workers_dir)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        grpc_server = None
        if manage_engine:
            if settings.grpc_port is not None:
                # Imported here, before the models load: grpcio is the server extra's, and the Lambda image has none.
                from handlers.v2.grpc_server import start_grpc
            await engine.start()
            if settings.grpc_port is not None:
                grpc_server = await start_grpc(settings, engine, auth)
            _reload_on_sighup(engine, peers)
            peers.publish(engine)
        try:
            yield {HTTP_ERRORS_STATE: engine.metrics.http_errors}
        finally:
            if manage_engine:
                peers.withdraw()
                _stop_reload_on_sighup()
                if grpc_server is not None:
                    await grpc_server.stop()
                await engine.aclose()

    app = FastAPI(
        title="ml-inference-system",
        summary="Real-time ONNX model inference",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # handlers.docs serves them, without a CDN
        redoc_url=None,
    )
    install_docs(app)
    app.state.engine = engine
    api = settings.api_v1_str
    predict_path, reload_path, cache_path = f"{api}/predict", f"{api}/admin/reload", f"{api}/cache"
    replies = ErrorReplies(engine.metrics, predict_path)
    install_error_handlers(app, replies)

    def token(headers: Headers) -> None:
        auth.check(headers.get("x-token"))

    def admin(headers: Headers) -> None:
        auth.check_admin(headers.get("x-admin-token"))

    guards: dict[tuple[str, str], Guard] = {
        ("POST", predict_path): token,
        ("POST", reload_path): admin,
        ("DELETE", cache_path): admin,
        ("GET", "/metrics"): auth.check_metrics,
        **v2_guards(auth),
    }
    app.include_router(v2_router(engine, auth))
    app.add_middleware(RequestBodyMiddleware, max_body_bytes=settings.max_body_bytes, replies=replies, guards=guards)
    # Added last, so outermost: every reply (the body middleware's refusals too) has a request id, a log line and a span.
    app.add_middleware(AccessLogMiddleware, access_log=settings.access_log, log_texts=settings.log_texts)

    protected = APIRouter(route_class=_checked_json_route(token), dependencies=[Security(_TOKEN_HEADER)])

    @protected.post(
        predict_path,
        response_model=PredictResponse,
        responses={
            200: {"content": {"application/json": {"examples": named_examples(PREDICT_RESPONSE_EXAMPLES)}}},
            **_errors(
                "unauthorized",
                "model_not_found",
                "version_not_found",
                "payload_too_large",
                "unsupported_media_type",
                "invalid_input",
                "invalid_request",
                "inference_failed",
                "model_not_ready",
                "overloaded",
                "deadline_exceeded",
                "backend_unavailable",
            ),
        },
        summary="Run texts or instances through a model",
        tags=["inference"],
    )
    async def predict(body: Annotated[PredictRequest, _PREDICT_BODY], request: Request, response: Response) -> PredictResponse | Response:
        try:
            result = await unless_disconnected(request, engine.predict(body, routing_key=request.headers.get("x-routing-key")))
        except Disconnected:
            return Response(status_code=499)  # nobody reads it: the client has gone
        response.headers["X-Request-ID"] = result.request_id
        return result

    app.include_router(protected)

    @app.post(
        reload_path,
        response_model=ReloadReport,
        responses=_errors("unauthorized", "forbidden", "reload_failed", *BODY_CODES),
        summary="Re-read the model registry",
        tags=["operations"],
        dependencies=[Security(_ADMIN_HEADER)],
    )
    async def reload(request: Request) -> ReloadReport:
        admin(request.headers)
        before = {info.pid: info.reloads for info in peers.records() or []}
        report = await asyncio.to_thread(engine.reload_or_raise)
        peers.publish(engine)
        if peers.enabled:  # the other workers reload too; answer once each one has
            signalled = peers.signal_others()
            report.workers = await peers.wait_for(report.registry_digest or "", signalled, before)
        return report

    @app.delete(
        cache_path,
        response_model=CacheInvalidation,
        responses=_errors("unauthorized", "forbidden", "invalid_input"),
        summary="Delete cached results of a model (and version), or all; 'version' needs 'model' (else 422)",
        tags=["operations"],
        dependencies=[Security(_ADMIN_HEADER)],
    )
    async def invalidate_cache(request: Request, model: str | None = None, version: str | None = None) -> CacheInvalidation:
        admin(request.headers)
        return CacheInvalidation(deleted=await engine.invalidate_cache(model, version))

    @app.get(f"{api}/models", response_model=ModelsReport, responses=_errors(), summary="List models and versions", tags=["models"])
    @app.get("/models", response_model=ModelsReport, include_in_schema=False)
    async def models() -> ModelsReport:
        return engine.list_models()

    @app.get(
        "/health",
        response_model=HealthReport,
        responses=_not_ready(HealthReport, _LOADING),
        tags=["operations"],
    )
    async def health() -> JSONResponse:
        report = engine.health()
        report.workers = peers.records()
        return JSONResponse(report.model_dump(), status_code=200 if report.ready else 503)

    @app.get("/health/live", response_model=Probe, responses=_errors(), tags=["operations"], summary="Liveness: the process answers")
    async def live() -> Probe:
        return Probe(status="alive", ready=engine.health().ready)

    @app.get(
        "/health/ready",
        response_model=Probe,
        responses=_not_ready(Probe, Probe(status="loading", ready=False)),
        tags=["operations"],
        summary="Readiness: default versions loaded and warmed (and on a GPU with REQUIRE_GPU)",
    )
    async def ready() -> JSONResponse:
        report = engine.health()
        probe = Probe(status=report.status, ready=report.ready)
        return JSONResponse(probe.model_dump(), status_code=200 if report.ready else 503)

    @app.get(
        "/metrics",
        response_class=Response,
        responses={
            200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text format"},
            **_errors(*(("unauthorized",) if auth.metrics_protected else ()), "not_found"),
        },
        tags=["operations"],
        summary="Prometheus metrics (METRICS_TOKEN, when set: Authorization: Bearer or X-Token)",
        dependencies=[Security(_METRICS_BEARER)] if auth.metrics_protected else [],
    )
    async def metrics(request: Request) -> Response:
        auth.check_metrics(request.headers)
        if not settings.enable_metrics:
            return replies.reply(request.url.path, 404, "not_found", "metrics are disabled (ENABLE_METRICS=false)")
        return Response(engine.render_metrics(), media_type=CONTENT_TYPE_LATEST)

    return app
