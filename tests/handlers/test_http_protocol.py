"""handlers/http_protocol.py: the connection level of ``mlinfer serve``, against real servers.

Raw sockets on loopback: header size and count limits (431), header, body and keep-alive
timeouts, the per-process connection limit, and a reply sent before the body was read. The key
checks run on one process, on ``--workers 2`` and on the seed's gunicorn command.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import REPO_ROOT
from tests.handlers.conftest import TOKEN
from tests.handlers.test_supervisor import fresh_get, metric_sum, start_gunicorn, stop_gunicorn, until
from tests.network import SERVER_TOKEN, free_port, start_server, stop_server, wait_until_ready
from tests.registries import V1_MODEL, write_registry

TIMEOUT_S = 1.0
"""HEADER_TIMEOUT_S, BODY_TIMEOUT_S and KEEPALIVE_TIMEOUT_S of the servers under test."""
MAX_CONNECTIONS = 50
LIMITS = {
    "HEADER_TIMEOUT_S": str(TIMEOUT_S),
    "BODY_TIMEOUT_S": str(TIMEOUT_S),
    "KEEPALIVE_TIMEOUT_S": str(TIMEOUT_S),
    "MAX_CONNECTIONS": str(MAX_CONNECTIONS),
    "CACHE_BACKEND": "none",
    "MAX_QUEUE_MS": "60000",  # this machine is shared: no request shed for waiting
}
ANSWER_WITHIN_S = TIMEOUT_S + 2.5
"""A timed-out connection is answered (or closed) before this: the timeout, the server's tick, a noisy machine."""
CLOSE_WITHIN_S = ANSWER_WITHIN_S + 3.0
"""... and closed before this, after a lingering close."""
MIB = 1024 * 1024


@dataclass(frozen=True)
class Server:
    mode: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _registry(folder: Path) -> Path:
    entry = {"default_version": "v1", "versions": {"v1": {"path": V1_MODEL, "status": "active"}}, "rollout_strategy": {"type": "pinned"}}
    return write_registry(folder, {"sentiment_analysis": entry})


def _start(mode: str, folder: Path, **env: str) -> Server:
    log_path = folder / f"{mode}.log"
    registry = str(_registry(folder))
    if mode == "gunicorn":
        process, port = start_gunicorn(log_path, workers=2, MODEL_REGISTRY_PATH=registry, **env)
        return Server(mode, process, port, log_path)
    workers = "2" if mode == "workers" else "1"
    process, base_url = start_server(log_path, "--workers", workers, unset=(), ready_path="/health", MODEL_REGISTRY_PATH=registry, **env)
    server = Server(mode, process, urlsplit(base_url).port or 0, log_path)
    if mode == "workers":
        until(lambda: len(fresh_get(server.base_url, "/health").json()["workers"] or []) == 2, "both workers published")
    return server


def _stop(server: Server) -> None:
    if server.mode == "gunicorn":
        stop_gunicorn(server.process)
    else:
        stop_server(server.process)


