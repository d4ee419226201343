"""The engine's request context: OpenTelemetry spans (ENABLE_TRACING on the server) and the
request-scoped record the access log prints.

Tracing is off until the server process turns it on (``configure``, once per serving process,
after any fork): until then ``span`` returns one shared no-op object, nothing of OpenTelemetry
is imported and the hot path pays a global read. On Lambda it stays off: the Powertools Tracer
(X-Ray) traces there. On, a ``TracerProvider`` exports through a ``BatchSpanProcessor`` and the
OTLP HTTP exporter, both configured by the standard ``OTEL_*`` variables (endpoint, headers,
service name, sampler), and is flushed when the process exits.

The span tree of one request::

    POST /api/v1/predict        server span (handlers.access_log): W3C traceparent in and out
    └── predict                 model.name, model.version, rollout.arm, inputs.count, cache.hits
        ├── cache.lookup        one round trip for every input
        ├── queue_wait          per job: queued until its batch started (batch.size)
        ├── tokenize            the batch's tokenisation (text kinds)
        ├── inference           the batch's runtime run
        └── shadow              a shadow version's run, with its own queue_wait/tokenize/inference

A batch is shared by several requests and runs on a worker thread, so no request's context is
there: the batcher records each job's instants in its ``BatchResult`` and every request draws its
own ``queue_wait``, ``tokenize`` and ``inference`` spans afterwards (``batch_spans``), in its own
context, with explicit start and end times.
"""

from __future__ import annotations

import atexit
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from engine.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Tracer

    from engine.batcher import BatchResult
    from engine.results import Output

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'ml-inference-system[server]'"
TRACER_NAME = "ml-inference-system"


class TracingUnavailable(RuntimeError):
    """ENABLE_TRACING=true, and the OpenTelemetry SDK or its OTLP exporter is not installed."""


class SpanLike(Protocol):
    """What the engine does with a span; an OpenTelemetry span, or the no-op one when tracing is off."""

    def is_recording(self) -> bool: ...

    def set_attribute(self, key: str, value: Any) -> None: ...


class _NoSpan:
    """Tracing off: a context manager and a span that do nothing, one shared instance."""

    __slots__ = ()

    def __enter__(self) -> _NoSpan:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def is_recording(self) -> bool:
        return False

    def set_attribute(self, key: str, value: Any) -> None:
        return None


_NO_SPAN = _NoSpan()


class _SpanScope(Protocol):
    def __enter__(self) -> SpanLike: ...

    def __exit__(self, *exc: Any) -> Any: ...


@dataclass
class _State:
    tracer: Tracer | None = None
    provider: TracerProvider | None = None


_state = _State()


# -- set-up, once per serving process --------------------------------------------------------


def _sdk() -> Any:
    """The SDK modules, or TracingUnavailable naming the extra that brings them."""
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ModuleNotFoundError as exc:
        raise TracingUnavailable(f"ENABLE_TRACING=true needs the OpenTelemetry SDK and its OTLP exporter: {INSTALL_HINT} ({exc})") from exc
    return OTLPSpanExporter, SERVICE_NAME, Resource, TracerProvider, BatchSpanProcessor


def check_available(settings: Settings) -> None:
    """Raise TracingUnavailable when ENABLE_TRACING is on and OpenTelemetry is missing (before any worker starts)."""
    if settings.enable_tracing:
        _sdk()


def configure(settings: Settings) -> bool:
    """Turn tracing on in this process when ENABLE_TRACING is true (and it is not on yet); whether it is on.

    The exporter, its endpoint (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
    default http://localhost:4318), headers and timeout, the sampler (OTEL_TRACES_SAMPLER) and the
    resource (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES) are the SDK's, read from the environment.
    Without OTEL_SERVICE_NAME the service is POWERTOOLS_SERVICE_NAME (ml-inference-system)."""
    if not settings.enable_tracing:
        return False
    if _state.provider is not None:
        return True
    exporter, service_name, resource_cls, provider_cls, batch_processor = _sdk()
    resource = resource_cls.create()
    if str(resource.attributes.get(service_name, "")).startswith("unknown_service"):
        resource = resource.merge(resource_cls({service_name: settings.powertools_service_name}))
    provider = provider_cls(resource=resource, shutdown_on_exit=False)
    provider.add_span_processor(batch_processor(exporter()))
    install(provider)
    atexit.register(uninstall)  # flushes the spans still batched when the process exits
    logger.info("tracing on: OpenTelemetry spans exported over OTLP/HTTP (service %s)", resource.attributes.get(service_name))
    return True


def install(provider: TracerProvider) -> None:
    """Trace with ``provider`` from now on (``configure`` calls it; tests pass one with an in-memory exporter)."""
    _state.provider = provider
    _state.tracer = provider.get_tracer(TRACER_NAME)


def uninstall() -> None:
    """Tracing off again; the provider is flushed and shut down."""
    provider, _state.provider, _state.tracer = _state.provider, None, None
    if provider is not None:
        provider.shutdown()


