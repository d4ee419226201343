"""A Lambda handler in a fresh execution environment of the emulator: ``run_lambda``.

The module's ``handler`` is loaded in a new process (a cold start) by the emulator's bootstrap,
then invoked once per event, in order, in that same now-warm environment: Lambda's environment
variables, awslambdaric's context, the Python runtime's error handling. What the handler
writes to stdout and stderr comes back as the function's log, as CloudWatch would get it.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from emulator.pool import Invocation, LogSink, WorkerPool
from emulator.template import FunctionSpec
from tests.conftest import REGISTRY_PATH, REPO_ROOT

FUNCTION_NAME = "ml-inference-test"
MEMORY_MB = 2048
TIMEOUT_S = 120.0
DEFAULT_ENVIRONMENT = {
    "AUTH_TOKEN": "lambda-token",
    "MODEL_REGISTRY_PATH": str(REGISTRY_PATH),
    "ENABLE_METRICS": "false",
    "SHADOW_MODE": "inline",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_METRICS_NAMESPACE": "MLInferenceTest",
}


@dataclass(frozen=True)
class Run:
    init_ms: float
    responses: list[dict[str, Any]]
    logs: list[dict[str, Any]]
    """The JSON lines of the function's log (init and every invocation)."""


def run_lambda(module: str, events: list[dict[str, Any]], **env: str) -> Run:
    """Start ``module.handler`` in a new environment and invoke it with each event; fail on a function error."""
    spec = FunctionSpec(
        FUNCTION_NAME,
        f"{module}.handler",
        REPO_ROOT,
        memory_mb=MEMORY_MB,
        timeout_s=TIMEOUT_S,
        environment={**DEFAULT_ENVIRONMENT, **env},
    )
    logged: list[str] = []
    invocations = asyncio.run(_invoke_in_turn(spec, events, os.environ, lambda _function, text: logged.append(text)))
    log = "".join(logged)
    if invocations[-1].function_error:
        pytest.fail(f"{spec.handler} failed: {invocations[-1].payload.decode()}\n{log[-6000:]}")
    return Run(
        init_ms=invocations[0].init_ms or 0.0,
        responses=[json.loads(invocation.payload) for invocation in invocations],
        logs=[json.loads(line) for line in log.splitlines() if line.startswith("{")],
    )


async def _invoke_in_turn(spec: FunctionSpec, events: list[dict[str, Any]], host: Mapping[str, str], sink: LogSink) -> list[Invocation]:
    """The events' invocations, in order, until the first function error."""
    pool = WorkerPool(spec, host, max_concurrency=1, log_sink=sink)
    invocations: list[Invocation] = []
    try:
        for event in events:
            invocations.append(await pool.invoke(json.dumps(event).encode()))
            if invocations[-1].function_error:
                break
    finally:
        await pool.close()
    return invocations
