"""The one table from engine errors to HTTP status codes, the one JSON error body, and the
counting and logging of every error reply the HTTP edge sends.

Under ``/v2`` (the Open Inference Protocol) the same table answers with that protocol's body,
``{"error": "<message>"}``, and its status for an invalid request, 400 (422 elsewhere)."""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from engine.errors import (
    BackendUnavailable,
    EngineError,
    Forbidden,
    InferenceFailed,
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    Overloaded,
    PayloadTooLarge,
    ReloadFailed,
    Unauthorized,
)
from engine.metrics import Metrics
from engine.throttled_log import ThrottledLog

logger = logging.getLogger(__name__)

# Most specific first: the first class an error is an instance of decides its status.
STATUS_BY_ERROR: tuple[tuple[type[EngineError], int], ...] = (
    (Unauthorized, 401),
    (Forbidden, 403),
    (ModelNotFound, 404),
    (PayloadTooLarge, 413),
    (InvalidInput, 422),
    (Overloaded, 503),
    (ModelNotReady, 503),
    (BackendUnavailable, 503),
    (ReloadFailed, 409),
    (InferenceFailed, 500),
)
DEFAULT_RETRY_AFTER_S = 1
SHED_LOG_INTERVAL_S = 10.0
# Codes of the HTTP edge itself (not engine errors), by status.
HTTP_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    411: "length_required",
    413: "payload_too_large",
    415: "unsupported_media_type",
    431: "request_headers_too_large",
}


HTTP_ERRORS_STATE = "http_errors"
"""Key of the ``http_errors`` counter in the app's lifespan state: the server's HTTP protocol
(``handlers.http_protocol``) counts the replies it sends itself (408, 431, 503) there."""


def status_for(error: EngineError) -> int:
    return next((status for cls, status in STATUS_BY_ERROR if isinstance(error, cls)), 500)


def retry_after(retry_after_s: float | None) -> str:
    """``Retry-After`` in whole seconds: the engine's estimate rounded up, at least 1; 1 without one."""
    if retry_after_s is None or not math.isfinite(retry_after_s):
        return str(DEFAULT_RETRY_AFTER_S)
    return str(max(DEFAULT_RETRY_AFTER_S, math.ceil(retry_after_s)))


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    """``{"error": {"code", "message", "details"?}}``: the shape of every error reply."""
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = jsonable_encoder(details)
    return {"error": error}


V2_PREFIX = "/v2"
V2_INFER_SUFFIX = "/infer"


def is_v2_path(path: str) -> bool:
    """A path of the Open Inference Protocol V2 edge (``handlers.v2.rest``)."""
    return path == V2_PREFIX or path.startswith(V2_PREFIX + "/")


def v2_status(status: int) -> int:
    """The V2 protocol's status for a reply of the table: an invalid request is 400, not 422."""
    return 400 if status == 422 else status


def with_first_detail(message: str, details: Any) -> str:
    """A one-line error (the V2 protocol's, which has no details field): the message and the first
    offending input the details name."""
    first = details[0] if isinstance(details, list) and details else None
    if isinstance(first, dict) and "index" in first and "problem" in first:
        return f"{message} (input {first['index']}: {first['problem']})"
    indexes = details.get("indexes") if isinstance(details, dict) else None
    if isinstance(indexes, list) and indexes:
        return f"{message} (inputs {', '.join(map(str, indexes))})"
    return message


def error_response(
    status: int,
    code: str,
    message: str,
    details: Any = None,
    *,
    retry_after_s: float | None = None,
    close: bool = False,
    v2: bool = False,
) -> JSONResponse:
    """The error reply. 503 says when to retry; 401 names the header; ``close`` ends the connection
    (the request body was not read). ``v2``: the Open Inference Protocol's body, ``{"error": "<message>"}``."""
    headers: dict[str, str] = {}
    if status == 503:
        headers["Retry-After"] = retry_after(retry_after_s)
    if status == 401:
        headers["WWW-Authenticate"] = "X-Token"
    if close:
        headers["Connection"] = "close"
    body = {"error": with_first_detail(message, details)} if v2 else error_body(code, message, details)
    return JSONResponse(body, status_code=status, headers=headers or None)


class ShedLog:
    """At most one WARNING per code every ``interval_s`` for shed requests (503 overloaded /
    deadline_exceeded), with how many were not logged. Under overload a line per request would
    be thousands a second; the counters (``inference_errors``, ``http_errors``) count each one."""

    def __init__(self, interval_s: float = SHED_LOG_INTERVAL_S) -> None:
        self._log = ThrottledLog(logger, interval_s)

    def shed(self, path: str, error: Overloaded) -> None:
        self._log.log(logging.WARNING, error.code, "%s shed (%s): %s", path, error.code, error.message)


class ErrorReplies:
    """Builds every error reply of the HTTP edge and counts it in ``http_errors{status, code}``.

    A rejection of a prediction route (the native predict, a V2 infer) that the facade did not
    count (401, 413, 415, 422 on the body, a V2 tensor that does not decode) is also a failed
    prediction request: it is counted as the facade counts one that fails before its model is
    known, in ``inference_requests{model="unknown", model_version="unresolved", outcome=code}``
    and ``inference_errors{code}``."""

    def __init__(self, metrics: Metrics | None, predict_path: str) -> None:
        self._metrics = metrics
        self._predict_path = predict_path
        self.shed_log = ShedLog()

    def _is_prediction(self, path: str) -> bool:
        return path == self._predict_path or (is_v2_path(path) and path.endswith(V2_INFER_SUFFIX))

    def reply(
        self,
        path: str,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        *,
        retry_after_s: float | None = None,
        close: bool = False,
        engine_counted: bool = False,
    ) -> JSONResponse:
        v2 = is_v2_path(path)
        status = v2_status(status) if v2 else status
        if self._metrics is not None:
            self._metrics.http_errors.labels(str(status), code).inc()
            if not engine_counted and self._is_prediction(path):
                self._metrics.requests.labels("unknown", "unresolved", code).inc()
                self._metrics.errors.labels(code).inc()
        return error_response(status, code, message, details, retry_after_s=retry_after_s, close=close, v2=v2)

    def for_error(self, path: str, method: str, error: EngineError, *, close: bool = False, engine_counted: bool = False) -> JSONResponse:
        status = status_for(error)
        if isinstance(error, Overloaded):
            self.shed_log.shed(path, error)
        elif status >= 500:
            logger.error("%s %s failed: %s", method, path, error.message, exc_info=error.__cause__)
        retry_after_s = error.retry_after_s if isinstance(error, Overloaded) else None
        return self.reply(
            path, status, error.code, error.message, error.details, retry_after_s=retry_after_s, close=close, engine_counted=engine_counted
        )


def install_error_handlers(app: FastAPI, replies: ErrorReplies) -> None:
    """Map engine errors, invalid requests and HTTP errors to the error body."""

    async def engine_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, EngineError)
        return replies.for_error(request.url.path, request.method, exc, engine_counted=exc.counted)

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        details = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()]
        return replies.reply(request.url.path, 422, "invalid_request", "the request is not a valid request", details)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = HTTP_CODES.get(exc.status_code, "http_error")
        response = replies.reply(request.url.path, exc.status_code, code, str(exc.detail))
        for key, value in (exc.headers or {}).items():
            response.headers[key] = value
        return response

    app.add_exception_handler(EngineError, engine_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
