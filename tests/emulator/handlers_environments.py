"""Tiny Lambda handlers that look at their own execution environment: memory, /tmp, code folder, imports, context."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

MB = 1024 * 1024


def allocate(event: Any, context: Any) -> dict[str, Any]:
    """Touches ``mb`` MB (every page written, so it is resident), holds it ``hold_s``, then answers."""
    print(f"allocating {event['mb']} MB")
    block = b"x" * (int(event["mb"]) * MB)
    time.sleep(float(event.get("hold_s", 0)))
    return {"allocated_mb": len(block) // MB}


def allocate_in_child(event: Any, context: Any) -> dict[str, Any]:
    """A child process allocates ``mb`` MB: the environment's memory is its whole process tree."""
    code = f"import time; block = b'x' * ({int(event['mb'])} * {MB}); time.sleep(5)"
    subprocess.run([sys.executable, "-c", code], check=False)
    return {"child": "done"}


def own_entries(folder: str) -> set[str]:
    """The entries of ``folder`` that hold this environment's own code or interpreter (a checkout under /tmp, kept
    visible in its private /tmp): not what another environment left."""
    own = set()
    for path in (os.environ.get("LAMBDA_TASK_ROOT", ""), os.path.realpath(__file__), sys.prefix):
        relative = os.path.relpath(path, folder) if path else os.pardir
        if not relative.startswith(os.pardir):
            own.add(relative.split(os.sep, 1)[0])
    return own


def listing(folder: str) -> list[str]:
    """``folder``'s entries but for this environment's own (``own_entries``)."""
    return sorted(set(os.listdir(folder)) - own_entries(folder))


def temporary_folder(event: Any, context: Any) -> dict[str, Any]:
    """The temporary folder: what it held before this wrote ``name`` into it, what after ``hold_s``, and its size."""
    folder = tempfile.gettempdir()
    before = listing(folder)
    with open(os.path.join(folder, event["name"]), "w") as marker:
        marker.write(context.aws_request_id)
    time.sleep(float(event.get("hold_s", 0)))
    size = os.statvfs(folder)
    return {
        "folder": folder,
        "before": before,
        "after": listing(folder),
        "tmpdir": os.environ.get("TMPDIR"),
        "size_mb": size.f_blocks * size.f_frsize // MB,
    }


def write_code_folder(event: Any, context: Any) -> dict[str, Any]:
    """Tries to create a file in the task root; answers the error, if any."""
    path = os.path.join(os.environ["LAMBDA_TASK_ROOT"], event["name"])
    try:
        with open(path, "w") as file:
            file.write("written by the function")
    except OSError as exc:
        return {"written": False, "error": exc.strerror}
    os.remove(path)
    return {"written": True, "error": None}


def imports(event: Any, context: Any) -> dict[str, Any]:
    """Which of ``modules`` the function can import, and its ``sys.path``."""
    found: dict[str, str | None] = {}
    for name in event["modules"]:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            found[name] = f"ImportError: {exc}"
        else:
            found[name] = getattr(module, "__file__", None) or "namespace"
    return {"modules": found, "sys_path": sys.path, "executable": sys.executable}


def respond_with(event: Any, context: Any) -> str:
    """A response of ``bytes`` characters (JSON-encoded: two bytes more)."""
    return "x" * int(event["bytes"])


def print_then_sleep(event: Any, context: Any) -> None:
    """Prints (no newline at the end of the second write), then outlives its timeout."""
    print("printed before the timeout")
    sys.stdout.write("and this, unterminated")
    time.sleep(float(event.get("seconds", 10)))


def exit_now(event: Any, context: Any) -> None:
    print("exiting")
    os._exit(int(event.get("status", 3)))


def context_view(event: Any, context: Any) -> dict[str, Any]:
    """The context and the per-invocation environment the function got."""
    client = context.client_context
    return {
        "client_context": None if client is None else {"custom": client.custom, "env": client.env},
        "installation_id": None if client is None or client.client is None else client.client.installation_id,
        "trace_id": os.environ.get("_X_AMZN_TRACE_ID"),
        "invoked_function_arn": context.invoked_function_arn,
        "function_version": context.function_version,
        "log_stream_name": context.log_stream_name,
        "version_variable": os.environ["AWS_LAMBDA_FUNCTION_VERSION"],
        "pid": os.getpid(),
    }
