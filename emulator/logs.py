"""The platform's log lines of an invocation, in the CloudWatch Logs format of AWS Lambda."""

from __future__ import annotations

import base64
import math
from datetime import UTC, datetime

TAIL_BYTES = 4096
"""``LogType=Tail`` returns this much of the end of an invocation's log."""


def start_line(request_id: str, version: str = "$LATEST") -> str:
    return f"START RequestId: {request_id} Version: {version}\n"


def end_line(request_id: str) -> str:
    return f"END RequestId: {request_id}\n"


def timeout_message(request_id: str, timeout_s: float) -> str:
    """The message Lambda logs, and returns as ``errorMessage``, when an invocation times out."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return f"{stamp} {request_id} Task timed out after {timeout_s:.2f} seconds"


def billed_ms(duration_ms: float, init_ms: float | None) -> int:
    """Whole milliseconds, rounded up; a cold start bills its init too (Lambda since August 2025)."""
    return math.ceil(duration_ms + (init_ms or 0.0))


def report_line(
    request_id: str,
    *,
    duration_ms: float,
    memory_mb: int,
    max_memory_mb: int,
    init_ms: float | None = None,
    status: str | None = None,
    error_type: str | None = None,
) -> str:
    """``error_type`` follows ``Status: error`` as AWS's ``Error Type`` field (e.g. ``Runtime.OutOfMemory``)."""
    fields = [
        f"REPORT RequestId: {request_id}",
        f"Duration: {duration_ms:.2f} ms",
        f"Billed Duration: {billed_ms(duration_ms, init_ms)} ms",
        f"Memory Size: {memory_mb} MB",
        f"Max Memory Used: {max_memory_mb} MB",
    ]
    if init_ms is not None:
        fields.append(f"Init Duration: {init_ms:.2f} ms")
    if status is not None:
        fields.append(f"Status: {status}")
    if status == "error" and error_type is not None:
        fields.append(f"Error Type: {error_type}")
    return "\t".join(fields) + "\t\n"


def tail(log: str, limit: int = TAIL_BYTES) -> str:
    """The ``X-Amz-Log-Result`` header: base64 of the last ``limit`` bytes of the log."""
    return base64.b64encode(log.encode()[-limit:]).decode()
