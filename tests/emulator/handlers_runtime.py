"""Tiny handlers the Runtime API tests run under the real awslambdaric."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.emulator.handlers_environments import listing

MB = 1024 * 1024


def echo(event: Any, context: Any) -> Any:
    print(f"echo: request {context.aws_request_id} in process {os.getpid()}")
    return event


def environment(event: Any, context: Any) -> dict[str, Any]:
    """The values of the environment variables ``event["names"]`` names (None: not set), and the process id."""
    return {"values": {name: os.environ.get(name) for name in event["names"]}, "pid": os.getpid()}


def context(event: Any, context: Any) -> dict[str, Any]:
    """What the runtime's context and process got from the Runtime API's headers."""
    client_context = context.client_context
    return {
        "request_id": context.aws_request_id,
        "invoked_function_arn": context.invoked_function_arn,
        "trace_id": os.environ.get("_X_AMZN_TRACE_ID"),
        "client_context": None if client_context is None else {"custom": client_context.custom, "env": client_context.env},
        "remaining_ms": context.get_remaining_time_in_millis(),
    }


def large(event: Any, context: Any) -> str:
    """A response of about ``event["mb"]`` MB."""
    return "x" * int(event["mb"] * MB)


def talk_then_sleep(event: Any, context: Any) -> dict[str, int]:
    """Prints a line, then holds its environment for ``event["seconds"]``."""
    print(f"talking before the sleep in process {os.getpid()}", flush=True)
    time.sleep(float(event["seconds"]))
    return {"pid": os.getpid()}


def allocate(event: Any, context: Any) -> int:
    """Holds ``event["mb"]`` MB of touched memory."""
    block = bytearray(int(event["mb"] * MB))
    for offset in range(0, len(block), 4096):
        block[offset] = 1
    return len(block)


def exit_now(event: Any, context: Any) -> None:
    """The runtime's process exits in the middle of the invocation."""
    print("exiting", flush=True)
    os._exit(3)


def temporary_files(event: Any, context: Any) -> dict[str, Any]:
    """What the environment's temporary folder holds (then it leaves a file there), and whether the code folder is writable."""
    folder = Path(tempfile.gettempdir())
    found = listing(str(folder))
    (folder / f"left-by-{context.aws_request_id}").write_text("x")
    return {"folder": str(folder), "found": found, "code_writable": os.access(os.getcwd(), os.W_OK)}
