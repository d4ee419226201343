"""Tiny Lambda handlers the emulator tests run in real worker processes (and under awslambdaric)."""

from __future__ import annotations

import base64
import json
import os
import time
from typing import Any


def echo(event: Any, context: Any) -> Any:
    """Returns the event it received, so the tests see exactly what the emulator built."""
    print(f"echo: request {context.aws_request_id} in process {os.getpid()}")
    return event


def fail(event: Any, context: Any) -> Any:
    raise ValueError(f"failed on purpose: {event.get('reason', 'no reason')}")


def sleep(event: Any, context: Any) -> dict[str, Any]:
    """Holds its environment for ``seconds`` (in the event, or the query string of an HTTP event); answers with its process id."""
    seconds = event.get("seconds") or (event.get("queryStringParameters") or {}).get("seconds", 0)
    time.sleep(float(seconds))
    return {"pid": os.getpid(), "remaining_ms": context.get_remaining_time_in_millis()}


def respond(event: Any, context: Any) -> dict[str, Any]:
    """Answers an HTTP API request with the response its JSON body describes."""
    body = base64.b64decode(event["body"]) if event.get("isBase64Encoded") else event["body"]
    response: dict[str, Any] = json.loads(body)
    return response
