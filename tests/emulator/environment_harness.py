"""Functions of ``tests/emulator/handlers_environments.py`` run in real execution environments (``WorkerPool``)."""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from emulator import sandbox
from emulator.pool import DEFAULT_OPTIONS, Invocation, InvokeOptions, WorkerPool
from emulator.template import FunctionSpec
from emulator.worker import DEFAULT_ENVIRONMENT, EnvironmentOptions
from tests.conftest import REPO_ROOT

HANDLERS = "tests.emulator.handlers_environments"
RUN_TIMEOUT_S = 60.0
T = TypeVar("T")


def function(handler: str, *, memory_mb: int = 128, timeout_s: float = 2.0, **fields: Any) -> FunctionSpec:
    """A function of the handlers module, its code folder the repository (as the test templates' CodeUri)."""
    return FunctionSpec(f"Env{handler.title().replace('_', '')}", f"{HANDLERS}.{handler}", REPO_ROOT, memory_mb, timeout_s, **fields)


def run_pool(
    spec: FunctionSpec,
    body: Callable[[WorkerPool], Awaitable[T]],
    *,
    options: EnvironmentOptions = DEFAULT_ENVIRONMENT,
    max_concurrency: int = 2,
    logs: list[str] | None = None,
) -> T:
    """``body(pool)`` on a new pool of ``spec``, within ``RUN_TIMEOUT_S``; the pool is closed after."""

    async def main() -> T:
        sink = (lambda _name, text: logs.append(text)) if logs is not None else (lambda _name, _text: None)
        pool = WorkerPool(spec, os.environ, max_concurrency=max_concurrency, log_sink=sink, options=options)
        try:
            return await asyncio.wait_for(body(pool), RUN_TIMEOUT_S)
        finally:
            await pool.close()

    return asyncio.run(main())


def invoke(
    spec: FunctionSpec,
    *events: dict[str, Any],
    options: EnvironmentOptions = DEFAULT_ENVIRONMENT,
    invoke_options: InvokeOptions = DEFAULT_OPTIONS,
) -> list[Invocation]:
    """The events, one after the other, in one pool (so in one environment while it lives)."""

    async def body(pool: WorkerPool) -> list[Invocation]:
        return [await pool.invoke(json.dumps(event).encode(), options=invoke_options) for event in events]

    return run_pool(spec, body, options=options)


def answer(invocation: Invocation) -> Any:
    return json.loads(invocation.payload)


def report(invocation: Invocation) -> str:
    line: str = invocation.log.splitlines()[-1]
    assert line.startswith("REPORT "), invocation.log
    return line


def max_memory_used(invocation: Invocation) -> int:
    match = re.search(r"Max Memory Used: (\d+) MB", report(invocation))
    assert match, report(invocation)
    return int(match.group(1))


def require_namespaces() -> None:
    """Fail (never skip) where environments cannot have namespaces: these machines allow them."""
    support = sandbox.probe()
    if not support.namespaces:
        pytest.fail(
            "user and mount namespaces do not work here, so /tmp cannot be private nor the code folder read-only "
            f"({support.reason}); allow unprivileged user namespaces (sysctl user.max_user_namespaces > 0, "
            "kernel.unprivileged_userns_clone=1, or a container run with --security-opt seccomp=unconfined)"
        )
