from __future__ import annotations

import asyncio
import threading

import pytest

from engine.cache import MemoryCache
from tests.engine.cache.support import FakeClock


def test_the_least_recently_used_entry_goes_first() -> None:
    cache = MemoryCache(max_entries=3)
    cache.store({"a": b"1", "b": b"2", "c": b"3"}, ttl_s=60)
    assert cache.lookup(["a"]) == [b"1"]  # a is now the most recent; b the least
    cache.store({"d": b"4"}, ttl_s=60)
    assert cache.lookup(["a", "b", "c", "d"]) == [b"1", None, b"3", b"4"]
    assert len(cache) == 3


def test_rewriting_a_key_refreshes_it() -> None:
    cache = MemoryCache(max_entries=2)
    cache.store({"a": b"1", "b": b"2"}, ttl_s=60)
    cache.store({"a": b"1'"}, ttl_s=60)
    cache.store({"c": b"3"}, ttl_s=60)
    assert cache.lookup(["a", "b", "c"]) == [b"1'", None, b"3"]


def test_one_write_larger_than_the_bound_keeps_its_newest_entries() -> None:
    cache = MemoryCache(max_entries=2)
    cache.store({"a": b"1", "b": b"2", "c": b"3"}, ttl_s=60)
    assert cache.lookup(["a", "b", "c"]) == [None, b"2", b"3"]


def test_ttl_follows_the_monotonic_clock() -> None:
    clock = FakeClock()
    cache = MemoryCache(clock=clock)
    cache.store({"a": b"1"}, ttl_s=10)
    clock.advance(9.9)
    assert cache.lookup(["a"]) == [b"1"]
    clock.advance(0.1)
    assert cache.lookup(["a"]) == [None]
    assert len(cache) == 0  # an expired entry is dropped when met


def test_async_methods_and_close() -> None:
    cache = MemoryCache()

    async def scenario() -> None:
        await cache.set_many({"a": b"1"}, ttl_s=60)
        assert [hit.tier for hit in await cache.get_many_with_tier(["a"]) if hit] == ["memory"]
        await cache.close()
        assert await cache.get_many(["a"]) == [None]

    asyncio.run(scenario())


def test_a_size_bound_below_one_is_refused() -> None:
    with pytest.raises(ValueError):
        MemoryCache(max_entries=0)


def test_threads_share_one_cache_safely() -> None:
    cache = MemoryCache(max_entries=100)
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(2000):
                key = f"{n}-{i % 150}"
                cache.store({key: key.encode()}, ttl_s=60)
                found = cache.lookup([key, f"{(n + 1) % 4}-{i % 150}"])
                assert found[0] in (None, key.encode())
        except BaseException as exc:  # surfaced below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    assert len(cache) <= 100
