"""The inside of an execution environment: ``<python> <emulator>/bootstrap.py <module.function>``.

Run by file path with the function's interpreter (its image's venv, or the dev venv), so that
the emulator is not importable: the runtime (``python_runtime.py``, beside this file) is loaded,
then the emulator's folder leaves ``sys.path``, and an editable install of the emulator's own
project (the dev venv's) no longer resolves its packages. The function sees its task root
(``LAMBDA_TASK_ROOT``, first on ``sys.path``) and its interpreter's site-packages, as in Lambda.

Loads the handler (the init phase, timed), then answers one invocation at a time, both through
``python_runtime``: awslambdaric's context, the Python runtime's error payloads. Requests come as
JSON lines on stdin. Replies go to the process's original stdout: a JSON header line, then the
payload's ``payload_bytes`` bytes (so that a response of any size can be measured, and refused,
by the emulator). The handler's stdout and stderr (descriptors 1 and 2) both write, unbuffered
as in Lambda's Python runtime, to the file the emulator gave as stderr: the emulator reads it,
even after it has killed the process (a timeout, out of memory).

Per invocation, ``_X_AMZN_TRACE_ID`` is set to the request's trace header, as awslambdaric does.
"""

from __future__ import annotations

import io
import json
import os
import sys
from importlib.machinery import PathFinder
from typing import TYPE_CHECKING, Any, BinaryIO

if TYPE_CHECKING or __package__:  # imported as emulator.bootstrap (type checking, tests)
    from emulator.python_runtime import init, invoke, make_context
else:  # run by file path: sys.path[0] is the emulator's folder, for this import only
    from python_runtime import init, invoke, make_context

    del sys.path[0]

_EMULATOR_PACKAGE = "emulator"


def isolate_imports(task_root: str) -> None:
    """The task root first on ``sys.path``, and no finder left that resolves the emulator's package outside it."""
    if task_root not in sys.path:
        sys.path.insert(0, task_root)
    for finder in list(sys.meta_path):
        if finder is PathFinder:  # sys.path's: the task root and site-packages
            continue
        # e.g. setuptools' editable install in the dev venv, which maps the project's packages to its folders
        spec = finder.find_spec(_EMULATOR_PACKAGE, None)
        if spec is not None and not (spec.origin or "").startswith(task_root + os.sep):
            sys.meta_path.remove(finder)


def unbuffered_output() -> None:
    """Descriptors 1 and 2 written through at each write: output before a kill is never lost."""
    for fd, name in ((1, "stdout"), (2, "stderr")):
        stream = io.TextIOWrapper(io.FileIO(fd, "w", closefd=False), encoding="utf-8", errors="backslashreplace", write_through=True)
        setattr(sys, name, stream)


def _send(replies: BinaryIO, header: dict[str, Any], payload: bytes = b"") -> None:
    replies.write(json.dumps({**header, "payload_bytes": len(payload)}).encode() + b"\n" + payload)
    replies.flush()


def serve(handler_name: str, requests: BinaryIO, replies: BinaryIO) -> None:
    loaded = init(handler_name)
    if loaded.handler is None:  # the failure is reported, then the environment ends
        _send(replies, {"kind": "init_error", "init_ms": loaded.init_ms}, (loaded.error or "").encode())
        return
    _send(replies, {"kind": "ready", "init_ms": loaded.init_ms})
    for line in requests:
        request = json.loads(line)
        os.environ["_X_AMZN_TRACE_ID"] = request["trace_id"]
        context = make_context(
            request["request_id"],
            deadline_ms=request["deadline_ms"],
            invoked_function_arn=request["invoked_function_arn"],
            client_context=request.get("client_context"),
        )
        outcome = invoke(loaded.handler, request["payload"], context)
        _send(replies, {"kind": outcome.kind, "duration_ms": outcome.duration_ms}, outcome.payload.encode())


def main() -> None:
    requests = os.fdopen(os.dup(0), "rb")
    replies = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)  # the emulator's capture file
    unbuffered_output()
    isolate_imports(os.environ.get("LAMBDA_TASK_ROOT", os.getcwd()))
    serve(sys.argv[1], requests, replies)


if __name__ == "__main__":
    main()
