"""The Open Inference Protocol V2 over gRPC: KServe's ``inference.GRPCInferenceService`` on GRPC_PORT.

A ``grpc.aio`` server on the HTTP app's event loop, over the same ``V2DataPlane`` as the REST
edge, so the same engine, rollout, cache, batching and limits answer both. ``ModelInfer`` needs
the API token in the call metadata (``x-token``, or ``authorization: Bearer <token>``); the
health and metadata calls need none, as over REST. Inputs come as typed ``contents`` or as
``raw_input_contents``; outputs go back as ``raw_output_contents``, as Triton sends them.

Messages are decoded and encoded by ``handlers.v2.grpc_messages``.

- **Errors** map to status codes in one table (``STATUS_BY_ERROR``), with the engine's message
  as the details and its code in the ``error-code`` trailer; UNAVAILABLE says when to retry
  (``retry-after`` in seconds, and ``grpc-retry-pushback-ms`` for gRPC's own retry policy).
  Anything else is INTERNAL, logged: no call ends with an unhandled exception.
- **Size.** A message over MAX_BODY_BYTES is refused by gRPC itself with RESOURCE_EXHAUSTED.
- **Workers.** With ``mlinfer serve --workers N`` (or gunicorn) every worker binds the port with
  ``SO_REUSEPORT`` and the kernel spreads connections over them; a single process binds it
  alone, so a port already in use fails the start instead of being shared.
- **Shutdown.** On SIGTERM the server refuses new calls at once (GOAWAY: clients reconnect
  elsewhere) and lets those in flight finish within SHUTDOWN_TIMEOUT_S, while HTTP drains too;
  the app's shutdown awaits it before the engine closes.

The protocol's messages live in protobuf's default pool as ``inference.*``: a process that also
imports another copy of them (``tritonclient.grpc``) fails at import. Clients run elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any, TypeVar

try:
    import grpc

    from handlers.v2.proto import grpc_predict_v2_pb2 as pb
    from handlers.v2.proto import grpc_predict_v2_pb2_grpc as pb_grpc
except ImportError as exc:  # the Lambda image installs neither grpcio nor protobuf
    raise ImportError(f"GRPC_PORT is set but gRPC is not installed ({exc}): pip install 'ml-inference-system[server]'") from exc

from engine import tracing
from engine.errors import (
    BackendUnavailable,
    DeadlineExceeded,
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
from engine.facade import InferenceEngine
from engine.settings import Settings
from engine.tracing import RequestRecord, current_request
from handlers.access_log import TRACE_HEADERS, ServerSpan, log_access, request_id_from
from handlers.auth import Authenticator, bearer
from handlers.errors import ShedLog, retry_after, with_first_detail
from handlers.v2.dataplane import V2DataPlane
from handlers.v2.grpc_messages import infer_request, infer_response, metadata_response

logger = logging.getLogger(__name__)

# Most specific first: the first class an error is an instance of decides its status.
STATUS_BY_ERROR: tuple[tuple[type[EngineError], grpc.StatusCode], ...] = (
    (Unauthorized, grpc.StatusCode.UNAUTHENTICATED),
    (Forbidden, grpc.StatusCode.PERMISSION_DENIED),
    (ModelNotFound, grpc.StatusCode.NOT_FOUND),
    (PayloadTooLarge, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
    (Overloaded, grpc.StatusCode.UNAVAILABLE),
    (ModelNotReady, grpc.StatusCode.UNAVAILABLE),
    (BackendUnavailable, grpc.StatusCode.UNAVAILABLE),
    (ReloadFailed, grpc.StatusCode.FAILED_PRECONDITION),
    (InferenceFailed, grpc.StatusCode.INTERNAL),
)

SERVICE = "inference.GRPCInferenceService"


def status_for(error: EngineError) -> grpc.StatusCode:
    return next((status for cls, status in STATUS_BY_ERROR if isinstance(error, cls)), grpc.StatusCode.INTERNAL)


def _metadata(context: grpc.aio.ServicerContext, key: str) -> str | None:
    return next((str(item.value) for item in context.invocation_metadata() or () if item.key == key), None)


_Request = TypeVar("_Request")
_Response = TypeVar("_Response")
_Method = Callable[[Any, _Request, grpc.aio.ServicerContext], Awaitable[_Response]]


def _answered(method: _Method[_Request, _Response]) -> _Method[_Request, _Response]:
    """Every call ends with its answer or a status from the table, never an unhandled exception;
    and has a request id, an access line and a server span, as an HTTP request has."""

    async def answer(self: InferenceService, request: _Request, context: grpc.aio.ServicerContext) -> _Response:
        with _Call(method.__name__, context, self.settings) as call:
            await context.send_initial_metadata(call.reply_metadata())
            try:
                return await method(self, request, context)
            except EngineError as exc:
                call.status = status_for(exc)
                await self.abort(context, method.__name__, exc)
            except Exception:
                call.status = grpc.StatusCode.INTERNAL
                logger.exception("%s/%s failed", SERVICE, method.__name__)
                await context.abort(grpc.StatusCode.INTERNAL, "internal error: the server failed to answer this call (logged)")
        raise AssertionError("unreachable: context.abort raises")  # pragma: no cover

    answer.__name__ = method.__name__
    return answer


# The statuses that are the server's failure, not the caller's (OpenTelemetry's gRPC server conventions).
_SERVER_FAILURES = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


class _Call:
    """One call's request context: its id (the ``x-request-id`` metadata when valid, else a new
    one, sent back in the initial metadata), its access line (ACCESS_LOG) and its server span
    (ENABLE_TRACING, a child of the caller's ``traceparent`` metadata)."""

    def __init__(self, name: str, context: grpc.aio.ServicerContext, settings: Settings) -> None:
        metadata = {key: value for key, value in (context.invocation_metadata() or ()) if isinstance(value, str)}
        inbound = metadata.get("x-request-id")
        self.record = RequestRecord(request_id_from(inbound.encode("utf-8") if inbound is not None else None))
        self.path = f"/{SERVICE}/{name}"
        self.status = grpc.StatusCode.OK
        self._settings = settings
        self._started = time.perf_counter()
        self._token: Any = None
        tracer = tracing.tracer()
        self._span: ServerSpan | None = None
        if tracer is not None:
            carrier = {key.decode(): metadata[key.decode()] for key in TRACE_HEADERS if key.decode() in metadata}
            attributes = {"rpc.system": "grpc", "rpc.service": SERVICE, "rpc.method": name}
            self._span = ServerSpan(tracer, f"{SERVICE}/{name}", carrier, attributes)

    def reply_metadata(self) -> tuple[tuple[str, str], ...]:
        trace_context = self._span.trace_context() if self._span is not None else {}
        return (("x-request-id", self.record.request_id), *trace_context.items())

    def __enter__(self) -> _Call:
        self._token = current_request.set(self.record)
        if self._span is not None:
            self._span.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, traceback: Any) -> None:
        if isinstance(error, asyncio.CancelledError):
            self.status = grpc.StatusCode.CANCELLED
        if self._span is not None:
            self._span.__exit__(kind, error if self.status == grpc.StatusCode.INTERNAL else None, traceback)
            self._span.span.set_attribute("rpc.grpc.status_code", self.status.value[0])
            if self.status in _SERVER_FAILURES:
                from opentelemetry.trace import Status, StatusCode

                self._span.span.set_status(Status(StatusCode.ERROR, self.status.name))
            self._span.end(self.record)
        if self._settings.access_log:
            latency_ms = (time.perf_counter() - self._started) * 1000.0
            log_access("GRPC", self.path, self.status.name, latency_ms, self.record, log_texts=self._settings.log_texts)
        current_request.reset(self._token)


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    """The protocol's calls over the data plane."""

    def __init__(self, plane: V2DataPlane, auth: Authenticator, engine: InferenceEngine, settings: Settings) -> None:
        self.settings = settings
        self._plane = plane
        self._auth = auth
        self._metrics = engine.metrics
        self._shed_log = ShedLog()

    async def abort(self, context: grpc.aio.ServicerContext, call: str, error: EngineError) -> None:
        status = status_for(error)
        trailers: list[tuple[str, str]] = [("error-code", error.code)]
        details = with_first_detail(error.message, error.details)
        if status == grpc.StatusCode.UNAVAILABLE:
            retry_s = retry_after(error.retry_after_s if isinstance(error, Overloaded) else None)
            trailers += [("retry-after", retry_s), ("grpc-retry-pushback-ms", str(int(retry_s) * 1000))]
            details = f"{details} (retry after {retry_s} s)"
        if isinstance(error, Overloaded):
            self._shed_log.shed(f"{SERVICE}/{call}", error)
        elif status == grpc.StatusCode.INTERNAL:
            logger.error("%s/%s failed: %s", SERVICE, call, error.message, exc_info=error.__cause__)
        await context.abort(status, details, tuple(trailers))

    def _count_rejected(self, error: EngineError) -> None:
        # Refused before the engine saw it: counted as the facade counts a request that fails before its model is known.
        self._metrics.requests.labels("unknown", "unresolved", error.code).inc()
        self._metrics.errors.labels(error.code).inc()

    def _authenticate(self, context: grpc.aio.ServicerContext) -> None:
        try:
            self._auth.check(_metadata(context, "x-token") or bearer(_metadata(context, "authorization")))
        except Unauthorized as exc:
            raise Unauthorized("missing or invalid token: send it in the x-token metadata (or authorization: Bearer)") from exc

    @_answered
    async def ServerLive(self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self._plane.live())

    @_answered
    async def ServerReady(self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._plane.ready())

    @_answered
    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext) -> pb.ServerMetadataResponse:
        metadata = self._plane.server_metadata()
        return pb.ServerMetadataResponse(name=metadata["name"], version=metadata["version"], extensions=list(metadata["extensions"]))

    @_answered
    async def ModelReady(self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=self._plane.model_ready(request.name, request.version or None))

    @_answered
    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext) -> pb.ModelMetadataResponse:
        return metadata_response(await self._plane.model_metadata(request.name, request.version or None))

    @_answered
    async def ModelInfer(self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext) -> pb.ModelInferResponse:
        try:
            self._authenticate(context)
            if not request.model_name:
                raise InvalidInput("model_name is required")
            v2_request = infer_request(request)
            routing_key = _metadata(context, "x-routing-key")
            result = await self._plane.infer(request.model_name, request.model_version or None, v2_request, routing_key=routing_key)
        except EngineError as exc:
            if not exc.counted:  # refused before the facade (token, tensors, an unknown model)
                self._count_rejected(exc)
            raise
        return infer_response(result)


