"""ASGI middleware for request bodies: the token checked on the headers alone, a size cap,
gzip decoded within that cap, and JSON whatever the Content-Type says.

The token of a protected route is checked before a byte of the body is read: a caller without
it gets 401 at once and the connection is closed, so an unauthenticated client cannot make the
server buffer its body. The same goes for a body declared too large (413) or in an encoding
the service does not decode (415).

``curl -d`` sends ``application/x-www-form-urlencoded``; API Gateway test events and
tritonclient send no Content-Type at all. Every body this service accepts is JSON, so the
header is normalised before FastAPI decides how to parse the body.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping

from starlette.datastructures import Headers
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.errors import EngineError
from handlers.errors import ErrorReplies

_BODY_METHODS = {"POST", "PUT", "PATCH"}
_JSON = b"application/json"
_GZIP = {"gzip", "x-gzip"}
_IDENTITY = {"", "identity"}

Guard = Callable[[Headers], None]
"""Checks a request on its headers alone; raises an ``EngineError`` (e.g. ``Unauthorized``) to refuse it."""


def _is_json(content_type: bytes) -> bool:
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == _JSON or media.endswith(b"+json")


def _route_path(scope: Scope) -> str:
    """The path the router matches: without the root path an ASGI server may prefix."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root + "/") else path


class _Refused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class _GzipReader:
    """Decodes a gzip body as it streams in, refusing it once the decoded size passes the cap."""

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._decoder = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        self.size = 0

    def feed(self, chunk: bytes) -> bytes:
        try:
            # Never more than the cap (plus one byte to tell "over") out of one call: a small
            # compressed chunk may expand a thousandfold.
            out = self._decoder.decompress(chunk, self._max_bytes - self.size + 1)
            while self._decoder.unconsumed_tail and len(out) + self.size <= self._max_bytes:
                out += self._decoder.decompress(self._decoder.unconsumed_tail, self._max_bytes - self.size - len(out) + 1)
        except zlib.error as exc:
            raise _Refused(422, "invalid_request", f"the request body is not valid gzip: {exc}") from exc
        self.size += len(out)
        if self.size > self._max_bytes:
            raise _Refused(413, "payload_too_large", f"the decoded request body is larger than {self._max_bytes} bytes (MAX_BODY_BYTES)")
        return out

    def finish(self) -> None:
        if not self._decoder.eof:
            raise _Refused(422, "invalid_request", "the request body is not valid gzip: it ends early")


class RequestBodyMiddleware:
    def __init__(
        self, app: ASGIApp, max_body_bytes: int, replies: ErrorReplies, guards: Mapping[tuple[str, str], Guard] | None = None
    ) -> None:
        """``guards`` maps (method, path) to the check that runs on the headers before the body is read;
        a path may be a route template (``/v2/models/{model_name}/infer``), matched as the router matches it."""
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.replies = replies
        self.guards = {key: guard for key, guard in (guards or {}).items() if "{" not in key[1]}
        self._template_guards = [(method, compile_path(path)[0], guard) for (method, path), guard in (guards or {}).items() if "{" in path]

    def _guard(self, method: str, path: str) -> Guard | None:
        guard = self.guards.get((method, path))
        if guard is None:
            guard = next((g for m, pattern, g in self._template_guards if m == method and pattern.match(path)), None)
        return guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        guard = self._guard(scope["method"], _route_path(scope))
        if guard is not None:
            try:
                guard(Headers(scope=scope))
            except EngineError as exc:
                await self.replies.for_error(scope["path"], scope["method"], exc, close=True)(scope, receive, send)
                return
        if scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        try:
            scope, body = await self._read(scope, receive)
        except _Refused as refused:
            reply = self.replies.reply(scope["path"], refused.status, refused.code, refused.message, close=True)
            await reply(scope, receive, send)
            return
        if body is None:  # the client went away
            return

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _read(self, scope: Scope, receive: Receive) -> tuple[Scope, bytes | None]:
        """The normalised scope and the whole (decoded) body; None when the client went away."""
        headers = dict(scope["headers"])
        encoding = headers.get(b"content-encoding", b"").decode("latin-1").strip().lower()
        if encoding not in _IDENTITY | _GZIP:
            raise _Refused(415, "unsupported_media_type", f"Content-Encoding {encoding!r} is not supported: send gzip or no encoding")
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise _Refused(413, "payload_too_large", f"request body is larger than {self.max_body_bytes} bytes (MAX_BODY_BYTES)")

        # Read the whole body here, so an oversized stream is refused before any handler sees
        # it (handlers buffer JSON bodies anyway).
        gzip = _GzipReader(self.max_body_bytes) if encoding in _GZIP else None
        chunks: list[bytes] = []
        size = 0
        more_body = True
        while more_body:
            message = await receive()
            if message["type"] != "http.request":
                return scope, None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise _Refused(413, "payload_too_large", f"request body is larger than {self.max_body_bytes} bytes (MAX_BODY_BYTES)")
            chunks.append(gzip.feed(chunk) if gzip is not None else chunk)
            more_body = message.get("more_body", False)
        if gzip is not None and size:
            gzip.finish()
        body = b"".join(chunks)

        content_type = headers.get(b"content-type", b"")
        replaced = {b"content-type", b"content-encoding", b"content-length"}
        normalised = [(k, v) for k, v in scope["headers"] if k not in replaced]
        normalised += [(b"content-type", content_type if _is_json(content_type) else _JSON), (b"content-length", str(len(body)).encode())]
        return {**scope, "headers": normalised}, body
