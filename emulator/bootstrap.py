"""The inside of an execution environment: ``python -m emulator.bootstrap <module.function>``.

Imports the handler (the init phase, timed), then answers one invocation at a time. Requests
come as JSON lines on stdin, replies go as JSON lines to the process's original stdout. The
handler's own stdout and stderr (file descriptors 1 and 2, so loggers created at import are
caught too) go to a scratch file that is drained after init and after each invocation: that is
the invocation's log. Only the standard library is imported here, besides the handler.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from typing import Any, BinaryIO, TextIO

Handler = Callable[[Any, Any], Any]


class InitError(Exception):
    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type


class LambdaContext:
    """The context object of the Python runtime, from the environment and the request."""

    def __init__(self, request: dict[str, Any]) -> None:
        self.aws_request_id: str = request["request_id"]
        self.invoked_function_arn: str = request["invoked_function_arn"]
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.memory_limit_in_mb = int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"))
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self.identity = None
        self.client_context = None
        self.tenant_id = None
        self._deadline_ms: int = request["deadline_ms"]

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self._deadline_ms - int(time.time() * 1000))


def load_handler(name: str) -> Handler:
    module_name, _, function_name = name.rpartition(".")
    if not module_name:
        raise InitError("Runtime.MalformedHandlerName", f"Bad handler '{name}': not enough values to unpack (expected 2, got 1)")
    try:
        module = importlib.import_module(module_name.replace("/", "."))
    except ImportError as exc:
        raise InitError("Runtime.ImportModuleError", f"Unable to import module '{module_name}': {exc}") from exc
    handler = getattr(module, function_name, None)
    if handler is None:
        raise InitError("Runtime.HandlerNotFound", f"Handler '{function_name}' missing on module '{module_name}'")
    if not callable(handler):
        raise InitError("Runtime.HandlerNotFound", f"Handler '{function_name}' on module '{module_name}' is not callable")
    return handler  # type: ignore[no-any-return]


def error_payload(exc: BaseException, request_id: str, skip_frames: int) -> dict[str, Any]:
    if isinstance(exc, InitError):
        error_type, message, frames = exc.error_type, str(exc), []
    else:
        error_type, message = type(exc).__name__, str(exc)
        frames = traceback.format_list(traceback.extract_tb(exc.__traceback__)[skip_frames:])
    return {"errorMessage": message, "errorType": error_type, "requestId": request_id, "stackTrace": frames}


def log_error(error: dict[str, Any]) -> None:
    """Unhandled errors are logged as the Python runtime logs them."""
    trace = "".join(error["stackTrace"])
    sys.stderr.write(f"[ERROR] {error['errorType']}: {error['errorMessage']}\nTraceback (most recent call last):\n{trace}")


class Capture:
    """Descriptors 1 and 2 point at one scratch file; ``drain`` returns what was written since."""

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile()
        os.dup2(self._file.fileno(), 1)
        os.dup2(self._file.fileno(), 2)

    def drain(self) -> str:
        sys.stdout.flush()
        sys.stderr.flush()
        size = os.lseek(1, 0, os.SEEK_END)
        data = os.pread(1, size, 0)
        os.ftruncate(1, 0)
        os.lseek(1, 0, os.SEEK_SET)
        return data.decode(errors="replace")


def max_memory_mb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024  # kilobytes on Linux


def invoke(handler: Handler, request: dict[str, Any]) -> tuple[str, str]:
    """("result" | "error", the JSON payload)."""
    try:
        result = handler(json.loads(request["payload"]), LambdaContext(request))
    except Exception as exc:  # an unhandled function error is a reply, not a crash
        error = error_payload(exc, request["request_id"], skip_frames=1)
        log_error(error)
        return "error", json.dumps(error)
    try:
        return "result", json.dumps(result)
    except (TypeError, ValueError) as exc:
        error = {"errorMessage": f"Unable to marshal response: {exc}", "errorType": "Runtime.MarshalError", "requestId": ""}
        error["stackTrace"] = []
        log_error(error)
        return "error", json.dumps(error)


def serve(handler_name: str, requests: BinaryIO, replies: TextIO, capture: Capture) -> None:
    def send(message: dict[str, Any]) -> None:
        replies.write(json.dumps(message) + "\n")
        replies.flush()

    started = time.perf_counter()
    try:
        handler = load_handler(handler_name)
    except Exception as exc:  # any init failure is reported, then the environment ends
        error = error_payload(exc, "", skip_frames=0)
        log_error(error)
        send(
            {
                "kind": "init_error",
                "payload": json.dumps(error),
                "init_ms": (time.perf_counter() - started) * 1000.0,
                "log": capture.drain(),
            }
        )
        return
    send({"kind": "ready", "init_ms": (time.perf_counter() - started) * 1000.0, "log": capture.drain()})
    for line in requests:
        request = json.loads(line)
        invoked = time.perf_counter()
        kind, payload = invoke(handler, request)
        duration_ms = (time.perf_counter() - invoked) * 1000.0
        send({"kind": kind, "payload": payload, "duration_ms": duration_ms, "max_memory_mb": max_memory_mb(), "log": capture.drain()})


def main() -> None:
    requests = os.fdopen(os.dup(0), "rb")
    replies = os.fdopen(os.dup(1), "w", encoding="utf-8")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    serve(sys.argv[1], requests, replies, Capture())


if __name__ == "__main__":
    main()
