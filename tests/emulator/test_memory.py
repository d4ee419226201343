"""emulator/memory.py: MemorySize enforced on real environments, and Max Memory Used measured, with the limit on or off."""

from __future__ import annotations

import asyncio
import json
import sys
import time

import pytest

from emulator import memory
from emulator.function_errors import OUT_OF_MEMORY, out_of_memory_error
from emulator.memory import MemoryWatch
from emulator.worker import EnvironmentOptions
from tests.emulator.environment_harness import answer, function, invoke, max_memory_used, report

WATCH_TIMEOUT_S = 20.0


def test_a_128_mb_function_allocating_400_mb_runs_out_of_memory_and_is_replaced() -> None:
    spec = function("allocate", memory_mb=128, timeout_s=5.0)
    out_of_memory, after = invoke(spec, {"mb": 400}, {"mb": 1})
    assert out_of_memory.function_error and out_of_memory.error_type == OUT_OF_MEMORY
    assert answer(out_of_memory) == json.loads(out_of_memory_error(out_of_memory.request_id))
    assert answer(out_of_memory)["errorMessage"].endswith("Error: Runtime exited with error: signal: killed")
    assert "Status: error" in report(out_of_memory) and f"Error Type: {OUT_OF_MEMORY}" in report(out_of_memory)
    assert max_memory_used(out_of_memory) >= 128
    assert "allocating 400 MB" in out_of_memory.log  # what it printed before it was killed
    assert not after.function_error and answer(after) == {"allocated_mb": 1}
    assert "Init Duration: " in report(after)  # a new environment


def test_without_the_limit_it_succeeds_and_reports_its_peak() -> None:
    spec = function("allocate", memory_mb=128, timeout_s=5.0)
    (invocation,) = invoke(spec, {"mb": 400}, options=EnvironmentOptions(memory_limit=False))
    assert not invocation.function_error and answer(invocation) == {"allocated_mb": 400}
    assert 400 <= max_memory_used(invocation) < 600


def test_max_memory_used_is_the_environments_peak_on_each_warm_invocation() -> None:
    spec = function("allocate", memory_mb=256, timeout_s=5.0)
    small, large, small_again = invoke(spec, {"mb": 1}, {"mb": 150}, {"mb": 1})
    assert not (small.function_error or large.function_error or small_again.function_error)
    assert max_memory_used(small) < 100
    assert 150 <= max_memory_used(large) <= max_memory_used(small_again) < 256  # a peak, as Lambda's


def test_memory_of_a_child_process_counts() -> None:
    spec = function("allocate_in_child", memory_mb=128, timeout_s=10.0)
    (invocation,) = invoke(spec, {"mb": 300})
    assert invocation.error_type == OUT_OF_MEMORY, invocation.payload
    assert invocation.duration_ms < 5000  # killed, not timed out: the child sleeps 5 s


def test_a_watch_kills_a_process_over_its_limit_and_stops_when_told() -> None:
    code = "import time; blocks = [b'x' * (1 << 20) for _ in range(300)]; time.sleep(30)"

    async def watch(limit_mb: int | None) -> tuple[MemoryWatch, int | None]:
        process = await asyncio.create_subprocess_exec(sys.executable, "-c", code)
        watcher = MemoryWatch(process.pid, limit_mb)
        task = asyncio.create_task(watcher.run())
        if limit_mb is None:
            await asyncio.sleep(2.0)  # long enough to allocate it all
            watcher.stop()
        await asyncio.wait_for(task, WATCH_TIMEOUT_S)
        if limit_mb is None:
            peak = watcher.peak_mb()
            process.kill()
            await process.wait()
            return watcher, peak
        return watcher, await asyncio.wait_for(process.wait(), WATCH_TIMEOUT_S)

    started = time.monotonic()
    killed, returncode = asyncio.run(watch(100))
    assert killed.exceeded and returncode == -9 and killed.peak_mb() >= 100  # whole MB, rounded down
    assert time.monotonic() - started < WATCH_TIMEOUT_S
    measured, peak = asyncio.run(watch(None))
    assert not measured.exceeded and peak is not None and peak >= 300


def test_a_tree_just_over_its_limit_is_killed_and_reports_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Over the limit by less than 1 MB: killed, and Max Memory Used (whole MB, rounded down) is the limit itself."""
    limit_mb = 100
    monkeypatch.setattr(memory, "_rss_kb", lambda pid: limit_mb * 1024 + 1)
    monkeypatch.setattr(memory, "_peak_kb", lambda pid: limit_mb * 1024 + 1)
    monkeypatch.setattr(memory, "_descendants", lambda root: set())
    killed: list[int] = []
    monkeypatch.setattr(memory.os, "kill", lambda pid, sig: killed.append(pid))
    watcher = MemoryWatch(12345, limit_mb)
    asyncio.run(asyncio.wait_for(watcher.run(), WATCH_TIMEOUT_S))
    assert watcher.exceeded and killed == [12345] and watcher.peak_mb() == limit_mb


def test_a_watch_of_a_process_that_is_gone_measures_nothing() -> None:
    watcher = MemoryWatch(2**22 + 1, 128)  # above any pid_max: nothing to measure, nothing to kill

    async def run() -> None:
        task = asyncio.create_task(watcher.run())
        await asyncio.sleep(0.05)
        watcher.stop()
        await asyncio.wait_for(task, WATCH_TIMEOUT_S)

    asyncio.run(run())
    assert not watcher.exceeded and watcher.peak_mb() == 0
