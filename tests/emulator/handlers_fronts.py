"""Tiny handlers for the fronts' tests (Invoke API, HTTP front): they report what the function saw."""

from __future__ import annotations

import base64
import json
import os
import time
from typing import Any


def context(event: Any, context: Any) -> dict[str, Any]:
    """The invocation as the function saw it: its event, version, invoked ARN, ClientContext and trace header
    (in a proxy response's body for an API Gateway event)."""
    client = context.client_context
    seen = {
        "event": event,
        "function_version": context.function_version,
        "invoked_function_arn": context.invoked_function_arn,
        "client_context": None if client is None else {"custom": client.custom, "env": client.env},
        "trace_id": os.environ.get("_X_AMZN_TRACE_ID"),
    }
    if isinstance(event, dict) and "requestContext" in event:  # an API Gateway event: a proxy response
        return {"statusCode": 200, "headers": {"content-type": "application/json"}, "body": json.dumps(seen)}
    return seen


def fail(event: Any, context: Any) -> Any:
    print(f"fronts-fail: request {context.aws_request_id}")
    raise RuntimeError("failed on purpose")


def hold(event: Any, context: Any) -> dict[str, Any]:
    """Keeps its environment busy for ``seconds`` (in the event or the query string)."""
    seconds = event.get("seconds") or (event.get("queryStringParameters") or {}).get("seconds", 0)
    time.sleep(float(seconds))
    return {"statusCode": 200, "body": "held"}


def reply(event: Any, context: Any) -> Any:
    """Answers with the JSON its HTTP request body holds, as it is: well formed or not."""
    body = base64.b64decode(event["body"]) if event.get("isBase64Encoded") else event["body"]
    return json.loads(body)["reply"]


def size(event: Any, context: Any) -> dict[str, Any]:
    """Reports the size of the event it received (and logs it, so a test sees whether it ran)."""
    event_bytes = len(json.dumps(event))
    print(f"fronts-size: {event_bytes} bytes")
    return {"statusCode": 200, "body": json.dumps({"event_bytes": event_bytes})}