def tracer() -> Tracer | None:
    """This process's tracer, or None when tracing is off."""
    return _state.tracer


def enabled() -> bool:
    return _state.tracer is not None


# -- spans --------------------------------------------------------------------------------------


def span(name: str) -> _SpanScope:
    """A child of the current span, current inside the ``with``; an exception ending it sets its
    status to ERROR. Tracing off: the shared no-op span. Set attributes under ``if span.is_recording()``."""
    tracer = _state.tracer
    if tracer is None:
        return _NO_SPAN
    scope: _SpanScope = tracer.start_as_current_span(name)
    return scope


def set_attributes(span: SpanLike, attributes: Mapping[str, Any]) -> None:
    """Set the attributes that have a value (None is left out: OpenTelemetry has no null)."""
    for key, value in attributes.items():
        if value is not None:
            span.set_attribute(key, value)


def set_error(span: SpanLike, description: str) -> None:
    """Mark a span failed without an exception leaving it (e.g. a shadow run that timed out)."""
    if not span.is_recording():
        return
    from opentelemetry.trace import Status, StatusCode

    status_span: Any = span
    status_span.set_status(Status(StatusCode.ERROR, description))


def current_trace_id() -> str | None:
    """The current span's trace id (32 hex digits) when tracing is on and a span is current."""
    if _state.tracer is None:
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def _wall_clock() -> tuple[int, float]:
    return time.time_ns(), time.monotonic()


def _ns(at: float, clock: tuple[int, float]) -> int:
    """A ``time.monotonic()`` instant as the epoch nanoseconds OpenTelemetry takes."""
    wall_ns, now = clock
    return wall_ns - int((now - at) * 1e9)


def batch_spans(results: Iterable[BatchResult]) -> None:
    """Each job's ``queue_wait``, ``tokenize`` (when its kind reports it) and ``inference`` spans,
    children of the current span, drawn after the batches ran. No-op when tracing is off."""
    tracer = _state.tracer
    if tracer is None:
        return
    clock = _wall_clock()
    for result in results:
        attributes = {"batch.size": result.batch_size}
        _draw(tracer, "queue_wait", result.enqueued, result.started, attributes, clock)
        run_from = result.started
        if result.prepared is not None:
            _draw(tracer, "tokenize", result.started, result.prepared, attributes, clock)
            run_from = result.prepared
        _draw(tracer, "inference", run_from, result.ended, attributes, clock)


def _draw(tracer: Tracer, name: str, start: float, end: float, attributes: dict[str, Any], clock: tuple[int, float]) -> None:
    child = tracer.start_span(name, start_time=_ns(start, clock), attributes=attributes)
    child.end(end_time=_ns(end, clock))


# -- the request record -------------------------------------------------------------------------


@dataclass(slots=True)
class RequestRecord:
    """One HTTP request as its access log line tells it (handlers.access_log sets it for the
    request; the facade fills in the prediction's part). Never a token; ``texts`` only with LOG_TEXTS=true."""

    request_id: str
    model: str | None = None
    model_version: str | None = None
    arm: str | None = None
    inputs: int | None = None
    cache_hits: int | None = None
    input_field: str | None = None
    texts: Sequence[Any] | None = None


class PredictTrace:
    """One prediction as the access log and the trace tell it: the HTTP edge's request record (None
    outside an HTTP request) and the ``predict`` span (the no-op one when tracing is off). Each step
    costs an attribute check when neither records."""

    __slots__ = ("_record", "_span")

    def __init__(self, record: RequestRecord | None, span: SpanLike) -> None:
        self._record = record
        self._span = span if span.is_recording() else None

    def started(self, request_id: str, model: str, input_field: str, inputs: Sequence[Any], *, log_texts: bool) -> None:
        if self._record is not None:
            self._record.request_id = request_id  # a body id wins over the header's
            self._record.model = model
            if log_texts:
                self._record.input_field, self._record.texts = input_field, inputs
        if self._span is not None:
            set_attributes(self._span, {"request.id": request_id, "model.name": model, "inputs.count": len(inputs)})

    def routed(self, version: str, strategy: str, arm: str) -> None:
        if self._record is not None:
            self._record.model_version, self._record.arm = version, arm
        if self._span is not None:
            set_attributes(self._span, {"model.version": version, "rollout.strategy": strategy, "rollout.arm": arm})

    def answered(self, outputs: Sequence[Output]) -> None:
        if self._record is None and self._span is None:
            return
        cached = sum(1 for out in outputs if out.cached)
        if self._record is not None:
            self._record.inputs, self._record.cache_hits = len(outputs), cached
        if self._span is not None:
            self._span.set_attribute("cache.hits", cached)

    def cancelled(self) -> None:
        if self._span is not None:
            set_error(self._span, "cancelled: the caller went away")


current_request: ContextVar[RequestRecord | None] = ContextVar("current_request", default=None)
"""The record of the HTTP request being served, None outside one (Lambda SQS, the emulator's
direct calls). A task started for the request (its work, a background shadow) copies the
context, and so shares the record."""
