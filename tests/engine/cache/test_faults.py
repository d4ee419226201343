"""Redis killed, slow, or talking nonsense: the cache costs at most its timeout and never raises."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from engine.cache import CacheConfig, RedisCache, TieredCache, build_cache
from tests.engine.cache.redis_server import RedisServer, start_ok_redis, start_redis_cluster
from tests.engine.cache.support import run_with

TIMEOUT_MS = 50
SLACK_S = 0.25  # scheduling noise on a small, busy CI machine
BUDGET_S = TIMEOUT_MS / 1000 + SLACK_S


def fault_config(port: int, **overrides: object) -> CacheConfig:
    values: dict[str, object] = {
        "backend": "redis",
        "host": "127.0.0.1",
        "port": port,
        "timeout_ms": TIMEOUT_MS,
        "breaker_failures": 3,
        "breaker_cooldown_s": 0.3,
    }
    values.update(overrides)
    return CacheConfig(**values)  # type: ignore[arg-type]


async def timed(call: Awaitable[object], durations: list[float]) -> object:
    started = time.perf_counter()
    result = await call
    durations.append(time.perf_counter() - started)
    return result


async def until_hit(cache: RedisCache | TieredCache, key: str, within_s: float) -> float:
    """Write and read ``key`` until it reads back; returns how long that took."""
    started = time.monotonic()
    while time.monotonic() - started < within_s:
        await cache.set_many({key: b"back"}, ttl_s=60)
        if await cache.get_many([key]) == [b"back"]:
            return time.monotonic() - started
        await asyncio.sleep(0.02)
    raise AssertionError(f"no cache hit within {within_s} s")


def test_redis_killed_while_requests_flow_then_restarted(own_redis_server: RedisServer) -> None:
    server = own_redis_server
    durations: list[float] = []
    states: set[str] = set()

    async def requests(cache: RedisCache, worker: int, stop: asyncio.Event) -> int:
        served = 0
        for i in range(10_000):  # bounded; the stop event ends it much sooner
            if stop.is_set():
                break
            key = f"w{worker}:{i % 20}"
            await timed(cache.set_many({key: b"v"}, ttl_s=60), durations)
            await timed(cache.get_many([key, f"w{worker}:absent"]), durations)
            states.add(cache.state)
            served += 1
            await asyncio.sleep(0.005)
        return served

    async def scenario(cache: RedisCache) -> None:
        stop = asyncio.Event()
        workers = [asyncio.create_task(requests(cache, n, stop)) for n in range(8)]
        await asyncio.sleep(0.3)
        assert cache.errors == 0 and cache.state == "ok"
        server.kill()
        await asyncio.sleep(0.6)
        assert cache.state in ("open", "degraded") and cache.errors >= 3 and cache.skipped > 0
        server.start()  # same port, empty: no persistence
        assert await until_hit(cache, "after-restart", within_s=5) < 2
        await asyncio.sleep(0.1)
        stop.set()
        served = await asyncio.gather(*workers)  # any exception from the cache would surface here
        assert min(served) > 10
        assert cache.state == "ok"

    run_with(lambda: RedisCache(fault_config(server.port)), scenario)
    assert "open" in states
    assert max(durations) <= BUDGET_S, f"slowest cache call {max(durations):.3f} s"


def test_a_cluster_shard_killed_then_restarted(tmp_path: Path) -> None:
    servers = start_redis_cluster(tmp_path / "cluster")
    victim = servers[2]
    durations: list[float] = []
    keys = [f"m:v:d:{i}" for i in range(30)]  # spread over all three shards

    async def scenario(cache: RedisCache) -> None:
        await until_hit(cache, "warm", within_s=5)  # the first calls discover the shards: slow on a busy machine
        await cache.set_many(dict.fromkeys(keys, b"v"), ttl_s=60)
        assert await cache.get_many(keys) == [b"v"] * len(keys)
        victim.kill()
        for _ in range(10):
            # a call that touches the dead shard fails as a whole: all misses, and the write is dropped
            assert await timed(cache.get_many(keys), durations) == [None] * len(keys)
            await timed(cache.set_many(dict.fromkeys(keys, b"w"), ttl_s=60), durations)
        assert cache.state == "open"
        victim.start()  # same port and node file: it rejoins with its slots
        assert await until_hit(cache, "after-restart", within_s=10) < 8

    try:
        run_with(lambda: RedisCache(fault_config(servers[0].port, cluster=True)), scenario)
    finally:
        for server in servers:
            server.kill()
    assert max(durations) <= BUDGET_S, f"slowest cache call {max(durations):.3f} s"


class DelayingProxy:
    """A TCP proxy to Redis that holds each chunk ``delay_s`` before passing it on."""

    def __init__(self, target_port: int, delay_s: float) -> None:
        self.target_port = target_port
        self.delay_s = delay_s
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [client_writer, upstream_writer]
        for reader, writer in ((client_reader, upstream_writer), (upstream_reader, client_writer)):
            task = asyncio.create_task(self._pipe(reader, writer))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for writer in self._writers:
            writer.close()
        await asyncio.gather(*(w.wait_closed() for w in self._writers), return_exceptions=True)
        await self._server.wait_closed()


async def with_proxy(target_port: int, delay_s: float, body: Callable[[DelayingProxy], Awaitable[None]]) -> None:
    proxy = DelayingProxy(target_port, delay_s)
    await proxy.start()
    try:
        await body(proxy)
    finally:
        await proxy.close()


def test_slow_redis_costs_only_the_timeout_and_opens_the_circuit(redis_server: RedisServer, raw_redis: object) -> None:
    durations: list[float] = []

    async def scenario() -> None:
        async def body(proxy: DelayingProxy) -> None:
            cache = RedisCache(fault_config(proxy.port, breaker_cooldown_s=0.5))
            try:
                direct = RedisCache(fault_config(redis_server.port, timeout_ms=500))
                await direct.set_many({f"k{i}": f"v{i}".encode() for i in range(5)}, ttl_s=60)
                await direct.close()
                for _ in range(6):
                    assert await timed(cache.get_many(["k0", "k1"]), durations) == [None, None]
                    await timed(cache.set_many({"k9": b"v9"}, ttl_s=60), durations)
                slow_state = cache.state
                assert slow_state == "open" and cache.errors >= 3 and cache.skipped > 0
                assert cache.errors + cache.skipped == 12
                proxy.delay_s = 0  # Redis is fast again: after the cool-down a probe closes the circuit
                await asyncio.sleep(0.55)
                assert await until_hit(cache, "fast-again", within_s=3) < 1
                # no reply left over from the timed-out calls is mistaken for a later one's
                for i in range(5):
                    assert await cache.get_many([f"k{i}", "absent"]) == [f"v{i}".encode(), None]
                assert cache.state == "ok"
            finally:
                await cache.close()

        await with_proxy(redis_server.port, 0.3, body)

    asyncio.run(scenario())
    assert max(durations) <= BUDGET_S, f"slowest cache call {max(durations):.3f} s"


def test_a_server_that_answers_garbage_reads_as_misses() -> None:
    async def scenario() -> None:
        async def babble(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while await reader.read(65536):
                writer.write(b"?\x00\xffnot redis at all\r\n")
                await writer.drain()
            writer.close()

        server = await asyncio.start_server(babble, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        cache = build_cache(fault_config(port, backend="tiered"))
        try:
            assert isinstance(cache, TieredCache)
            for _ in range(5):
                assert await cache.get_many(["a", "b"]) == [None, None]
                await cache.set_many({"c": b"3"}, ttl_s=60)
            assert await cache.get_many(["c"]) == [b"3"]  # L1 still serves
            assert cache.state == "open"
            assert isinstance(cache.l2, RedisCache) and cache.l2.errors == 3
        finally:
            await cache.close()
            server.close()
            await server.wait_closed()

    asyncio.run(scenario())


def test_read_failures_alone_open_the_circuit_while_writes_succeed() -> None:
    async def scenario() -> None:
        server = await start_ok_redis()
        port = server.sockets[0].getsockname()[1]
        cache = RedisCache(fault_config(port, timeout_ms=500, breaker_cooldown_s=30))
        try:
            for i in range(4):
                assert await cache.get_many([f"k{i}"]) == [None]
                await cache.set_many({f"k{i}": b"v"}, ttl_s=60)  # answered +OK: a success
            assert cache.state == "open", (cache.errors, cache.skipped)
            assert cache.errors == 3  # the three failed reads; then every call is skipped
            assert cache.skipped > 0
        finally:
            await cache.close()
            server.close()
            await server.wait_closed()

    asyncio.run(scenario())
