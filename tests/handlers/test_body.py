"""handlers/body.py: the token checked on the headers alone (401 before the body, then a close),
the size cap, gzip decoded within it, other encodings refused."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from engine.facade import InferenceEngine
from handlers.app import create_app
from tests.conftest import make_settings
from tests.network import SERVER_TOKEN, start_server, stop_server

CONNECTIONS = 200
DECLARED_BYTES = 4_000_000
SENT_BYTES = 3_900_000  # most of the body, then the client stalls
RSS_GROWTH_BOUND_MB = 60
REPLY_TIMEOUT_S = 10.0


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


class _PeakRss:
    """The largest RSS of a process while the block runs, sampled every 20 ms."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = _rss_bytes(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, _rss_bytes(self.pid))

    def __enter__(self) -> _PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module")
def one_worker(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, str]]:
    """`mlinfer serve --workers 1`: one process, so its RSS is the server's."""
    process, base_url = start_server(tmp_path_factory.mktemp("body") / "server.log", "--workers", "1")
    try:
        yield process.pid, base_url
    finally:
        stop_server(process)


def _stalled_unauthenticated_upload(host: str, port: int) -> tuple[bytes, float, bool, socket.socket]:
    """Headers without X-Token for a 4 MB body; wait for a reply; then send most of the body and
    stall. Returns the reply, how long it took, whether the server closed, and the open socket."""
    sock = socket.create_connection((host, port), timeout=REPLY_TIMEOUT_S)
    headers = f"POST /api/v1/predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {DECLARED_BYTES}\r\n\r\n"
    started = time.monotonic()
    sock.sendall(headers.encode() + b'{"texts": ["' + b"a" * 16_384)
    reply = b""
    try:
        while b"\r\n\r\n" not in reply:
            chunk = sock.recv(65_536)
            if not chunk:
                break
            reply += chunk
    except (TimeoutError, ConnectionError):
        pass
    elapsed = time.monotonic() - started
    chunk = b"a" * 262_144
    sent = 16_384
    try:
        while sent < SENT_BYTES:
            sock.sendall(chunk)
            sent += len(chunk)
    except (TimeoutError, ConnectionError):
        pass
    closed = False
    sock.settimeout(REPLY_TIMEOUT_S)
    try:
        while True:
            data = sock.recv(65_536)
            if not data:
                closed = True
                break
            reply += data
    except ConnectionError:
        closed = True
    except TimeoutError:
        pass
    return reply, elapsed, closed, sock


def test_unauthenticated_stalled_uploads_get_401_before_the_body_and_cost_no_memory(one_worker: tuple[int, str]) -> None:
    pid, base_url = one_worker
    host, port = base_url.removeprefix("http://").split(":")
    before = _rss_bytes(pid)
    with _PeakRss(pid) as rss, ThreadPoolExecutor(max_workers=CONNECTIONS) as pool:
        outcomes = list(pool.map(lambda _: _stalled_unauthenticated_upload(host, int(port)), range(CONNECTIONS)))
    try:
        growth_mb = (rss.peak - before) / 1e6
        not_401 = [reply[:60] for reply, _, _, _ in outcomes if not reply.startswith(b"HTTP/1.1 401")]
        assert not not_401, f"{len(not_401)} of {CONNECTIONS} got no 401 before their body, e.g. {not_401[:3]}"
        slow = sorted(elapsed for _, elapsed, _, _ in outcomes if elapsed > 5.0)
        assert not slow, f"{len(slow)} replies took over 5 s: {slow[-3:]}"
        assert all(closed for _, _, closed, _ in outcomes), "the server left a refused connection open"
        assert growth_mb < RSS_GROWTH_BOUND_MB, f"the server's RSS grew {growth_mb:.0f} MB (bound {RSS_GROWTH_BOUND_MB} MB)"
        assert all(b"connection: close" in reply.lower() for reply, _, _, _ in outcomes)
    finally:
        for *_, sock in outcomes:
            sock.close()
    assert httpx.get(f"{base_url}/health", timeout=10).status_code == 200


