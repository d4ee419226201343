"""Batching under faults and overload, end to end: a real `mlinfer serve` process (one worker,
one single-threaded model instance, no result cache) flooded over loopback.

Each test leaves the server idle (``_idle``) so the next one starts from an empty queue.
"""

from __future__ import annotations

import json
import re
import select
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.network import SERVER_TOKEN, start_server, stop_server

MAX_QUEUE_MS = 1000
REQUEST_TIMEOUT_MS = 8000
HEADERS = {"X-Token": SERVER_TOKEN}
LONG = " ".join(["an honest, patient and quietly moving film about two brothers who travel"] * 140)[:9_990]  # MAX_TEXT_CHARS is 10,000
MEDIUM = "A warm, funny and surprisingly moving story about a family that travels across the country, told with patience and care."


@dataclass(frozen=True)
class Server:
    base_url: str
    log_path: Path


@pytest.fixture(scope="module")
def server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log_path = tmp_path_factory.mktemp("overload") / "server.log"
    process, base_url = start_server(
        log_path,
        "--workers",
        "1",
        WORKERS="1",
        INSTANCES="1",
        INTRA_OP_THREADS="1",
        CACHE_BACKEND="none",
        MAX_QUEUE_MS=str(MAX_QUEUE_MS),
        MAX_QUEUED_INPUTS="1024",
        REQUEST_TIMEOUT_MS=str(REQUEST_TIMEOUT_MS),
        MAX_BATCH_TOKENS="4096",
    )
    try:
        yield Server(base_url, log_path)
    finally:
        stop_server(process)


