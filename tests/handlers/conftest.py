"""A real ``mlinfer serve`` process on an ephemeral 127.0.0.1 port, shared by the handler tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import REGISTRY_PATH, REPO_ROOT

TOKEN = "test-token"
STARTUP_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class LiveServer:
    base_url: str
    token: str
    log_path: Path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(log_path: Path, **env_overrides: str) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``mlinfer serve`` and wait until /health says ready; fail with its log otherwise."""
    port = _free_port()
    env = {
        **os.environ,
        "AUTH_TOKEN": TOKEN,
        "MODEL_REGISTRY_PATH": str(REGISTRY_PATH),
        "LOG_LEVEL": "WARNING",
        **env_overrides,
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "handlers.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{base_url}/health", timeout=1.0).status_code == 200:
                return process, base_url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    pytest.fail(f"server not ready after {STARTUP_TIMEOUT_S}s:\n{log_path.read_text()}")


def stop_server(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


@pytest.fixture(scope="session")
def live_server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    process, base_url = start_server(log_path)
    try:
        yield LiveServer(base_url=base_url, token=TOKEN, log_path=log_path)
    finally:
        stop_server(process)


@pytest.fixture()
def client(live_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server.base_url, timeout=30.0) as http:
        yield http
