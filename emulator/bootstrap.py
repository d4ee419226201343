"""The inside of an execution environment: ``python -m emulator.bootstrap <module.function>``.

Loads the handler (the init phase, timed), then answers one invocation at a time, both through
``emulator.python_runtime``: awslambdaric's context, the Python runtime's error payloads.
Requests come as JSON lines on stdin, replies go as JSON lines to the process's original
stdout. The handler's own stdout and stderr (file descriptors 1 and 2, so loggers created at
import are caught too) go to a scratch file that is drained after init and after each
invocation: that is the invocation's log. Besides the handler, only the standard library,
``emulator.python_runtime`` and, through it, awslambdaric's ``LambdaContext`` are imported here.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import tempfile
from typing import Any, BinaryIO, TextIO

from emulator.python_runtime import init, invoke, make_context


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


def serve(handler_name: str, requests: BinaryIO, replies: TextIO, capture: Capture) -> None:
    def send(message: dict[str, Any]) -> None:
        replies.write(json.dumps(message) + "\n")
        replies.flush()

    loaded = init(handler_name)
    if loaded.handler is None:  # the failure is reported, then the environment ends
        send({"kind": "init_error", "payload": loaded.error, "init_ms": loaded.init_ms, "log": capture.drain()})
        return
    send({"kind": "ready", "init_ms": loaded.init_ms, "log": capture.drain()})
    for line in requests:
        request = json.loads(line)
        arn, deadline_ms = request["invoked_function_arn"], request["deadline_ms"]
        context = make_context(request["request_id"], deadline_ms=deadline_ms, invoked_function_arn=arn)
        outcome = invoke(loaded.handler, request["payload"], context)
        send(
            {
                "kind": outcome.kind,
                "payload": outcome.payload,
                "duration_ms": outcome.duration_ms,
                "max_memory_mb": max_memory_mb(),
                "log": capture.drain(),
            }
        )


def main() -> None:
    requests = os.fdopen(os.dup(0), "rb")
    replies = os.fdopen(os.dup(1), "w", encoding="utf-8")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    serve(sys.argv[1], requests, replies, Capture())


if __name__ == "__main__":
    main()