@pytest.fixture(scope="module", params=["process", "workers", "gunicorn"])
def server(request: pytest.FixtureRequest, models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    started = _start(request.param, tmp_path_factory.mktemp(request.param), **LIMITS)
    try:
        yield started
    finally:
        _stop(started)


@pytest.fixture(scope="module")
def one_process(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    started = _start("process", tmp_path_factory.mktemp("one"), **LIMITS)
    try:
        yield started
    finally:
        _stop(started)


# --- raw HTTP on a socket ---


def connect(port: int, timeout_s: float = 15.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


@dataclass
class Reply:
    status: int | None
    headers: dict[str, str]
    body: bytes
    ending: str
    """How the connection ended: "eof" (a clean close), "reset", or "open" (still open when we stopped reading)."""
    elapsed_s: float
    """Until the connection ended (or we stopped reading)."""
    first_byte_s: float | None = None
    """Until the first byte of the reply, if any."""
    raw: bytes = b""
    """Every byte received (``read_until_closed``), replies after the first included."""

    def error_code(self) -> str:
        code: str = json.loads(self.body)["error"]["code"]
        return code


def _parse(raw: bytes, ending: str, elapsed_s: float) -> Reply:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    match = re.match(r"HTTP/1\.[01] (\d{3})", lines[0]) if raw else None
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = body[: int(headers["content-length"])]
    return Reply(int(match.group(1)) if match else None, headers, body, ending, elapsed_s)


def read_until_closed(sock: socket.socket, wait_s: float) -> Reply:
    """Everything the server sends until it closes the connection (or ``wait_s`` passes)."""
    started = time.monotonic()
    chunks: list[bytes] = []
    ending = "open"
    first_byte_s = None
    while (left := wait_s - (time.monotonic() - started)) > 0:
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            ending = "reset"
            break
        if not chunk:
            ending = "eof"
            break
        if first_byte_s is None:
            first_byte_s = time.monotonic() - started
        chunks.append(chunk)
    reply = _parse(b"".join(chunks), ending, time.monotonic() - started)
    reply.first_byte_s = first_byte_s
    reply.raw = b"".join(chunks)
    return reply


def read_replies(sock: socket.socket, count: int, wait_s: float = 15.0) -> list[Reply]:
    """``count`` replies with a Content-Length each, in order, leaving the connection as it is.

    Pipelined replies may arrive in one read: the bytes after one reply are the start of the next."""
    started = time.monotonic()
    sock.settimeout(wait_s)
    raw = b""
    replies: list[Reply] = []
    while len(replies) < count:
        while b"\r\n\r\n" not in raw:
            chunk = sock.recv(65536)
            if not chunk:
                return [*replies, _parse(raw, "eof", time.monotonic() - started)]
            raw += chunk
        head, _, rest = raw.partition(b"\r\n\r\n")
        length = int(_parse(head + b"\r\n\r\n", "open", 0.0).headers.get("content-length", "0"))
        while len(rest) < length and (chunk := sock.recv(65536)):
            rest += chunk
        replies.append(_parse(head + b"\r\n\r\n" + rest[:length], "open", time.monotonic() - started))
        raw = rest[length:]
    return replies


def read_one_reply(sock: socket.socket, wait_s: float = 15.0) -> Reply:
    """One reply with a Content-Length, leaving the connection as it is."""
    return read_replies(sock, 1, wait_s)[0]


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode()


# --- memory of the server's processes ---


def _tree(pid: int) -> list[int]:
    pids = [pid]
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        pids += _tree(int(child))
    return pids


def rss_bytes(pid: int) -> int:
    """VmRSS of ``pid`` and every process under it (the workers of a supervisor or gunicorn)."""
    total = 0
    for each in _tree(pid):
        with contextlib.suppress(FileNotFoundError):
            status = Path(f"/proc/{each}/status").read_text()
            total += int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024  # type: ignore[union-attr]
    return total


def endless_headers(port: int, pid: int, *, connections: int, per_connection: int, wait_s: float) -> tuple[list[Reply], int]:
    """``connections`` requests whose last header value never ends: each keeps sending up to
    ``per_connection`` bytes of it until the server answers or closes. Returns the replies and
    the peak RSS of the server's processes meanwhile."""
    socks = [connect(port) for _ in range(connections)]
    for sock in socks:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\nX-Filler: ")
        sock.setblocking(False)
    filler = b"a" * 65536
    sent = dict.fromkeys(socks, 0)
    received: dict[socket.socket, list[bytes]] = {sock: [] for sock in socks}
    endings = dict.fromkeys(socks, "open")
    open_socks = set(socks)
    peak = rss_bytes(pid)
    started = time.monotonic()
    next_sample = started
    try:
        while open_socks and time.monotonic() - started < wait_s:
            writers = [s for s in open_socks if sent[s] < per_connection and not received[s]]
            readable, writable, _ = select.select(list(open_socks), writers, [], 0.1)
            for sock in readable:
                try:
                    chunk = sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except ConnectionResetError:
                    chunk, endings[sock] = b"", "reset"
                if chunk:
                    received[sock].append(chunk)
                else:
                    endings[sock] = "eof" if endings[sock] == "open" else endings[sock]
                    open_socks.discard(sock)
            for sock in writable:
                if sock not in open_socks:
                    continue
                try:
                    sent[sock] += sock.send(filler)
                except (BlockingIOError, InterruptedError):
                    pass
                except (BrokenPipeError, ConnectionResetError):
                    sent[sock] = per_connection
            if time.monotonic() >= next_sample:
                peak = max(peak, rss_bytes(pid))
                next_sample = time.monotonic() + 0.05
        peak = max(peak, rss_bytes(pid))
    finally:
        for sock in socks:
            sock.close()
    elapsed = time.monotonic() - started
    return [_parse(b"".join(received[s]), endings[s], elapsed) for s in socks], peak


# --- header size and count (431) ---


def test_never_ending_header_values_get_431_and_the_servers_memory_stays_bounded(server: Server) -> None:
    assert fresh_get(server.base_url, "/health").status_code == 200
    before = rss_bytes(server.process.pid)
    replies, peak = endless_headers(server.port, server.process.pid, connections=20, per_connection=8 * MIB, wait_s=30.0)
    growth = peak - before
    # Unbounded, the server would hold every byte sent: 20 x 8 MiB = 160 MiB (and copy it over and over).
    assert growth < 50 * MIB, f"{server.mode}: RSS grew by {growth / MIB:.0f} MiB"
    assert [r.status for r in replies] == [431] * 20, [(r.status, r.ending) for r in replies]
    assert {r.error_code() for r in replies} == {"request_headers_too_large"}
    assert all(r.headers.get("connection") == "close" and r.ending != "open" for r in replies)
    assert fresh_get(server.base_url, "/health").status_code == 200


def test_too_many_headers_get_431(server: Server) -> None:
    headers = "".join(f"X-Header-{i}: {i}\r\n" for i in range(101))
    with connect(server.port) as sock:
        sock.sendall(f"GET /health HTTP/1.1\r\nHost: test\r\n{headers}\r\n".encode())
        reply = read_until_closed(sock, 10.0)
    assert reply.status == 431, reply
    assert reply.error_code() == "too_many_headers"
    assert reply.ending == "eof"
    # Counted like every other error reply of the HTTP edge (summed over the workers).
    metrics = fresh_get(server.base_url, "/metrics").text
    assert metric_sum(metrics, "http_errors_total", status="431", code="too_many_headers") >= 1, metrics[-3000:]


def test_one_header_over_the_limit_in_one_packet_gets_431(one_process: Server) -> None:
    with connect(one_process.port) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\nX-Big: " + b"b" * (20 * 1024) + b"\r\n\r\n")
        reply = read_until_closed(sock, 10.0)
    assert reply.status == 431, reply
    assert reply.error_code() == "request_headers_too_large"


def test_requests_within_the_limits_are_served_with_their_bodies_in_the_same_packet(one_process: Server) -> None:
    # 99 headers of 14 KiB in all, then a body larger than MAX_HEADER_BYTES, sent at once.
    headers = "".join(f"X-Header-{i}: {'v' * 140}\r\n" for i in range(94))
    body = json.dumps({"texts": ["a fine film " * 400] * 5}).encode()
    head = (
        f"POST /api/v1/predict HTTP/1.1\r\nHost: test\r\n{headers}X-Token: {TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    assert len(head) < 16 * 1024 < len(body)
    with connect(one_process.port) as sock:
        sock.sendall(head + body)
        reply = read_one_reply(sock, 60.0)
        assert reply.status == 200, reply
        sock.sendall(get("/health/live"))  # and the connection stays usable
        assert read_one_reply(sock).status == 200


def test_pipelined_requests_are_answered_in_order_and_a_pipelined_endless_header_still_gets_431(one_process: Server) -> None:
    with connect(one_process.port) as sock:
        sock.sendall(get("/health/live") + get("/health/ready"))
        first, second = read_replies(sock, 2)
        assert (first.status, second.status) == (200, 200)
        assert b"alive" in first.body and b"ready" in second.body
    with connect(one_process.port) as sock:
        sock.sendall(get("/health/live") + b"GET /health HTTP/1.1\r\nHost: test\r\nX-Filler: ")
        with contextlib.suppress(OSError):
            for _ in range(64):
                sock.sendall(b"a" * 65536)
        replies = read_until_closed(sock, 10.0)
    assert replies.status == 200
    assert b"HTTP/1.1 431 " in replies.raw and b"request_headers_too_large" in replies.raw, replies.raw[-500:]


def test_a_pipelined_request_refused_while_the_one_before_it_runs_is_answered_after_it(one_process: Server) -> None:
    # The first request takes a while (64 long texts); the one pipelined behind it has a head over
    # MAX_HEADER_BYTES. Its 431 must follow the first reply on the wire, not overtake it.
    body = json.dumps({"texts": [f"review {i}: " + "it was a fine product, I suppose, " * 20 for i in range(64)]}).encode()
    first = (
        f"POST /api/v1/predict HTTP/1.1\r\nHost: test\r\nX-Token: {SERVER_TOKEN}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with connect(one_process.port) as sock:
        sock.sendall(first + b"GET /health HTTP/1.1\r\nHost: test\r\nX-Filler: ")
        time.sleep(0.3)  # the first request runs; the endless header goes on in reads of its own
        with contextlib.suppress(OSError):
            for _ in range(2):
                sock.sendall(b"a" * 65536)
        replies = read_until_closed(sock, 30.0)
    assert replies.status == 200, replies.raw[:500]
    assert len(json.loads(replies.body)["results"]) == 64
    assert b"HTTP/1.1 431 " in replies.raw, (replies.ending, replies.elapsed_s, replies.raw[-700:])
    assert replies.raw.index(b"HTTP/1.1 200 ") < replies.raw.index(b"HTTP/1.1 431 "), replies.raw[-500:]
    assert b"request_headers_too_large" in replies.raw
    assert replies.ending == "eof"


# --- timeouts ---


def test_a_partial_request_line_gets_408_after_the_header_timeout(server: Server) -> None:
    with connect(server.port) as sock:
        sock.sendall(b"GET /heal")
        reply = read_until_closed(sock, CLOSE_WITHIN_S + 5)
    assert reply.status == 408, reply
    assert reply.error_code() == "request_timeout"
    assert reply.ending == "eof"
    assert reply.first_byte_s is not None and TIMEOUT_S * 0.8 <= reply.first_byte_s < ANSWER_WITHIN_S, reply


def test_headers_trickled_a_byte_at_a_time_still_time_out(one_process: Server) -> None:
    with connect(one_process.port) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\n")
        with contextlib.suppress(OSError):
            while time.monotonic() - started < CLOSE_WITHIN_S + 5:
                sock.sendall(b"X")
                readable, _, _ = select.select([sock], [], [], 0.2)
                if readable:
                    break
        answered_s = time.monotonic() - started
        reply = read_until_closed(sock, 5.0)
    assert reply.status == 408, reply
    assert answered_s < ANSWER_WITHIN_S + 0.5, answered_s


def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(server: Server) -> None:
    with connect(server.port) as sock:
        reply = read_until_closed(sock, CLOSE_WITHIN_S + 5)
    assert reply.ending != "open", reply
    answered_s = reply.first_byte_s if reply.first_byte_s is not None else reply.elapsed_s
    assert TIMEOUT_S * 0.8 <= answered_s < ANSWER_WITHIN_S, reply


def test_a_declared_body_that_never_arrives_gets_408_after_the_body_timeout(server: Server) -> None:
    with connect(server.port) as sock:
        sock.sendall(
            f"POST /api/v1/predict HTTP/1.1\r\nHost: test\r\nX-Token: {TOKEN}\r\n"
            'Content-Type: application/json\r\nContent-Length: 4000000\r\n\r\n{"texts": ['.encode()
        )
        reply = read_until_closed(sock, CLOSE_WITHIN_S + 5)
    assert reply.status == 408, reply
    assert reply.error_code() == "request_timeout"
    assert reply.headers.get("connection") == "close"
    assert reply.ending == "eof"
    assert reply.first_byte_s is not None and TIMEOUT_S * 0.8 <= reply.first_byte_s < ANSWER_WITHIN_S, reply
    assert not re.search(r"Traceback|Exception in ASGI", server.log_path.read_text())


def test_an_idle_keep_alive_connection_is_closed_after_the_keepalive_timeout(server: Server) -> None:
    with connect(server.port) as sock:
        for _ in range(3):  # kept alive between requests sent in time
            sock.sendall(get("/health/live"))
            assert read_one_reply(sock).status == 200
            time.sleep(TIMEOUT_S / 4)
        reply = read_until_closed(sock, CLOSE_WITHIN_S + 5)
    assert reply.status is None and reply.ending == "eof", reply
    assert TIMEOUT_S * 0.5 <= reply.elapsed_s < ANSWER_WITHIN_S, reply.elapsed_s


def test_a_reply_sent_before_the_body_was_read_ends_the_connection_cleanly(one_process: Server) -> None:
    """A wrong token gets 401 on the headers alone. The client, busy sending its 4 MB body, reads
    the reply later: it finds the whole reply and then a clean end of stream, not a reset (a
    server that closes with unread input resets the connection)."""
    with connect(one_process.port) as sock:
        head = (
            b"POST /api/v1/predict HTTP/1.1\r\nHost: test\r\nX-Token: wrong\r\n"
            b"Content-Type: application/json\r\nContent-Length: 4000000\r\n\r\n"
        )
        sent: list[int] = []

        def send_body() -> None:
            with contextlib.suppress(OSError):
                sock.sendall(head + b" " * 1_000_000)
                sent.append(1_000_000)

        sender = threading.Thread(target=send_body)
        sender.start()
        sender.join(10)
        time.sleep(0.5)  # the reply is sent, and the server has done with the connection
        reply = read_until_closed(sock, 10.0)
    assert reply.status == 401, reply
    assert reply.error_code() == "unauthorized"
    assert reply.ending == "eof", reply
    assert sent == [1_000_000], "the server stopped reading before the client had sent what it meant to"


# --- connection limit ---


def _refused(reply: Reply) -> bool:
    """Refused at once: a 503 and a close, or the connection reset."""
    return (reply.status == 503 and reply.ending != "open") or (reply.status is None and reply.ending in ("eof", "reset"))


def _flood(port: int, count: int) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        socks.append(connect(port))
    return socks


def test_idle_connections_over_the_limit_are_refused_and_logged_and_cannot_lock_clients_out(one_process: Server) -> None:
    idle = _flood(one_process.port, MAX_CONNECTIONS + 10)
    try:
        # The server accepts at most MAX_CONNECTIONS of them; the others are refused at once.
        started = time.monotonic()
        refused = [sock for sock in idle if _refused(read_until_closed(sock, 0.3))]
        assert len(refused) >= 10, f"{len(refused)} refused"
        # A burst beyond the limit is refused quickly instead of waiting.
        burst = _flood(one_process.port, 20)
        for sock in burst:
            with contextlib.suppress(OSError):
                sock.sendall(get("/health/live"))
        replies = [read_until_closed(sock, 5.0) for sock in burst]
        for sock in burst:
            sock.close()
        assert all(_refused(r) for r in replies), [(r.status, r.ending) for r in replies]
        assert {r.error_code() for r in replies if r.status == 503} <= {"too_many_connections"}
        assert time.monotonic() - started < CLOSE_WITHIN_S
        # Once the idle connections time out, a client is served.
        until(lambda: fresh_get(one_process.base_url, "/health/live").status_code == 200, "served after the idle ones timed out", 30)
        metrics = fresh_get(one_process.base_url, "/metrics").text
        counted = metric_sum(metrics, "http_errors_total", status="503", code="too_many_connections")
        assert counted >= len(refused) + len(burst), metrics[-3000:]
    finally:
        for sock in idle:
            sock.close()
    log = one_process.log_path.read_text()
    assert re.search(r"WARNING handlers\.http_protocol: refused \d+ connections? over MAX_CONNECTIONS=50", log), log[-3000:]


def test_each_worker_has_its_own_connection_limit(server: Server) -> None:
    if server.mode == "process":
        return  # the test above
    idle = _flood(server.port, 2 * MAX_CONNECTIONS + 30)
    try:
        replies = [read_until_closed(sock, 0.3) for sock in idle]
        refused = sum(_refused(r) for r in replies)
        assert 30 <= refused <= MAX_CONNECTIONS + 30, refused
    finally:
        for sock in idle:
            sock.close()
    until(lambda: fresh_get(server.base_url, "/health/live").status_code == 200, "served after the idle ones timed out", 30)


# --- the open files limit ---


def _soft_limit(soft: int, hard: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_start_up_raises_the_open_files_soft_limit_and_logs_it(models_dir: Path, tmp_path: Path) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert hard == resource.RLIM_INFINITY or hard >= 4096, f"this test needs a hard limit of at least 4096, not {hard}"
    env = {**LIMITS, "MAX_CONNECTIONS": "2048", "LOG_LEVEL": "INFO"}
    log_path = tmp_path / "server.log"
    registry = str(_registry(tmp_path))
    process, _ = _launch_with_limit(log_path, registry, env, 512, 4096)
    try:
        limits = Path(f"/proc/{process.pid}/limits").read_text()
        soft = int(re.search(r"Max open files\s+(\d+)", limits).group(1))  # type: ignore[union-attr]
        assert soft >= 2048, soft
    finally:
        stop_server(process)
    assert re.search(r"INFO handlers\.server: open files: soft limit raised from 512 to \d+ \(hard 4096\)", log_path.read_text())


def test_max_connections_that_cannot_fit_is_lowered_with_a_warning_and_enforced(models_dir: Path, tmp_path: Path) -> None:
    env = {**LIMITS, "MAX_CONNECTIONS": "2048"}
    log_path = tmp_path / "server.log"
    process, port = _launch_with_limit(log_path, str(_registry(tmp_path)), env, 300, 300)
    try:
        log = log_path.read_text()
        match = re.search(r"WARNING handlers\.server: MAX_CONNECTIONS=2048 does not fit .*: serving at most (\d+) connections", log)
        assert match, log[-3000:]
        fit = int(match.group(1))
        assert 0 < fit < 300
        idle = _flood(port, fit + 10)
        try:
            refused = sum(_refused(read_until_closed(sock, 0.3)) for sock in idle)
            assert refused >= 10, refused
        finally:
            for sock in idle:
                sock.close()
    finally:
        stop_server(process)


def _launch_with_limit(log_path: Path, registry: str, env: dict[str, str], soft: int, hard: int) -> tuple[subprocess.Popen[bytes], int]:
    """One server process started under a lower RLIMIT_NOFILE, and its port."""
    port = free_port()
    full_env = {**os.environ, "AUTH_TOKEN": SERVER_TOKEN, "MODEL_REGISTRY_PATH": registry, "LOG_LEVEL": "WARNING", **env}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "handlers.cli", "serve", "--workers", "1", "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO_ROOT,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: _soft_limit(soft, hard),
        )
    wait_until_ready(process, f"http://127.0.0.1:{port}/health", log_path, what="server", timeout_s=60.0)
    return process, port


def test_httpx_clients_are_served_as_before(server: Server) -> None:
    with httpx.Client(base_url=server.base_url, timeout=30.0) as client:
        for i in range(5):
            reply = client.post("/api/v1/predict", json={"texts": [f"kept alive {i}"]}, headers={"X-Token": TOKEN})
            assert reply.status_code == 200, reply.text
