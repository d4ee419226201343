"""Loopback helpers for tests that start real servers: free ports, waiting for readiness, and a
real ``mlinfer serve`` process.

``free_port`` is ``emulator.loopback``'s, the one the benchmarks use too.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from emulator.loopback import free_port
from tests.conftest import REGISTRY_PATH, REPO_ROOT

__all__ = ["SERVER_TOKEN", "free_port", "start_server", "stop_server", "wait_until_ready"]

SERVER_TOKEN = "test-token"
STARTUP_TIMEOUT_S = 60.0


def wait_until_ready(process: subprocess.Popen[bytes], url: str, log_path: Path, *, what: str, timeout_s: float) -> None:
    """Poll ``url`` until it answers 200; fail with the process's log if it exits or times out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{what} exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    pytest.fail(f"{what} not ready after {timeout_s}s:\n{log_path.read_text()}")


def start_server(
    log_path: Path, *args: str, unset: tuple[str, ...] = (), ready_path: str = "/health", **env_overrides: str
) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``mlinfer serve`` on a free 127.0.0.1 port (with ``args``; ``unset`` removed from the
    environment) and wait until ``ready_path`` answers 200; fail with its log otherwise."""
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k not in unset},
        "AUTH_TOKEN": SERVER_TOKEN,
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
    wait_until_ready(process, f"{base_url}{ready_path}", log_path, what="server", timeout_s=STARTUP_TIMEOUT_S)
    return process, base_url


def stop_server(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)
