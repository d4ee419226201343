"""handlers/supervisor.py and handlers/gunicorn_conf.py: several worker processes served as one.

Real servers on loopback: ``mlinfer serve --workers 2``, and the seed's gunicorn command. A
fresh connection per request lets the kernel's SO_REUSEPORT balancing pick a worker each time.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from engine.cpus import available_cpus
from tests.conftest import REPO_ROOT
from tests.handlers.conftest import TOKEN
from tests.network import free_port, start_server, stop_server, wait_until_ready
from tests.registries import sentiment, write_registry

ADMIN = "admin-secret"
WAIT_S = 60.0


def fresh_get(base_url: str, path: str, **kwargs: object) -> httpx.Response:
    """One request on a connection of its own."""
    with httpx.Client(base_url=base_url, timeout=30.0) as client:
        return client.get(path, **kwargs)  # type: ignore[arg-type]


def predict(base_url: str, text: str) -> httpx.Response:
    with httpx.Client(base_url=base_url, timeout=30.0) as client:
        return client.post("/api/v1/predict", json={"texts": [text]}, headers={"X-Token": TOKEN})


def metric_sum(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def workers_seen(base_url: str, tries: int = 40) -> set[int]:
    return {fresh_get(base_url, "/health").json()["pid"] for _ in range(tries)}


def until(check: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout_s} s: {what}")
        time.sleep(0.2)


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    return write_registry(tmp_path, {"sentiment_analysis": sentiment()})


@pytest.fixture
def two_workers(registry: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    process, base_url = start_server(
        tmp_path / "server.log", "--workers", "2", MODEL_REGISTRY_PATH=str(registry), ADMIN_TOKEN=ADMIN, CACHE_BACKEND="none"
    )
    try:
        # /health answers once the first worker is ready: wait for both.
        until(lambda: len(fresh_get(base_url, "/health").json()["workers"] or []) == 2, "both workers published")
        yield process, base_url
    finally:
        stop_server(process)


def test_metrics_sum_every_worker_and_connections_reach_both(two_workers: tuple[subprocess.Popen[bytes], str]) -> None:
    _, base_url = two_workers
    pids = workers_seen(base_url)
    assert len(pids) == 2, f"SO_REUSEPORT spread 40 fresh connections over {pids}"
    sent = 40
    for i in range(sent):
        assert predict(base_url, f"request {i} was a pleasure").status_code == 200
    for _ in range(5):  # whichever worker answers, the figure is the sum
        text = fresh_get(base_url, "/metrics").text
        assert metric_sum(text, "inference_requests_total", outcome="ok") == sent
        assert metric_sum(text, "inference_inputs_total") == sent
    assert metric_sum(text, "inference_in_flight_requests") == 0
    assert metric_sum(text, "inference_queued_inputs") == 0


def test_admin_reload_reaches_every_worker_and_says_what_each_serves(
    two_workers: tuple[subprocess.Popen[bytes], str], registry: Path
) -> None:
    _, base_url = two_workers
    before = fresh_get(base_url, "/health").json()
    write_registry(registry.parent, {"sentiment_analysis": sentiment(default="v2")})
    with httpx.Client(base_url=base_url, timeout=120.0) as client:
        reply = client.post("/api/v1/admin/reload", headers={"X-Admin-Token": ADMIN})
    assert reply.status_code == 200, reply.text
    report = reply.json()
    digest = report["registry_digest"]
    assert digest != before["registry_digest"]
    assert len(report["workers"]) == 2
    assert {w["registry_digest"] for w in report["workers"]} == {digest}
    assert all(w["generation"] == 2 for w in report["workers"])
    # Every worker now answers with v2, whichever one a connection reaches.
    for i in range(20):
        reply = predict(base_url, f"after reload {i}")
        assert reply.json()["model_version"] == "v2"
    for _ in range(20):
        health = fresh_get(base_url, "/health").json()
        assert (health["registry_digest"], health["generation"]) == (digest, 2)


def test_sighup_to_the_supervisor_reloads_every_worker(two_workers: tuple[subprocess.Popen[bytes], str], registry: Path) -> None:
    process, base_url = two_workers
    write_registry(registry.parent, {"sentiment_analysis": sentiment(default="v2")})
    process.send_signal(signal.SIGHUP)

    def both_reloaded() -> bool:
        workers = fresh_get(base_url, "/health").json()["workers"]
        return len(workers) == 2 and all(w["generation"] == 2 for w in workers)

    until(both_reloaded, "both workers at generation 2 after SIGHUP")


def test_a_dead_worker_is_replaced(two_workers: tuple[subprocess.Popen[bytes], str]) -> None:
    _, base_url = two_workers
    victim = fresh_get(base_url, "/health").json()["pid"]
    os.kill(victim, signal.SIGKILL)

    def replaced() -> bool:
        pids = {w["pid"] for w in fresh_get(base_url, "/health").json()["workers"]}
        return len(pids) == 2 and victim not in pids

    until(replaced, "a new worker in place of the killed one")
    assert predict(base_url, "still serving").status_code == 200


def test_sigterm_stops_every_worker_and_exits_zero(registry: Path, tmp_path: Path) -> None:
    process, base_url = start_server(tmp_path / "server.log", "--workers", "2", MODEL_REGISTRY_PATH=str(registry))
    until(lambda: len(fresh_get(base_url, "/health").json()["workers"] or []) == 2, "both workers published")
    pids = {w["pid"] for w in fresh_get(base_url, "/health").json()["workers"]}
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=40) == 0
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_a_port_in_use_fails_with_a_clear_message(registry: Path, tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "handlers.cli", "serve", "--workers", "2", "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO_ROOT,
            env={**os.environ, "MODEL_REGISTRY_PATH": str(registry)},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode != 0
    assert f"cannot bind 127.0.0.1:{port}" in result.stderr


def start_gunicorn(log_path: Path, *, workers: int = 2, **env_overrides: str) -> tuple[subprocess.Popen[bytes], int]:
    """The seed's gunicorn command on a free 127.0.0.1 port, once every worker has published; fails with its log otherwise."""
    gunicorn = Path(sys.executable).parent / "gunicorn"
    if not gunicorn.is_file():
        pytest.fail(f"{gunicorn} is missing: install the cpu extra (pip install -e '.[cpu]'; make test does)")
    port = free_port()
    env = {
        **os.environ,
        "AUTH_TOKEN": TOKEN,
        "CACHE_BACKEND": "none",
        "LOG_LEVEL": "WARNING",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        **env_overrides,
    }
    for name in ("PROMETHEUS_MULTIPROC_DIR", "WORKERS_DIR"):
        env.pop(name, None)
    command = [str(gunicorn), "-c", "python:handlers.gunicorn_conf", "-w", str(workers), "-k", "uvicorn.workers.UvicornWorker"]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*command, "handlers.server:app_from_env()"], cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(process, f"{base_url}/health/ready", log_path, what="gunicorn", timeout_s=WAIT_S)
        until(lambda: len(fresh_get(base_url, "/health").json()["workers"] or []) == workers, "every gunicorn worker published")
    except BaseException:
        stop_gunicorn(process)
        raise
    return process, port


