"""The error payloads the Lambda platform answers for an invocation, as opposed to the function's own.

The worker pool and the Runtime API both answer these, in Lambda's words: a timeout
(``Sandbox.Timedout``), a response over the limit (``Function.ResponseSizeTooLarge``), a runtime
that exited (``Runtime.ExitError``) or was killed for its memory (``Runtime.OutOfMemory``).
"""

from __future__ import annotations

import json
import signal

from emulator import logs

TIMED_OUT = "Sandbox.Timedout"
RESPONSE_TOO_LARGE = "Function.ResponseSizeTooLarge"
RESPONSE_TOO_LARGE_MESSAGE = "Response payload size exceeded maximum allowed payload size (6291556 bytes)."
"""Lambda's words, figure included (100 bytes over the 6 MB that ``limits.SYNC_RESPONSE_BYTES`` documents)."""
EXITED = "Runtime.ExitError"
OUT_OF_MEMORY = "Runtime.OutOfMemory"
"""The ``errorType`` of an invocation whose environment exceeded its MemorySize."""

_SIGNAL_NAMES = {
    signal.SIGKILL: "killed",
    signal.SIGSEGV: "segmentation fault",
    signal.SIGABRT: "aborted",
    signal.SIGTERM: "terminated",
    signal.SIGBUS: "bus error",
    signal.SIGILL: "illegal instruction",
    signal.SIGFPE: "floating point exception",
}


def _payload(error_type: str, message: str) -> bytes:
    return json.dumps({"errorMessage": message, "errorType": error_type}).encode()


def timeout_error(request_id: str, timeout_s: float) -> bytes:
    return _payload(TIMED_OUT, logs.timeout_message(request_id, timeout_s))


def response_too_large_error() -> bytes:
    return _payload(RESPONSE_TOO_LARGE, RESPONSE_TOO_LARGE_MESSAGE)


def exit_reason(returncode: int) -> str:
    """A runtime's end as Lambda words it: ``exit status 1``, ``signal: killed``."""
    if returncode >= 0:
        return f"exit status {returncode}"
    try:
        number = signal.Signals(-returncode)
    except ValueError:
        return f"signal: {-returncode}"
    return f"signal: {_SIGNAL_NAMES.get(number, number.name)}"


def exit_message(request_id: str, reason: str) -> str:
    return f"RequestId: {request_id} Error: Runtime exited with error: {reason}"


def exit_error(request_id: str, reason: str) -> bytes:
    return _payload(EXITED, exit_message(request_id, reason))


def out_of_memory_error(request_id: str) -> bytes:
    """The invocation's payload, as Lambda answers it when the environment ran out of memory."""
    return _payload(OUT_OF_MEMORY, exit_message(request_id, exit_reason(-signal.SIGKILL)))


def error_type(payload: bytes) -> str | None:
    """The ``errorType`` of an error payload; None when it has none (or is not JSON)."""
    try:
        error = json.loads(payload)
    except ValueError:
        return None
    kind = error.get("errorType") if isinstance(error, dict) else None
    return str(kind) if kind is not None else None