class GrpcServer:
    """A started gRPC server: ``port`` is the one it bound (GRPC_PORT, or the kernel's for 0)."""

    def __init__(self, server: grpc.aio.Server, port: int, grace_s: float) -> None:
        self._server = server
        self.port = port
        self._grace_s = grace_s
        self._stopping: asyncio.Future[None] | None = None

    def begin_stop(self) -> None:
        """Start the drain (once): refuse new calls, and tell clients to go (GOAWAY)."""
        if self._stopping is None:
            logger.info("gRPC server on port %d draining (at most %.0f s)", self.port, self._grace_s)
            self._stopping = asyncio.ensure_future(self._server.stop(self._grace_s))

    async def stop(self) -> None:
        """Refuse new calls; let those in flight finish within SHUTDOWN_TIMEOUT_S, then cancel them."""
        self.begin_stop()
        assert self._stopping is not None
        await self._stopping
        logger.info("gRPC server on port %d stopped", self.port)

    def drain_on_signals(self) -> None:
        """On SIGTERM or SIGINT, start the drain at once, beside the HTTP server's, rather than after it
        (the app's shutdown runs once HTTP has drained): the two drains then share SHUTDOWN_TIMEOUT_S.
        The signal's own handler (uvicorn's, gunicorn's) still runs."""
        if threading.current_thread() is not threading.main_thread():
            return
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(signum)
            if not callable(previous):
                continue

            def handler(number: int, frame: FrameType | None, previous: Callable[[int, FrameType | None], Any] = previous) -> None:
                loop.call_soon_threadsafe(self.begin_stop)
                previous(number, frame)

            signal.signal(signum, handler)


