"""Loopback helpers for tests that start real servers: free ports, and waiting for readiness.

``free_port`` is ``emulator.loopback``'s, the one the benchmarks use too.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx
import pytest

from emulator.loopback import free_port

__all__ = ["free_port", "wait_until_ready"]


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
