"""The HTTP/1.1 connection level of ``mlinfer serve``: uvicorn's httptools protocol with limits.

uvicorn's own protocols bound neither the size of a request's head nor the time a client may
take to send it, and its ``limit_concurrency`` answers only once a request's headers are in,
so idle sockets still use up the process's file descriptors. This protocol adds, per connection:

- **Head limits.** The request line and headers larger than ``MAX_HEADER_BYTES``, or more than
  ``MAX_HEADERS`` headers, get 431. The bytes of an unfinished head are counted as they arrive,
  so a never-ending header value costs at most one read of memory before the reply.
- **Timeouts.** A head not complete within ``HEADER_TIMEOUT_S`` of the connection (or of its
  first byte, after a previous request) gets 408; a declared body not complete within
  ``BODY_TIMEOUT_S`` of the headers gets 408; an idle keep-alive connection is closed after
  ``KEEPALIVE_TIMEOUT_S``. The app's own time is not bounded here (``REQUEST_TIMEOUT_MS`` is).
- **A connection limit.** Beyond ``MAX_CONNECTIONS`` open connections, a new one gets 503 and is
  closed at once; refusals are logged at most once every 10 s, with their count.
- **A lingering close.** A reply sent while the request is still arriving (a 431, a 408, or the
  app's 401 / 413 on the headers alone) is followed by a half-close, and what the client still
  sends is read and dropped for up to ``LINGER_S``. Closing with unread input would reset the
  connection, and a reset may cost the client the reply it has not read yet.

httptools is kept (it is the faster parser): the checks are a few attribute reads per request.
One timer per process (the watchdog) checks every connection's deadline a few times a second,
instead of a timer started and cancelled per request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from engine.settings import Settings
from handlers.errors import HTTP_ERRORS_STATE, error_body

logger = logging.getLogger(__name__)

LINGER_S = 2.0
"""How long a connection answered before its request was read keeps reading (and dropping) input."""
REFUSAL_LOG_INTERVAL_S = 10.0

# Where a connection is. Each has its own deadline; the head's bytes are counted up to _HEAD.
_IDLE = 0  # between requests (keep-alive)
_HEAD = 1  # a new connection, or a request line and headers arriving
_BODY = 2  # the headers are in, the body is arriving
_APP = 3  # the request is read; the app answers (no deadline here)
_LINGER = 4  # answered; half-closed, dropping input until the client closes or LINGER_S passes


@dataclass(frozen=True)
class ConnectionLimits:
    """The limits of one server process's connections."""

    max_header_bytes: int
    max_headers: int
    header_timeout_s: float
    body_timeout_s: float
    keepalive_timeout_s: float
    max_connections: int

    @classmethod
    def from_settings(cls, settings: Settings, *, max_connections: int | None = None) -> ConnectionLimits:
        """The settings' limits; ``max_connections`` overrides MAX_CONNECTIONS (when the open files limit cannot fit it)."""
        return cls(
            max_header_bytes=settings.max_header_bytes,
            max_headers=settings.max_headers,
            header_timeout_s=settings.header_timeout_s,
            body_timeout_s=settings.body_timeout_s,
            keepalive_timeout_s=settings.keepalive_timeout_s,
            max_connections=max_connections if max_connections is not None else settings.max_connections,
        )

    @property
    def tick_s(self) -> float:
        """How often the watchdog looks: a quarter of the shortest timeout, within 50 ms to 1 s."""
        return min(1.0, max(0.05, min(self.header_timeout_s, self.body_timeout_s, self.keepalive_timeout_s, LINGER_S) / 4))


def protocol_class(limits: ConnectionLimits) -> type[LimitedHttpToolsProtocol]:
    """The protocol class to give uvicorn (``Config(http=...)``), bound to ``limits``."""
    return type("BoundHttpToolsProtocol", (LimitedHttpToolsProtocol,), {"limits": limits, "_shared": None})