async def start_grpc(settings: Settings, engine: InferenceEngine, auth: Authenticator) -> GrpcServer | None:
    """Serve the protocol on ``settings.host:settings.grpc_port`` on the running event loop, with the
    HTTP app's token checks (``auth``); None when GRPC_PORT is unset."""
    if settings.grpc_port is None:
        return None
    options = [
        ("grpc.max_receive_message_length", settings.max_body_bytes),
        # Shared only between the workers of one server (their WORKERS_DIR): a lone process binds alone.
        ("grpc.so_reuseport", 1 if settings.workers_dir is not None else 0),
    ]
    server = grpc.aio.server(options=options)
    service = InferenceService(V2DataPlane(engine), auth, engine, settings)
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(service, server)  # type: ignore[no-untyped-call]  # generated
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    address = f"{host}:{settings.grpc_port}"
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise OSError(f"cannot bind the gRPC port {address} (GRPC_PORT): {exc}") from exc
    if port == 0:
        raise OSError(f"cannot bind the gRPC port {address} (GRPC_PORT)")
    await server.start()
    logger.info("serving the Open Inference Protocol over gRPC on %s:%d", settings.host, port)
    handle = GrpcServer(server, port, grace_s=settings.shutdown_timeout_s)
    handle.drain_on_signals()
    return handle
