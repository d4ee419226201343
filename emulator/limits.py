"""Every limit of AWS Lambda and Amazon API Gateway that the emulator enforces, in one table.

Each entry carries the figure AWS documents, where, and the date it was read there, so that a
change on AWS's side is one edit here. The fronts, the environments and the Runtime API read
their bounds from this module only, and read bounded bodies with ``read_bounded``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Limit:
    name: str
    value: int
    unit: str
    source: str
    """The AWS documentation page that states the figure."""
    read_on: str
    """When the figure was read there (YYYY-MM-DD)."""
    note: str = ""


_LAMBDA_QUOTAS = "https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html"
_INVOKE = "https://docs.aws.amazon.com/lambda/latest/dg/API_Invoke.html"
_ASYNC_RETRIES = "https://docs.aws.amazon.com/lambda/latest/dg/invocation-async-error-handling.html"
_HTTP_API_QUOTAS = "https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-quotas.html"
_REST_API_QUOTAS = "https://docs.aws.amazon.com/apigateway/latest/developerguide/limits.html"
_CONTEXT = "https://docs.aws.amazon.com/lambda/latest/dg/python-context.html"

MB = 1024 * 1024

SYNC_REQUEST_BYTES = Limit(
    "Invoke (RequestResponse) request payload",
    6 * MB,
    "bytes",
    _INVOKE,
    "2026-12-01",
    "413 RequestEntityTooLargeException: 'Request must be smaller than 6291456 bytes for the InvokeFunction operation'",
)
SYNC_RESPONSE_BYTES = Limit(
    "Invoke (RequestResponse) response payload",
    6 * MB,
    "bytes",
    _LAMBDA_QUOTAS,
    "2026-12-01",
    "a function error of type Function.ResponseSizeTooLarge (whose message names 6,291,556 bytes); the Runtime API refuses the "
    "/response with 413",
)
EVENT_REQUEST_BYTES = Limit(
    "Invoke (Event) request payload",
    1 * MB,
    "bytes",
    _INVOKE,
    "2026-12-01",
    "1 MB since October 2025 (256 KB before); 413 RequestEntityTooLargeException",
)
EVENT_RETRIES = Limit(
    "Event invocation retries after a function error",
    2,
    "retries",
    _ASYNC_RETRIES,
    "2026-12-01",
    "Lambda waits about 1 minute before the first retry and 2 minutes before the second",
)
EVENT_RETRY_DELAYS_S = (60.0, 120.0)
"""The waits before the two retries of a failed Event invocation (``--event-retry-delays``)."""
EVENT_MAX_AGE_S = Limit(
    "Event invocation maximum age (kept queued while throttled)",
    6 * 3600,
    "seconds",
    _ASYNC_RETRIES,
    "2026-12-01",
)
CLIENT_CONTEXT_BYTES = Limit(
    "ClientContext (base64 JSON) of an Invoke",
    3583,
    "bytes",
    _CONTEXT,
    "2026-12-01",
)
MEMORY_MIN_MB = Limit("Function memory (MemorySize), least", 128, "MB", _LAMBDA_QUOTAS, "2026-12-01")
MEMORY_MAX_MB = Limit("Function memory (MemorySize), most", 10240, "MB", _LAMBDA_QUOTAS, "2026-12-01")
TMP_DEFAULT_MB = Limit(
    "/tmp (EphemeralStorage) default size",
    512,
    "MB",
    _LAMBDA_QUOTAS,
    "2026-12-01",
    "configurable from 512 MB to 10,240 MB",
)
TIMEOUT_MAX_S = Limit("Function timeout, most", 900, "seconds", _LAMBDA_QUOTAS, "2026-12-01")
INIT_TIMEOUT_S = Limit("Init phase timeout (on-demand)", 10, "seconds", _LAMBDA_QUOTAS, "2026-12-01")
ENVIRONMENT_BYTES = Limit("Environment variables, all together", 4096, "bytes", _LAMBDA_QUOTAS, "2026-12-01")
HTTP_API_BODY_BYTES = Limit(
    "HTTP API request payload",
    10 * MB,
    "bytes",
    _HTTP_API_QUOTAS,
    "2026-12-01",
    "413 {'message': 'Request Entity Too Large'}; the function is not invoked",
)
HTTP_API_TIMEOUT_S = Limit("HTTP API integration timeout", 30, "seconds", _HTTP_API_QUOTAS, "2026-12-01")
REST_API_BODY_BYTES = Limit("REST API request payload", 10 * MB, "bytes", _REST_API_QUOTAS, "2026-12-01")
REST_API_TIMEOUT_S = Limit(
    "REST API integration timeout",
    29,
    "seconds",
    _REST_API_QUOTAS,
    "2026-12-01",
    "raisable for Regional and private APIs",
)

ALL: tuple[Limit, ...] = (
    SYNC_REQUEST_BYTES,
    SYNC_RESPONSE_BYTES,
    EVENT_REQUEST_BYTES,
    EVENT_RETRIES,
    EVENT_MAX_AGE_S,
    CLIENT_CONTEXT_BYTES,
    MEMORY_MIN_MB,
    MEMORY_MAX_MB,
    TMP_DEFAULT_MB,
    TIMEOUT_MAX_S,
    INIT_TIMEOUT_S,
    ENVIRONMENT_BYTES,
    HTTP_API_BODY_BYTES,
    HTTP_API_TIMEOUT_S,
    REST_API_BODY_BYTES,
    REST_API_TIMEOUT_S,
)


def table() -> str:
    """The limits as a Markdown table (the README's emulator section shows it)."""
    rows = ["| limit | AWS figure | source, read on |", "|---|---|---|"]
    for limit in ALL:
        figure = f"{limit.value:,} {limit.unit}"
        rows.append(f"| {limit.name} | {figure} | [{limit.source.rsplit('/', 1)[-1]}]({limit.source}), {limit.read_on} |")
    return "\n".join(rows)


class TooLarge(Exception):
    """A request body over its limit; ``size`` is the whole body's, counted while it was discarded."""

    def __init__(self, size: int) -> None:
        super().__init__(f"{size} bytes")
        self.size = size


async def read_bounded(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """The body, or ``TooLarge`` once it passes ``limit``: what follows is read and counted, never kept,
    so that the client, still sending, gets the answer rather than a reset connection."""
    kept: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size <= limit:
            kept.append(chunk)
        elif kept:
            kept.clear()
    if size > limit:
        raise TooLarge(size)
    return b"".join(kept)