def error_reply(status: int, code: str, message: str, default_headers: list[tuple[bytes, bytes]], extra: bytes = b"") -> bytes:
    """A whole HTTP/1.1 error reply that closes the connection, with the service's JSON error body."""
    body = json.dumps(error_body(code, message)).encode()
    head = [STATUS_LINE[status]]
    head += [name + b": " + value + b"\r\n" for name, value in default_headers]
    head.append(b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n%s\r\n" % (len(body), extra))
    return b"".join(head) + body


class _Refused(Exception):
    """Raised in a parser callback once the connection is answered, to stop parsing."""


class _RefusalLog:
    """At most one WARNING every REFUSAL_LOG_INTERVAL_S about refused connections, with their count."""

    def __init__(self, loop: asyncio.AbstractEventLoop, max_connections: int) -> None:
        self._loop = loop
        self._max_connections = max_connections
        self._count = 0
        self._last = -math.inf
        self._pending: asyncio.TimerHandle | None = None

    def refused(self) -> None:
        self._count += 1
        due = self._last + REFUSAL_LOG_INTERVAL_S
        if self._loop.time() >= due:
            self._flush()
        elif self._pending is None:
            self._pending = self._loop.call_at(due, self._flush)

    def _flush(self) -> None:
        self._pending = None
        if self._count:
            since = "" if self._last == -math.inf else f" in the last {self._loop.time() - self._last:.0f} s"
            logger.warning(
                "refused %d connection%s over MAX_CONNECTIONS=%d%s",
                self._count,
                "" if self._count == 1 else "s",
                self._max_connections,
                since,
            )
        self._count = 0
        self._last = self._loop.time()


class _Shared:
    """What the connections of one server process share: the watchdog's timer and the refusal log."""

    def __init__(self, loop: asyncio.AbstractEventLoop, connections: set[Any], limits: ConnectionLimits) -> None:
        self.loop = loop
        self.connections = connections
        self.tick_s = limits.tick_s
        self.refusals = _RefusalLog(loop, limits.max_connections)
        self._timer: asyncio.TimerHandle | None = None

    def watch(self) -> None:
        if self._timer is None:
            self._timer = self.loop.call_later(self.tick_s, self._tick)

    def _tick(self) -> None:
        now = self.loop.time()
        for connection in list(self.connections):
            if isinstance(connection, LimitedHttpToolsProtocol) and connection.deadline <= now:
                connection.expire()
        self._timer = self.loop.call_later(self.tick_s, self._tick) if self.connections else None


class _CycleTransport(asyncio.Transport):
    """The transport as a request's response cycle sees it: closing it while the request's body
    is still arriving becomes a lingering close."""

    def __init__(self, protocol: LimitedHttpToolsProtocol, transport: asyncio.Transport) -> None:
        super().__init__()
        self._protocol = protocol
        self._transport = transport

    def write(self, data: bytes | bytearray | memoryview[Any]) -> None:
        self._transport.write(data)

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def close(self) -> None:
        self._protocol.close_after_reply()


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with head limits, timeouts, a connection limit and a lingering close."""

    limits: ClassVar[ConnectionLimits]
    _shared: ClassVar[_Shared | None] = None

    def __init__(
        self, config: Config, server_state: ServerState, app_state: dict[str, Any], _loop: asyncio.AbstractEventLoop | None = None
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.phase = _HEAD
        self.deadline = math.inf
        self._head_bytes = 0  # received while the head is unfinished, counted per read
        self._head_size = 0  # of the parsed headers
        self._cycle_transport: _CycleTransport | None = None
        self._deferred: tuple[int, str, str] | None = None  # a refusal waiting for earlier replies

    def _shared_state(self) -> _Shared:
        shared = type(self)._shared
        if shared is None or shared.loop is not self.loop:
            shared = type(self)._shared = _Shared(self.loop, self.connections, self.limits)
        return shared

    # Connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        shared = self._shared_state()
        if len(self.connections) >= self.limits.max_connections:
            self.transport = transport
            self.phase = _LINGER
            message = f"the server has its {self.limits.max_connections} connections open (MAX_CONNECTIONS); retry later"
            transport.write(error_reply(503, "too_many_connections", message, self.server_state.default_headers, b"retry-after: 1\r\n"))
            transport.close()
            shared.refusals.refused()
            self._count(503, "too_many_connections")
            return
        super().connection_made(transport)
        self._cycle_transport = _CycleTransport(self, transport)
        self.deadline = self.loop.time() + self.limits.header_timeout_s
        shared.watch()

    def data_received(self, data: bytes) -> None:
        phase = self.phase
        if phase == _LINGER:
            return
        if phase <= _HEAD:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as exc:
            if self.phase != _LINGER and self._deferred is None:  # not one of ours: the request is malformed
                # The same JSON error body as every other reply, counted in http_errors; not
                # logged per request, so malformed traffic cannot flood the log.
                logger.debug("malformed HTTP request: %s", exc)
                self._refuse(400, "malformed_request", f"the request is not valid HTTP/1.1: {exc}")
            return
        if self.phase <= _HEAD and self._head_bytes > self.limits.max_header_bytes:
            self._head_too_large()

    def shutdown(self) -> None:
        if self.phase == _LINGER:
            self.transport.close()
            return
        super().shutdown()

    # Parser callbacks (each call here is per request or per header: keep them short)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_size = 0
        if self.phase != _HEAD:  # after a request: kept alive, or pipelined behind one the app still answers
            self.phase = _HEAD
            self.deadline = self.loop.time() + self.limits.header_timeout_s

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        limits = self.limits
        if len(self.headers) > limits.max_headers:
            self._refuse(431, "too_many_headers", f"more than {limits.max_headers} request headers (MAX_HEADERS)")
            raise _Refused
        if self._head_size + len(self.url) > limits.max_header_bytes:
            self._head_too_large()
            raise _Refused
        previous = self.cycle
        super().on_headers_complete()
        if self.cycle is not previous:
            self.cycle.transport = self._cycle_transport  # type: ignore[assignment]
        self._head_bytes = 0
        self.phase = _BODY
        self.deadline = self.loop.time() + limits.body_timeout_s

    def on_message_complete(self) -> None:
        super().on_message_complete()
        if self.phase == _BODY:
            self.phase = _APP
            self.deadline = math.inf

    def on_response_complete(self) -> None:
        # uvicorn's, except for the keep-alive timer (the watchdog's deadline instead) and the
        # lingering close of a request answered before its body arrived.
        self.server_state.total_requests += 1
        phase = self.phase
        if phase == _LINGER or self.transport.is_closing():
            return
        if phase == _BODY and self.cycle.response_complete:
            self._linger()
            return
        if self._deferred is not None:  # a later request was refused: answer it after the earlier ones
            if self.pipeline:
                cycle, app = self.pipeline.pop()
                self._start_asgi_task(cycle, app)
                return
            status, code, message = self._deferred
            self._deferred = None
            self._refuse(status, code, message)
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        elif phase == _APP:
            self.phase = _IDLE
            self.deadline = self.loop.time() + self.limits.keepalive_timeout_s
        elif phase == _HEAD:  # the next request's head arrived behind this reply: its time starts now
            self.deadline = self.loop.time() + self.limits.header_timeout_s

    # Limits

    def close_after_reply(self) -> None:
        """The response cycle closes the connection: linger if its request's body is still arriving."""
        if self.phase == _BODY and self.cycle.response_complete:
            self._linger()
        else:
            self.deadline = math.inf
            self.transport.close()

    def expire(self) -> None:
        """The watchdog found this connection past its deadline."""
        phase = self.phase
        self.deadline = math.inf
        if phase == _HEAD and (self.pipeline or (self.cycle is not None and not self.cycle.response_complete)):
            # A request pipelined behind others that are still being answered: its time starts
            # again once their replies are out (on_response_complete).
            return
        if self.pipeline:
            self.transport.close()
        elif phase == _HEAD:
            self._refuse(408, "request_timeout", f"the request line and headers did not arrive within {self.limits.header_timeout_s:g} s")
        elif phase == _BODY and not self.cycle.response_started:
            # The app waiting on the body reads a disconnect, and answers nothing more.
            self.cycle.disconnected = True
            self.cycle.message_event.set()
            self._refuse(408, "request_timeout", f"the request body did not arrive within {self.limits.body_timeout_s:g} s")
        else:
            self.transport.close()

    def _head_too_large(self) -> None:
        limit = self.limits.max_header_bytes
        self._refuse(431, "request_headers_too_large", f"the request line and headers are larger than {limit} bytes (MAX_HEADER_BYTES)")

    def _refuse(self, status: int, code: str, message: str) -> None:
        if self.pipeline or (self.phase == _HEAD and self.cycle is not None and not self.cycle.response_complete):
            # A request pipelined behind others is refused: its reply must come after theirs.
            # Read nothing more; the refusal is sent once the earlier replies are complete.
            self._deferred = (status, code, message)
            self.flow.pause_reading()
            return
        if not self.transport.is_closing():
            self.transport.write(error_reply(status, code, message, self.server_state.default_headers))
        self._count(status, code)
        self._linger()

    def _count(self, status: int, code: str) -> None:
        """Count a reply this protocol sent itself in the app's ``http_errors`` (once its lifespan started)."""
        counter = self.app_state.get(HTTP_ERRORS_STATE)
        if counter is not None:
            counter.labels(str(status), code).inc()

    def _linger(self) -> None:
        self.phase = _LINGER
        self.deadline = self.loop.time() + LINGER_S
        self.flow.resume_reading()
        if self.transport.is_closing():
            return
        if self.transport.can_write_eof():
            self.transport.write_eof()
        else:
            self.transport.close()
