"""load_tests/locustfile.py against a real ``mlinfer serve`` on loopback: a few seconds of headless Locust
(.venv-tools/bin/locust, `make tools`), no failed request, and every task's request kind seen."""

from __future__ import annotations

import csv
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, require_models
from tests.network import start_server, stop_server

LOCUST = REPO_ROOT / ".venv-tools" / "bin" / "locust"
LOCUSTFILE = REPO_ROOT / "load_tests" / "locustfile.py"
TOKEN = "locust-test-token"
RUN_SECONDS = 5
LOCUST_TIMEOUT_S = 90.0
EXPECTED_NAMES = {"/api/v1/predict [1 text]", "/api/v1/predict [batch]", "/health"}


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mlinfer serve` on a free 127.0.0.1 port with the in-process cache; stopped whatever happens."""
    require_models()
    log_path = tmp_path_factory.mktemp("locust-server") / "server.log"
    process, url = start_server(log_path, AUTH_TOKEN=TOKEN, CACHE_BACKEND="memory", ENABLE_METRICS="true", WORKERS="1")
    try:
        yield url
    finally:
        stop_server(process)


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
