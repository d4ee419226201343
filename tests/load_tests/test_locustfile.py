"""load_tests/locustfile.py against a real ``mlinfer serve`` on loopback: a few seconds of headless Locust
(.venv-tools/bin/locust, `make tools`), no failed request, and every task's request kind seen."""

from __future__ import annotations

import contextlib
import csv
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import httpx
import pytest

from emulator.loopback import free_port
from tests.conftest import REGISTRY_PATH, REPO_ROOT, require_models

LOCUST = REPO_ROOT / ".venv-tools" / "bin" / "locust"
LOCUSTFILE = REPO_ROOT / "load_tests" / "locustfile.py"
TOKEN = "locust-test-token"
SERVER_START_TIMEOUT_S = 120.0
RUN_SECONDS = 5
LOCUST_TIMEOUT_S = 90.0
EXPECTED_NAMES = {"/api/v1/predict [1 text]", "/api/v1/predict [batch]", "/health"}


def _tail(log: IO[str], chars: int = 4000) -> str:
    log.flush()
    log.seek(0)
    return log.read()[-chars:]


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    """`mlinfer serve` on a free 127.0.0.1 port with the in-process cache; stopped whatever happens."""
    require_models()
    mlinfer = Path(sys.executable).parent / "mlinfer"
    if not mlinfer.is_file():
        pytest.fail(f"{mlinfer} is missing: install the project into the venv (`make setup`)")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "MODEL_REGISTRY_PATH": str(REGISTRY_PATH),
        "AUTH_TOKEN": TOKEN,
        "CACHE_BACKEND": "memory",
        "LOG_LEVEL": "WARNING",
        "ENABLE_METRICS": "true",
        "WORKERS": "1",
    }
    with open(os.devnull, "rb") as stdin, tempfile.TemporaryFile(mode="w+") as log:
        proc = subprocess.Popen(
            [str(mlinfer), "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO_ROOT,
            env=env,
            stdin=stdin,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + SERVER_START_TIMEOUT_S
            with httpx.Client(timeout=2.0) as client:
                while True:
                    if proc.poll() is not None:
                        pytest.fail(f"mlinfer serve exited with {proc.returncode} before /health answered 200:\n{_tail(log)}")
                    with contextlib.suppress(httpx.TransportError):
                        if client.get(f"{url}/health").status_code == 200:
                            break
                    if time.monotonic() > deadline:
                        pytest.fail(f"mlinfer serve not healthy after {SERVER_START_TIMEOUT_S:.0f} s:\n{_tail(log)}")
                    time.sleep(0.2)
            yield url
        finally:
            _stop(proc)


def locust_env(token: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCUST_")}
    env.update(AUTH_TOKEN=token, MODEL_VERSIONS="v1,v2", PYTHONWARNINGS="ignore")
    return env


def test_locustfile_runs_against_the_server_without_failures(server_url: str, tmp_path: Path) -> None:
    if not LOCUST.is_file():
        pytest.fail(f"{LOCUST} is missing: run `make tools` (it installs locust from infra/tools-requirements.txt into .venv-tools)")
    prefix = tmp_path / "run"
    argv = [str(LOCUST), "-f", str(LOCUSTFILE), "--host", server_url, "--headless", "-u", "8", "-r", "8", "-t", f"{RUN_SECONDS}s"]
    argv += ["--only-summary", "--csv", str(prefix), "--stop-timeout", "5", "--loglevel", "WARNING"]
    result = subprocess.run(
        argv, cwd=REPO_ROOT, env=locust_env(TOKEN), capture_output=True, text=True, timeout=LOCUST_TIMEOUT_S, check=False
    )
    output = f"exit {result.returncode}\n--- stdout\n{result.stdout[-6000:]}\n--- stderr\n{result.stderr[-6000:]}"
    stats_csv = prefix.parent / f"{prefix.name}_stats.csv"
    assert stats_csv.is_file(), output
    with stats_csv.open(newline="") as f:
        rows = {row["Name"]: row for row in csv.DictReader(f)}
    total = rows["Aggregated"]
    assert int(total["Request Count"]) > 0, output
    assert int(total["Failure Count"]) == 0, output + "\n--- failures\n" + (prefix.parent / f"{prefix.name}_failures.csv").read_text()
    assert result.returncode == 0, output
    names = set(rows) - {"Aggregated"}
    assert EXPECTED_NAMES <= names, f"requests seen: {sorted(names)}\n{output}"
    assert any(n.startswith("/api/v1/predict [pinned ") for n in names), f"no pinned request in {sorted(names)}"


def test_locustfile_fails_a_wrong_token(server_url: str, tmp_path: Path) -> None:
    """The checks are real: with a token the server refuses, every prediction is a failure."""
    if not LOCUST.is_file():
        pytest.fail(f"{LOCUST} is missing: run `make tools` (it installs locust from infra/tools-requirements.txt into .venv-tools)")
    prefix = tmp_path / "wrong"
    argv = [str(LOCUST), "-f", str(LOCUSTFILE), "--host", server_url, "--headless", "-u", "2", "-r", "2", "-t", "2s"]
    argv += ["--only-summary", "--csv", str(prefix), "--stop-timeout", "2", "--loglevel", "WARNING"]
    result = subprocess.run(
        argv, cwd=REPO_ROOT, env=locust_env("not-the-token"), capture_output=True, text=True, timeout=LOCUST_TIMEOUT_S, check=False
    )
    with (prefix.parent / f"{prefix.name}_stats.csv").open(newline="") as f:
        rows = {row["Name"]: row for row in csv.DictReader(f)}
    predictions = [row for name, row in rows.items() if name.startswith("/api/v1/predict")]
    assert predictions, result.stdout + result.stderr
    assert all(int(r["Failure Count"]) == int(r["Request Count"]) > 0 for r in predictions), rows
    assert result.returncode != 0, "locust exits non-zero when requests failed"
