"""handlers/v2/grpc_server.py in servers of its own: overload answered with when to retry, every worker
of ``--workers 2`` on one gRPC port, a port in use, the drain on SIGTERM, the work of a call past its
deadline dropped, and start-up without grpcio. Real ``mlinfer serve`` processes, the official client."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from tests.conftest import REPO_ROOT
from tests.handlers.test_server import long_texts
from tests.handlers.test_supervisor import fresh_get, metric_sum, until
from tests.network import SERVER_TOKEN, free_port, start_server, stop_server
from tests.registries import V1_MODEL, sentiment, write_registry

HEADERS = {"x-token": SERVER_TOKEN}


@dataclass(frozen=True)
class Server:
    process: subprocess.Popen[bytes]
    http_url: str
    grpc_port: int

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def in_flight(self) -> float:
        return metric_sum(httpx.get(f"{self.http_url}/metrics").text, "inference_in_flight_requests")


def v1_only(tmp_path: Path) -> Path:
    return write_registry(tmp_path, {"sentiment_analysis": sentiment({"v1": {"path": V1_MODEL, "status": "active"}})})


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    started: list[subprocess.Popen[bytes]] = []

    def start(*args: str, **env: str) -> Server:
        grpc_port = free_port()
        env = {"MODEL_REGISTRY_PATH": str(v1_only(tmp_path)), "CACHE_BACKEND": "none", **env}
        process, http_url = start_server(tmp_path / f"server-{len(started)}.log", *args, GRPC_PORT=str(grpc_port), **env)
        started.append(process)
        return Server(process, http_url, grpc_port)

    yield start
    for process in started:
        stop_server(process)


def texts_input(texts: list[str]) -> triton.InferInput:
    tensor = triton.InferInput("text", [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=np.object_))
    return tensor


def infer(address: str, texts: list[str], **kwargs: Any) -> triton.InferResult:
    """One call on a connection of its own."""
    with triton.InferenceServerClient(address) as client:
        return client.infer("sentiment_analysis", [texts_input(texts)], model_version="v1", headers=HEADERS, **kwargs)


def listening_sockets(port: int) -> int:
    """TCP sockets listening on ``port`` (any address), from /proc/net/tcp and tcp6."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            next(rows)
            for row in rows:
                local, state = row.split()[1], row.split()[3]
                count += int(local.rsplit(":", 1)[1], 16) == port and state == "0A"
    return count


def test_overload_is_unavailable_and_says_when_to_retry(serve: Any) -> None:
    server = serve(MAX_QUEUED_INPUTS="1")
    with grpc.insecure_channel(server.grpc_address) as channel:
        from tritonclient.grpc import service_pb2, service_pb2_grpc

        tensor = service_pb2.ModelInferRequest.InferInputTensor(name="text", datatype="BYTES", shape=[2])
        raw = b"".join(len(t).to_bytes(4, "little") + t for t in (b"one", b"two"))
        request = service_pb2.ModelInferRequest(model_name="sentiment_analysis", inputs=[tensor], raw_input_contents=[raw])
        with pytest.raises(grpc.RpcError) as caught:
            service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, metadata=tuple(HEADERS.items()), timeout=30)
    error = caught.value
    assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
    assert "MAX_QUEUED_INPUTS" in error.details() and "retry after 1 s" in error.details()
    trailers = dict(error.trailing_metadata() or ())
    assert trailers["error-code"] == "overloaded" and trailers["retry-after"] == "1"
    assert trailers["grpc-retry-pushback-ms"] == "1000", "gRPC's own retry policy reads this one"


def test_every_worker_serves_grpc_on_the_one_port(serve: Any) -> None:
    server = serve("--workers", "2")
    until(lambda: len(fresh_get(server.http_url, "/health").json()["workers"] or []) == 2, "both workers published")
    until(lambda: listening_sockets(server.grpc_port) == 2, "both workers listening on GRPC_PORT (SO_REUSEPORT)")
    for i in range(6):  # a connection each: the kernel spreads them over the workers
        assert infer(server.grpc_address, [f"call {i} was a pleasure"]).as_numpy("label").shape == (1,)
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=60) == 0
    assert listening_sockets(server.grpc_port) == 0


