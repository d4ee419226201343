"""A real ``mlinfer serve`` process on an ephemeral 127.0.0.1 port, shared by the handler tests."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import REGISTRY_PATH, REPO_ROOT
from tests.network import free_port, wait_until_ready

TOKEN = "test-token"
STARTUP_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class LiveServer:
    base_url: str
    token: str
    log_path: Path


def start_server(log_path: Path, *args: str, unset: tuple[str, ...] = (), **env_overrides: str) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``mlinfer serve`` (with ``args``; ``unset`` removed from the environment) and wait until
    /health says ready; fail with its log otherwise."""
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k not in unset},
        "AUTH_TOKEN": TOKEN,
        "MODEL_REGISTRY_PATH": str(REGISTRY_PATH),
        "LOG_LEVEL": "WARNING",
        **env_overrides,
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "handlers.cli", "serve", "--host", "127.0.0.1", "--port", str(port), *args],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    wait_until_ready(process, f"{base_url}/health", log_path, what="server", timeout_s=STARTUP_TIMEOUT_S)
    return process, base_url


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
