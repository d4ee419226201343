"""The HTTP edge's request context, a pure ASGI middleware (outermost of the app's own):

- **Request id.** An inbound ``X-Request-ID`` that is printable ASCII of at most 256 characters
  is the request's id; anything else (absent, too long, control or non-ASCII bytes) gets a new
  one, never an error. The id is returned in ``X-Request-ID`` on every reply, and the engine
  answers with it (a native predict body's ``id`` wins over it: the reply then carries that one).
- **Access log** (ACCESS_LOG, on by default): one INFO line per request on ``handlers.access``
  with method, path, status, latency and request id, and for a prediction (native or /v2 infer)
  model, version, arm and cache hits of inputs; the texts only with LOG_TEXTS=true. No header,
  query string or body is read for it: a token is never logged.
- **Server span** (ENABLE_TRACING): the request's root span, child of the caller's W3C
  ``traceparent`` when it sends one; the reply carries the server span's ``traceparent``.

Pure ASGI rather than ``BaseHTTPMiddleware``: no extra task per request, the body streams
through untouched, and the request's context (the record, the span) is the one the routes run in.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine import tracing
from engine.schemas import is_request_id
from engine.tracing import RequestRecord, current_request
from handlers.logs import FIELDS_ATTRIBUTE, MESSAGE_FIELDS_ATTRIBUTE

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

access_logger = logging.getLogger("handlers.access")

REQUEST_ID_HEADER = b"x-request-id"
TRACE_HEADERS = (b"traceparent", b"tracestate")


def request_id_from(value: bytes | None) -> str:
    """The inbound id when it is valid (``engine.schemas.is_request_id``), else a new one (32 hex digits)."""
    if value is not None:
        inbound = value.decode("latin-1")  # a byte over 0x7e is then a character the rule refuses
        if is_request_id(inbound):
            return inbound
    return uuid.uuid4().hex


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp, *, access_log: bool = True, log_texts: bool = False) -> None:
        self.app = app
        self.access_log = access_log
        self.log_texts = log_texts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        inbound: bytes | None = None
        for name, value in scope["headers"]:
            if name == REQUEST_ID_HEADER:
                inbound = value
                break
        record = RequestRecord(request_id_from(inbound))
        token = current_request.set(record)
        tracer = tracing.tracer()
        server = ServerSpan.for_http(tracer, scope) if tracer is not None else None
        status = 500  # unless the app starts a reply: an exception escaped it

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != REQUEST_ID_HEADER]
                headers.append((REQUEST_ID_HEADER, record.request_id.encode("ascii")))
                if server is not None:
                    headers.extend(server.response_headers())
                message = {**message, "headers": headers}
            await send(message)

        try:
            if server is None:
                await self.app(scope, receive, send_with_id)
            else:
                with server:
                    await self.app(scope, receive, send_with_id)
        finally:
            latency_ms = (time.perf_counter() - started) * 1000.0
            if server is not None:
                server.finish(status, record)
            if self.access_log:
                log_access(scope["method"], scope["path"], status, latency_ms, record, log_texts=self.log_texts)
            current_request.reset(token)


def log_access(method: str, path: str, status: int | str, latency_ms: float, record: RequestRecord, *, log_texts: bool) -> None:
    """The access line of one request (an HTTP status, or a gRPC status name for a call)."""
    if not access_logger.isEnabledFor(logging.INFO):
        return
    fields: dict[str, Any] = {"request_id": record.request_id}
    if record.model is not None:
        fields["model"] = record.model
        fields["model_version"] = record.model_version
        fields["arm"] = record.arm
        fields["cache_hits"] = record.cache_hits
        fields["inputs"] = record.inputs
        if log_texts and record.texts is not None:
            fields[record.input_field or "texts"] = list(record.texts)
    told = {"method": method, "path": path, "status": status, "latency_ms": round(latency_ms, 3)}
    extra = {MESSAGE_FIELDS_ATTRIBUTE: told, FIELDS_ATTRIBUTE: fields}
    # The record made here, not by logger.info: the caller's frame (findCaller) says nothing for this line.
    line = access_logger.makeRecord(
        access_logger.name, logging.INFO, __file__, 0, "%s %s %s %.1f ms", (method, path, status, latency_ms), None, extra=extra
    )
    access_logger.handle(line)


class ServerSpan:
    """A request's server span: started from the caller's trace context (W3C ``traceparent`` and
    ``tracestate``, HTTP headers or gRPC metadata), current while the request is answered."""

    def __init__(
        self, tracer: Tracer, name: str, carrier: dict[str, str], attributes: dict[str, Any], *, unmatched_name: str | None = None
    ) -> None:
        from opentelemetry.trace import SpanKind

        parent = _propagator().extract(carrier)
        self.span: Span = tracer.start_span(name, context=parent, kind=SpanKind.SERVER, attributes=attributes)
        self._parent = parent
        self._token: Any = None
        self._unmatched_name = unmatched_name
        """The span's name when the route is unknown (404): the path is user input, names stay low-cardinality."""

    @classmethod
    def for_http(cls, tracer: Tracer, scope: Scope) -> ServerSpan:
        carrier = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"] if name in TRACE_HEADERS}
        method, path = scope["method"], scope["path"]
        attributes = {"http.request.method": method, "url.path": path, "url.scheme": scope.get("scheme", "http")}
        return cls(tracer, f"{method} {path}", carrier, attributes, unmatched_name=method)

    def __enter__(self) -> ServerSpan:
        from opentelemetry import context, trace

        self._token = context.attach(trace.set_span_in_context(self.span, self._parent))
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, _tb: object) -> None:
        from opentelemetry import context

        if error is not None and isinstance(error, Exception):
            self.span.record_exception(error)
        if self._token is not None:
            context.detach(self._token)

    def response_headers(self) -> list[tuple[bytes, bytes]]:
        return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in self.trace_context().items()]

    def trace_context(self) -> dict[str, str]:
        """The server span's ``traceparent`` (and ``tracestate``), to send back."""
        from opentelemetry import trace

        carrier: dict[str, str] = {}
        _propagator().inject(carrier, context=trace.set_span_in_context(self.span))
        return carrier

    def finish(self, status: int, record: RequestRecord) -> None:
        """End the span of an HTTP request with its status."""
        from opentelemetry.trace import Status, StatusCode

        span = self.span
        span.set_attribute("http.response.status_code", status)
        if status >= 500:  # a 4xx is the client's error, not the server span's (OpenTelemetry's HTTP conventions)
            span.set_status(Status(StatusCode.ERROR, f"HTTP {status}"))
        if status == 404 and self._unmatched_name is not None:
            span.update_name(self._unmatched_name)
        self.end(record)

    def end(self, record: RequestRecord) -> None:
        self.span.set_attribute("request.id", record.request_id)
        self.span.end()


_PROPAGATOR: Any = None


def _propagator() -> Any:
    """W3C Trace Context (traceparent, tracestate), whatever OTEL_PROPAGATORS says."""
    global _PROPAGATOR
    if _PROPAGATOR is None:
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        _PROPAGATOR = TraceContextTextMapPropagator()
    return _PROPAGATOR