def test_a_grpc_port_in_use_fails_start_up(tmp_path: Path) -> None:
    with socket.socket() as taken:
        # Even a socket that allows sharing: a lone server process binds its port alone.
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "handlers.cli", "serve", "--workers", "1", "--host", "127.0.0.1", "--port", str(free_port())],
            cwd=REPO_ROOT,
            env={**os.environ, "MODEL_REGISTRY_PATH": str(v1_only(tmp_path)), "GRPC_PORT": str(port), "AUTH_TOKEN": SERVER_TOKEN},
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode != 0
    assert f"cannot bind the gRPC port 127.0.0.1:{port} (GRPC_PORT)" in result.stderr, result.stderr[-3000:]


def test_without_grpcio_start_up_fails_naming_the_extra(tmp_path: Path) -> None:
    # As in the Lambda image, which has no grpcio: importing grpc fails.
    code = "import sys; sys.modules['grpc'] = None; from handlers.cli import main; sys.exit(main())"
    result = subprocess.run(
        [sys.executable, "-c", code, "serve", "--workers", "1", "--host", "127.0.0.1", "--port", str(free_port())],
        cwd=REPO_ROOT,
        env={**os.environ, "MODEL_REGISTRY_PATH": str(v1_only(tmp_path)), "GRPC_PORT": str(free_port()), "AUTH_TOKEN": SERVER_TOKEN},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "pip install 'ml-inference-system[server]'" in result.stderr, result.stderr[-3000:]


def post_texts(http_url: str, texts: list[str], statuses: list[int]) -> None:
    body = {"texts": texts, "model_version": "v1"}
    statuses.append(httpx.post(f"{http_url}/api/v1/predict", json=body, headers={"X-Token": SERVER_TOKEN}, timeout=120.0).status_code)


def grpc_port_open(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_sigterm_drains_grpc_beside_http_then_exits_zero(serve: Any) -> None:
    server = serve(INSTANCES="1", SHUTDOWN_TIMEOUT_S="60", MAX_QUEUE_MS="120000")
    results: list[Any] = []
    statuses: list[int] = []
    call = threading.Thread(target=lambda: results.append(infer(server.grpc_address, long_texts("drain", 64))))
    call.start()
    until(lambda: server.in_flight() == 1, "the gRPC call in flight")
    request = threading.Thread(target=post_texts, args=(server.http_url, long_texts("drain-http", 64), statuses))
    request.start()  # queued behind the gRPC call on the one instance: HTTP drains after it
    until(lambda: server.in_flight() == 2, "the HTTP request in flight too")
    server.process.send_signal(signal.SIGTERM)
    until(lambda: not grpc_port_open(server.grpc_port), "the gRPC port closed", timeout_s=10)
    assert request.is_alive(), "gRPC refuses new calls at SIGTERM, not once HTTP has drained"
    call.join(120)
    request.join(120)
    assert len(results) == 1 and results[0].as_numpy("label").shape == (64,), "the call in flight finished"
    assert statuses == [200]
    assert server.process.wait(timeout=60) == 0


def test_the_work_of_a_call_past_its_deadline_never_runs(serve: Any) -> None:
    server = serve(INSTANCES="1", BATCH_SIZE="8", MAX_QUEUE_MS="120000")
    results: list[Any] = []
    blocker = threading.Thread(target=lambda: results.append(infer(server.grpc_address, long_texts("blocker", 64))))
    blocker.start()
    until(lambda: server.in_flight() == 1, "the blocker in flight")
    with pytest.raises(InferenceServerException) as caught:
        infer(server.grpc_address, long_texts("gone", 64), client_timeout=1.0)
    assert caught.value.status() == "StatusCode.DEADLINE_EXCEEDED"
    blocker.join(120)
    assert len(results) == 1

    def cancel_counted() -> bool:
        return metric_sum(httpx.get(f"{server.http_url}/metrics").text, "inference_requests_total", outcome="cancelled") == 1

    until(cancel_counted, "the cancelled call counted")
    ran = metric_sum(httpx.get(f"{server.http_url}/metrics").text, "inference_batch_size_sum", model_version="v1")
    assert ran < 64 + 64, f"{ran} inputs ran: the work of the call past its deadline should have been dropped"
    assert server.in_flight() == 0
