"""handlers/server.py: one ``mlinfer serve`` process: probes, drain on SIGTERM, work dropped for a client that left."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from tests.handlers.conftest import TOKEN, LiveServer
from tests.handlers.test_supervisor import metric_sum, until
from tests.network import start_server, stop_server
from tests.registries import sentiment, write_registry

LONG = " ".join(["an honest, patient and quietly moving film about two brothers"] * 8)


def long_texts(tag: str, count: int) -> list[str]:
    return [f"{LONG} {tag} {i}" for i in range(count)]


def test_live_and_ready_probes(live_server: LiveServer) -> None:
    live = httpx.get(f"{live_server.base_url}/health/live")
    assert live.status_code == 200 and live.json()["status"] == "alive"
    ready = httpx.get(f"{live_server.base_url}/health/ready")
    assert ready.status_code == 200 and ready.json() == {"status": "active", "ready": True}


def test_require_gpu_without_a_gpu_is_live_but_not_ready(tmp_path: Path) -> None:
    # /health stays 503 on purpose: wait for /health/live instead.
    registry = write_registry(tmp_path, {"sentiment_analysis": sentiment()})
    log_path = tmp_path / "server.log"
    server, base = start_server(
        log_path,
        ready_path="/health/live",
        MODEL_REGISTRY_PATH=str(registry),
        REQUIRE_GPU="true",
        EXECUTION_PROVIDERS="CUDAExecutionProvider,CPUExecutionProvider",
    )
    try:
        ready = httpx.get(f"{base}/health/ready")
        assert ready.status_code == 503, ready.text
        health = httpx.get(f"{base}/health").json()
        assert health["ready"] is False
        assert "sentiment_analysis:v1" in health["gpu_fallback"]
        assert health["models"][0]["providers"] == ["CPUExecutionProvider"]
        assert "falling back" in log_path.read_text() or "CPU fallback" in log_path.read_text()
    finally:
        stop_server(server)


def _post(base_url: str, texts: list[str], results: list[int]) -> None:
    with httpx.Client(base_url=base_url, timeout=120.0) as client:
        reply = client.post("/api/v1/predict", json={"texts": texts, "model_version": "v1"}, headers={"X-Token": TOKEN})
        results.append(reply.status_code)


def test_sigterm_drains_in_flight_requests_then_exits_zero(tmp_path: Path) -> None:
    registry = write_registry(tmp_path, {"sentiment_analysis": sentiment()})
    process, base_url = start_server(
        tmp_path / "server.log",
        MODEL_REGISTRY_PATH=str(registry),
        INSTANCES="1",
        CACHE_BACKEND="none",
        SHUTDOWN_TIMEOUT_S="60",
        MAX_QUEUE_MS="120000",  # the requests queue behind each other on one instance: none is shed
    )
    statuses: list[int] = []
    clients = [threading.Thread(target=_post, args=(base_url, long_texts(f"c{i}", 128), statuses)) for i in range(4)]
    try:
        for thread in clients:
            thread.start()
        until(lambda: metric_sum(httpx.get(f"{base_url}/metrics").text, "inference_in_flight_requests") == 4, "4 requests in flight")
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        for thread in clients:
            thread.join(120)
        assert process.wait(timeout=90) == 0
        assert statuses == [200, 200, 200, 200]
        assert time.monotonic() - started < 60
        # Once drained, the port is closed.
        port = urlsplit(base_url).port
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0
    finally:
        stop_server(process)


def test_work_of_a_client_that_disconnected_never_runs(tmp_path: Path) -> None:
    registry = write_registry(tmp_path, {"sentiment_analysis": sentiment()})
    process, base_url = start_server(
        tmp_path / "server.log",
        MODEL_REGISTRY_PATH=str(registry),
        INSTANCES="1",
        CACHE_BACKEND="none",
        BATCH_SIZE="8",
        MAX_QUEUE_MS="120000",  # the two requests queue on one instance: only the departed one may be dropped
    )
    try:
        statuses: list[int] = []
        blocker = threading.Thread(target=_post, args=(base_url, long_texts("blocker", 96), statuses))
        blocker.start()
        until(lambda: metric_sum(httpx.get(f"{base_url}/metrics").text, "inference_in_flight_requests") == 1, "the blocker in flight")
        body = json.dumps({"texts": long_texts("gone", 96), "model_version": "v1"}).encode()
        head = (
            f"POST /api/v1/predict HTTP/1.1\r\nHost: x\r\nX-Token: {TOKEN}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        port = urlsplit(base_url).port
        with socket.create_connection(("127.0.0.1", port)) as gone:
            gone.sendall(head.encode() + body)
            until(lambda: metric_sum(httpx.get(f"{base_url}/metrics").text, "inference_in_flight_requests") == 2, "both in flight")
        blocker.join(120)
        assert statuses == [200]

        def cancel_counted() -> bool:
            return metric_sum(httpx.get(f"{base_url}/metrics").text, "inference_requests_total", outcome="cancelled") == 1

        until(cancel_counted, "the cancel counted")
        text = httpx.get(f"{base_url}/metrics").text
        ran = metric_sum(text, "inference_batch_size_sum", model_version="v1")
        assert ran < 96 + 96, f"{ran} inputs ran: the departed client's work should have been dropped"
        assert metric_sum(text, "inference_in_flight_requests") == 0
    finally:
        stop_server(process)