def stop_gunicorn(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=40)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def test_the_seeds_gunicorn_command_sums_metrics_and_reloads_every_worker(registry: Path, tmp_path: Path) -> None:
    log_path = tmp_path / "gunicorn.log"
    process, port = start_gunicorn(log_path, ADMIN_TOKEN=ADMIN, MODEL_REGISTRY_PATH=str(registry))
    base_url = f"http://127.0.0.1:{port}"
    try:
        for i in range(30):
            assert predict(base_url, f"gunicorn request {i}").status_code == 200
        assert metric_sum(fresh_get(base_url, "/metrics").text, "inference_requests_total", outcome="ok") == 30

        write_registry(registry.parent, {"sentiment_analysis": sentiment(default="v2")})
        with httpx.Client(base_url=base_url, timeout=120.0) as client:
            report = client.post("/api/v1/admin/reload", headers={"X-Admin-Token": ADMIN}).json()
        assert len(report["workers"]) == 2 and all(w["generation"] == 2 for w in report["workers"]), report
    finally:
        stop_gunicorn(process)
    assert not re.search(r"Traceback|Exception in ASGI", log_path.read_text()), log_path.read_text()[-3000:]


def test_the_default_is_one_worker_per_cpu(registry: Path, tmp_path: Path) -> None:
    """What `make serve` and the CPU image run: no --workers, no WORKERS."""
    unset = ("WORKERS", "INSTANCES", "INTRA_OP_THREADS", "WORKER_CPUS")
    process, base_url = start_server(tmp_path / "server.log", unset=unset, MODEL_REGISTRY_PATH=str(registry))
    try:
        cpus = available_cpus()
        if cpus == 1:
            assert fresh_get(base_url, "/health").json()["workers"] is None
            return
        until(lambda: len(fresh_get(base_url, "/health").json()["workers"] or []) == cpus, f"{cpus} workers published")
        assert predict(base_url, "the default serves").status_code == 200
    finally:
        stop_server(process)
