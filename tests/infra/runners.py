"""Running what an image runs, on loopback, every wait bounded: ``mlinfer serve`` up to /health,
and a Lambda handler under the real awslambdaric, fed by the emulator's Runtime API
(``emulator.server.RuntimeApiServer``, the server ``mlinfer emulate --runtime-api-port`` runs)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from emulator.server import RuntimeApiServer
from emulator.template import load_functions
from tests.conftest import REPO_ROOT
from tests.network import wait_until_ready

TOKEN = "secret-token"  # the X-Token of events/*.json
SERVER_STARTUP_S = 120.0
RUNTIME_INIT_S = 120.0


def stop(process: subprocess.Popen[bytes], grace_s: float = 15.0) -> None:
    process.terminate()
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def log_tail(path: Path, limit: int = 6000) -> str:
    return path.read_text(errors="replace")[-limit:] if path.exists() else "(no log)"


@dataclass(frozen=True)
class Server:
    base_url: str
    log_path: Path

    def health(self) -> dict[str, Any]:
        response = httpx.get(f"{self.base_url}/health", timeout=10)
        assert response.status_code == 200, response.text
        health: dict[str, Any] = response.json()
        return health

    def predict(self, texts: list[str]) -> tuple[int, dict[str, Any]]:
        response = httpx.post(f"{self.base_url}/api/v1/predict", headers={"X-Token": TOKEN}, json={"texts": texts}, timeout=60)
        return response.status_code, response.json()


def with_loopback(command: Sequence[str], port: int) -> list[str]:
    """The image's ``mlinfer serve --host 0.0.0.0 --port 8080`` bound to 127.0.0.1 and a free port."""
    rewritten = list(command)
    for option, value in (("--host", "127.0.0.1"), ("--port", str(port))):
        if option in rewritten:
            rewritten[rewritten.index(option) + 1] = value
        else:
            rewritten += [option, value]
    return rewritten


@contextmanager
def served(command: Sequence[str], *, env: Mapping[str, str], cwd: Path, log_path: Path, port: int) -> Iterator[Server]:
    """Start the server command (already bound to 127.0.0.1:``port``) and wait for /health 200."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(list(command), cwd=cwd, env=dict(env), stdout=log, stderr=subprocess.STDOUT)
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_until_ready(process, f"{base_url}/health", log_path, what=f"{command[0]} serve", timeout_s=SERVER_STARTUP_S)
        yield Server(base_url, log_path)
    finally:
        stop(process)


@contextmanager
def runtime_api(function: str, log_path: Path, template: Path = REPO_ROOT / "template.yaml") -> Iterator[RuntimeApiServer]:
    """The emulator's Lambda Runtime API for ``function`` of the template, on 127.0.0.1 (a free port)."""
    spec = load_functions(template)[function]
    with log_path.open("a", encoding="utf-8") as log, RuntimeApiServer(spec, log_sink=lambda _function, text: log.write(text)) as api:
        yield api


@contextmanager
def lambda_runtime(command: Sequence[str], *, env: Mapping[str, str], cwd: Path, log_path: Path, api: RuntimeApiServer) -> Iterator[Path]:
    """Start the runtime (``python -m awslambdaric <handler>``) against ``api`` and wait until its
    init is done: an invocation's timeout counts from the invoke, so it must not include the init."""
    with log_path.open("wb") as log:
        env = {**env, "AWS_LAMBDA_RUNTIME_API": api.address}
        process = subprocess.Popen(list(command), cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        if not api.wait_until_initialised(RUNTIME_INIT_S):
            state = f"exited with {process.returncode}" if process.poll() is not None else f"did not poll within {RUNTIME_INIT_S}s"
            pytest.fail(f"the runtime {state} during init:\n{log_tail(log_path)}")
        yield log_path
    finally:
        stop(process)


def invoke(api: RuntimeApiServer, event: bytes) -> Any:
    """One invocation through the runtime that polls ``api``; fails on a function error."""
    invocation = api.invoke(event)
    assert not invocation.function_error, invocation.payload.decode()
    return json.loads(invocation.payload)