def test_a_refused_body_closes_the_connection_and_the_next_one_is_served(one_worker: tuple[int, str]) -> None:
    _, base_url = one_worker
    with httpx.Client(base_url=base_url, timeout=30.0) as http:
        refused = http.post("/api/v1/predict", content=b'{"texts": ["hi"]}', headers={"X-Token": "wrong"})
        assert refused.status_code == 401 and refused.headers["connection"] == "close"
        served = http.post("/api/v1/predict", json={"texts": ["hi"]}, headers={"X-Token": SERVER_TOKEN})
        assert served.status_code == 200, served.text


# In-process: the app over the session's engine.


def _post(engine: InferenceEngine, content: bytes, headers: dict[str, str], **overrides: object) -> httpx.Response:
    app = create_app(make_settings(**overrides), engine, manage_engine=False)

    async def post() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
            return await http.post("/api/v1/predict", content=content, headers={"X-Token": "secret-token", **headers})

    return asyncio.run(post())


def _code(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


def test_a_gzip_body_is_decoded(engine: InferenceEngine) -> None:
    body = gzip.compress(json.dumps({"texts": ["I love this product"], "model_version": "v1"}).encode())
    response = _post(engine, body, {"Content-Encoding": "gzip"})
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["prediction"] == "positive"


def test_a_gzip_bomb_is_413_once_its_decoded_size_passes_the_cap(engine: InferenceEngine) -> None:
    bomb = gzip.compress(b'{"texts": ["' + b"a" * 50_000_000 + b'"]}')
    assert len(bomb) < 100_000
    started = time.monotonic()
    response = _post(engine, bomb, {"Content-Encoding": "gzip"})
    assert _code(response) == (413, "payload_too_large")
    assert "decoded" in response.json()["error"]["message"]
    assert time.monotonic() - started < 5.0


@pytest.mark.parametrize(
    ("body", "encoding"),
    [(b"not gzip at all", "gzip"), (gzip.compress(b'{"texts": ["a"]}')[:-12], "gzip")],
    ids=["not-gzip", "truncated"],
)
def test_broken_gzip_is_422(engine: InferenceEngine, body: bytes, encoding: str) -> None:
    assert _code(_post(engine, body, {"Content-Encoding": encoding})) == (422, "invalid_request")


@pytest.mark.parametrize("encoding", ["br", "deflate", "gzip, gzip", "compress"])
def test_other_encodings_are_415(engine: InferenceEngine, encoding: str) -> None:
    response = _post(engine, b'{"texts": ["a"]}', {"Content-Encoding": encoding})
    assert _code(response) == (415, "unsupported_media_type")
    assert response.headers["connection"] == "close"


def test_identity_encoding_is_plain_json(engine: InferenceEngine) -> None:
    assert _post(engine, b'{"texts": ["a"]}', {"Content-Encoding": "identity"}).status_code == 200


@pytest.mark.parametrize("headers", [{"Content-Encoding": "br"}, {"Content-Length": str(10**9)}], ids=["encoding", "size"])
def test_the_token_comes_before_the_size_and_the_encoding(engine: InferenceEngine, headers: dict[str, str]) -> None:
    app = create_app(make_settings(), engine, manage_engine=False)

    async def post() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
            return await http.post("/api/v1/predict", content=b"{}", headers=headers)

    assert _code(asyncio.run(post())) == (401, "unauthorized")


def test_the_token_is_checked_before_the_body_under_a_root_path(engine: InferenceEngine) -> None:
    app = create_app(make_settings(), engine, manage_engine=False)

    async def post(headers: dict[str, str]) -> httpx.Response:
        transport = httpx.ASGITransport(app=app, root_path="/ml")
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            return await http.post("/ml/api/v1/predict", json={"texts": ["a"]}, headers=headers)

    refused = asyncio.run(post({}))
    assert _code(refused) == (401, "unauthorized") and refused.headers["connection"] == "close"
    assert asyncio.run(post({"X-Token": "secret-token"})).status_code == 200


def test_without_the_middleware_the_route_still_checks_the_token(engine: InferenceEngine) -> None:
    """The route is the authority: a path the guards do not know still needs the token."""
    app = create_app(make_settings(), engine, manage_engine=False)
    app.user_middleware.clear()  # the app as its routes alone would answer

    async def post() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
            return await http.post("/api/v1/predict", json={"texts": ["a"]})

    response = asyncio.run(post())
    assert _code(response) == (401, "unauthorized") and "connection" not in response.headers