def _metric(server: Server, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include ``labels``."""
    text = httpx.get(f"{server.base_url}/metrics", headers=HEADERS, timeout=10).text
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{name}(?:\{{(.*)\}})? (\S+)$", line)
        if match and all(f'{key}="{value}"' in (match.group(1) or "") for key, value in labels.items()):
            total += float(match.group(2))
    return total


def _computed(server: Server) -> float:
    """Inputs the runtime ran (the batch-size histogram's sum)."""
    return _metric(server, "inference_batch_size_sum", model="sentiment_analysis")


def _idle(server: Server, timeout_s: float = 30.0) -> None:
    """Wait until nothing is queued or running: nothing queued, and the computed count still for
    a second (longer than a batch of this server takes)."""
    deadline = time.monotonic() + timeout_s
    readings: list[float] = []
    while time.monotonic() < deadline:
        readings = [*readings[-2:], _computed(server)]
        if len(readings) == 3 and len(set(readings)) == 1 and _metric(server, "inference_queued_inputs") == 0:
            return
        time.sleep(0.5)
    pytest.fail("the server did not go idle")


def _predict(client: httpx.Client, texts: list[str]) -> tuple[int, float, httpx.Response]:
    started = time.monotonic()
    response = client.post("/api/v1/predict", json={"texts": texts, "model_version": "v1"}, headers=HEADERS)
    return response.status_code, time.monotonic() - started, response


def _answered(sock: socket.socket) -> bool:
    """Whether the server has sent anything on this connection yet."""
    return bool(select.select([sock], [], [], 0)[0])


def _raw_request(server: Server, body: bytes, path: str = "/api/v1/predict") -> socket.socket:
    """Send a predict request on a raw socket and leave it open (the caller closes it to go away)."""
    host, port = server.base_url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nX-Token: {SERVER_TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode() + body)
    return sock


def test_poisoned_requests_fail_alone_and_no_clean_request_fails(server: Server) -> None:
    """Texts that cannot be encoded (a lone surrogate) mixed with clean ones, 16 connections at once."""
    outcomes: list[tuple[bool, int, object]] = []
    lock = threading.Lock()

    def client(worker: int) -> None:
        with httpx.Client(base_url=server.base_url, timeout=30) as http:
            for i in range(12):
                poisoned = (worker + i) % 4 == 0
                texts = [f"{MEDIUM} {worker} {i}", "fine"]
                body = json.dumps({"texts": texts, "model_version": "v1"})
                if poisoned:  # JSON's "\ud800": a lone surrogate, as a client can send it
                    body = body.replace('"fine"', '"fine \\ud800"')
                response = http.post("/api/v1/predict", content=body, headers={**HEADERS, "Content-Type": "application/json"})
                detail = response.json().get("error", {}).get("details") if response.status_code != 200 else None
                with lock:
                    outcomes.append((poisoned, response.status_code, detail))

    threads = [threading.Thread(target=client, args=(w,)) for w in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    clean = [status for poisoned, status, _ in outcomes if not poisoned]
    poisoned = [(status, detail) for is_poisoned, status, detail in outcomes if is_poisoned]
    assert len(clean) == 144 and len(poisoned) == 48
    assert clean.count(200) == len(clean), sorted(set(clean))
    assert all(status == 422 and detail == {"indexes": [1]} for status, detail in poisoned), poisoned[:3]
    _idle(server)


def test_a_flood_sheds_fast_and_every_admitted_request_finishes_within_its_deadline(server: Server) -> None:
    """24 connections flood 32-text requests for 4 s while a client sends single-text probes: the
    probes are served, refusals come at once with Retry-After, and admitted requests finish within
    MAX_QUEUE_MS plus a bound (their own compute and the batch ahead, with room for a noisy machine)."""
    _idle(server)
    shed_before = _metric(server, "inference_shed_inputs_total", reason="queue_wait")
    stop = time.monotonic() + 4.0
    flood: list[tuple[int, float, str | None]] = []
    lock = threading.Lock()

    def flooder(worker: int) -> None:
        with httpx.Client(base_url=server.base_url, timeout=30) as http:
            i = 0
            while time.monotonic() < stop:
                status, latency, response = _predict(http, [f"{MEDIUM} {worker} {i} {j}" for j in range(32)])
                with lock:
                    flood.append((status, latency, response.headers.get("retry-after")))
                i += 1
                if status != 200:
                    time.sleep(0.1)  # a client that ignores Retry-After, but does not spin

    threads = [threading.Thread(target=flooder, args=(w,)) for w in range(24)]
    for thread in threads:
        thread.start()
    probes: list[tuple[int, float]] = []
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        time.sleep(0.5)
        for i in range(10):
            status, latency, _ = _predict(http, [f"a short probe {i}"])
            probes.append((status, latency))
            time.sleep(0.25)
    for thread in threads:
        thread.join(60)

    bound_s = MAX_QUEUE_MS / 1000 + 3.0
    admitted = [latency for status, latency, _ in flood if status == 200]
    refused = [(latency, retry) for status, latency, retry in flood if status == 503]
    assert {status for status, _, _ in flood} <= {200, 503}
    assert [status for status, _ in probes] == [200] * 10, probes
    assert max(latency for _, latency in probes) < bound_s, probes
    assert admitted and max(admitted) < bound_s, (len(admitted), max(admitted, default=0))
    assert refused, "the flood was never shed"
    assert all(retry is not None and int(retry) >= 1 for _, retry in refused)
    assert sorted(latency for latency, _ in refused)[len(refused) // 2] < 0.5  # refused at once, not after a wait
    assert _metric(server, "inference_shed_inputs_total", reason="queue_wait") > shed_before
    _idle(server)


def test_a_short_request_is_not_held_behind_a_large_one_and_a_client_that_left_is_not_computed(server: Server) -> None:
    """256 texts of 10,000 characters, then a short request: the short one waits about one batch.
    Then the large request's client goes away, and its remaining work is dropped."""
    _idle(server)
    before = _computed(server)
    big = _raw_request(server, json.dumps({"texts": [f"{LONG} {i}" for i in range(256)], "model_version": "v1"}).encode())
    try:
        time.sleep(1.0)  # the large request is running
        with httpx.Client(base_url=server.base_url, timeout=30) as http:
            delays = []
            for i in range(3):
                status, latency, _ = _predict(http, [f"a short request {i}"])
                assert status == 200
                delays.append(latency)
        assert max(delays) < 2.5, delays
        assert not _answered(big)  # the large request is still being computed
    finally:
        big.close()
    _idle(server)
    computed = _computed(server) - before - 3
    assert 0 < computed < 128, computed  # of its 256 texts
    assert _metric(server, "inference_shed_inputs_total", reason="cancelled") > 0


def test_work_of_clients_that_disconnect_is_not_computed(server: Server) -> None:
    """Clients send 32 long texts each and go away after 0.5 s: their work stops with them, but
    for the batch running then (a 32-text request used to run as one batch of several seconds)."""
    _idle(server)
    cancelled_before = _metric(server, "inference_requests_total", outcome="cancelled")
    computed = []
    for c in range(3):
        before = _computed(server)
        sock = _raw_request(server, json.dumps({"texts": [f"{LONG} {c} {i}" for i in range(32)], "model_version": "v1"}).encode())
        time.sleep(0.5)
        assert not _answered(sock)  # admitted, and still running
        sock.close()
        _idle(server)
        computed.append(_computed(server) - before)
    assert max(computed) <= 16, computed  # of 32 texts each
    assert _metric(server, "inference_requests_total", outcome="cancelled") - cancelled_before == 3


def test_work_of_an_open_inference_protocol_client_that_disconnects_is_not_computed(server: Server) -> None:
    """The same on /v2/.../infer: the client's 32 long texts stop with it."""
    _idle(server)
    before = _computed(server)
    texts = [f"{LONG} v2 {i}" for i in range(32)]
    body = json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}]}).encode()
    sock = _raw_request(server, body, "/v2/models/sentiment_analysis/versions/v1/infer")
    time.sleep(0.5)
    assert not _answered(sock)  # admitted, and still running
    sock.close()
    _idle(server)
    assert _computed(server) - before <= 16
