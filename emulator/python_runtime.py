"""What the Lambda Python runtime does with a handler: load it, build its context, invoke it.

The emulator's execution environments (``emulator.bootstrap``, which the handler tests run
too) and the benchmarks that call a handler in-process all go through here, so that a handler
meets one runtime everywhere:

- ``init``: the init phase, timed: the handler is found by its ``module.function`` name and its
  module imported; a failure becomes the runtime's error payload (``Runtime.ImportModuleError``,
  ``Runtime.HandlerNotFound``, ... or the exception the import raised);
- ``make_context``: awslambdaric's ``LambdaContext``, the context the Lambda base image's
  runtime passes to handlers; it reads the function's name, version, memory size, log group
  and log stream from the ``AWS_LAMBDA_*`` environment variables;
- ``invoke``: one invocation, timed: the JSON event in, the JSON response (or the unhandled
  error, in Lambda's ``errorMessage`` / ``errorType`` / ``stackTrace`` shape) out.

Besides awslambdaric's context, only light standard modules are imported here (no
``dataclasses``, which pulls ``inspect``), so that an environment's init is its handler's own.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback
import uuid
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

from awslambdaric.lambda_context import LambdaContext

Handler = Callable[[Any, Any], Any]

LOCAL_TIMEOUT_S = 30.0
"""The deadline of a context made without one: this long after it is made."""


def function_arn(name: str) -> str:
    """The ARN of a function of the emulator's account and region."""
    return f"arn:aws:lambda:us-east-1:123456789012:function:{name}"


class InitError(Exception):
    """The handler cannot be loaded; ``error_type`` is the runtime's ``Runtime.*`` error type."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type


def load_handler(name: str) -> Handler:
    """The function ``name`` (``module.function``, or ``package/module.function``) designates."""
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
    """Lambda's payload of an unhandled error; ``skip_frames`` drops the runtime's own frames."""
    if isinstance(exc, InitError):
        error_type, message, frames = exc.error_type, str(exc), []
    else:
        error_type, message = type(exc).__name__, str(exc)
        frames = traceback.format_list(traceback.extract_tb(exc.__traceback__)[skip_frames:])
    return {"errorMessage": message, "errorType": error_type, "requestId": request_id, "stackTrace": frames}


def log_error(error: dict[str, Any]) -> None:
    """Unhandled errors are logged (to stderr) as the Python runtime logs them."""
    trace = "".join(error["stackTrace"])
    sys.stderr.write(f"[ERROR] {error['errorType']}: {error['errorMessage']}\nTraceback (most recent call last):\n{trace}")


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


class Init(NamedTuple):
    """The init phase: the handler, or (``handler`` None) the JSON error payload of why not."""

    init_ms: float
    handler: Handler | None = None
    error: str | None = None


def init(handler_name: str) -> Init:
    """Load the handler, timed; any failure is logged and reported, never raised."""
    started = time.perf_counter()
    try:
        handler = load_handler(handler_name)
    except Exception as exc:  # an init failure is the environment's answer, not a crash
        error = error_payload(exc, "", skip_frames=0)
        log_error(error)
        return Init(_ms_since(started), error=json.dumps(error))
    return Init(_ms_since(started), handler=handler)


def make_context(
    request_id: str | None = None,
    *,
    deadline_ms: int | None = None,
    invoked_function_arn: str | None = None,
    client_context: dict[str, Any] | None = None,
) -> Any:
    """awslambdaric's context of one invocation (typed ``Any``: awslambdaric ships no types).

    Left out: a new request id, a deadline ``LOCAL_TIMEOUT_S`` from now, the ARN of the
    function ``AWS_LAMBDA_FUNCTION_NAME`` names, and no client context. ``client_context`` is
    the invocation's ClientContext, decoded (``context.client_context.custom``, ``.env``, ``.client``).
    """
    return LambdaContext(
        invoke_id=request_id or str(uuid.uuid4()),
        client_context=client_context,
        cognito_identity=None,
        epoch_deadline_time_in_ms=deadline_ms if deadline_ms is not None else int((time.time() + LOCAL_TIMEOUT_S) * 1000),
        invoked_function_arn=invoked_function_arn or function_arn(os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "local")),
    )


class Outcome(NamedTuple):
    """One invocation's answer: ``kind`` "result" (the response) or "error", as JSON text."""

    kind: Literal["result", "error"]
    payload: str
    duration_ms: float


def invoke(handler: Handler, event: str | bytes, context: Any) -> Outcome:
    """Call the handler with the JSON ``event``, timed; an unhandled error is logged and answered."""
    started = time.perf_counter()
    try:
        result = handler(json.loads(event), context)
    except Exception as exc:  # an unhandled function error is an answer, not a crash
        error = error_payload(exc, context.aws_request_id, skip_frames=1)
        log_error(error)
        return Outcome("error", json.dumps(error), _ms_since(started))
    try:
        return Outcome("result", json.dumps(result), _ms_since(started))
    except (TypeError, ValueError) as exc:
        message = f"Unable to marshal response: {exc}"
        marshal = {"errorMessage": message, "errorType": "Runtime.MarshalError", "requestId": "", "stackTrace": []}
        log_error(marshal)
        return Outcome("error", json.dumps(marshal), _ms_since(started))
