"""Lambda semantics of the worker pools: through real `mlinfer emulate` processes and HTTP, and driven directly."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from emulator import limits
from emulator.function_errors import OUT_OF_MEMORY, RESPONSE_TOO_LARGE, RESPONSE_TOO_LARGE_MESSAGE
from emulator.pool import Invocation, InvokeOptions, Throttled, WorkerPool
from tests.emulator.conftest import MAX_CONCURRENCY, Emulator, start_emulator
from tests.emulator.environment_harness import answer, function, report, require_namespaces, run_pool
from tests.network import stop_server

ENVIRONMENTS_TEMPLATE = Path(__file__).resolve().parent / "templates" / "environments.yaml"

HOLD_S = 2.0
"""Long enough for every parallel request to arrive while the first ones still run."""
HOLD_RECYCLED_S = 0.6


def _report(response: dict[str, Any]) -> str:
    report: str = base64.b64decode(response["LogResult"]).decode().splitlines()[-1]
    return report


def test_init_duration_only_on_a_workers_first_invocation(test_emulator: Emulator) -> None:
    client = test_emulator.client()
    first, second = (client.invoke(FunctionName="ColdWarm", Payload=b"{}", LogType="Tail") for _ in range(2))
    assert "Init Duration: " in _report(first)
    assert "Init Duration: " not in _report(second)


def test_timeout_kills_and_replaces_the_worker(test_emulator: Emulator) -> None:
    client = test_emulator.client()
    response = client.invoke(FunctionName="Sleep", Payload=json.dumps({"seconds": 3}), LogType="Tail")
    error = json.loads(response["Payload"].read())
    assert response["FunctionError"] == "Unhandled"
    assert error["errorType"] == "Sandbox.Timedout"
    assert error["errorMessage"].endswith(f"{response['ResponseMetadata']['RequestId']} Task timed out after 1.00 seconds")
    assert "Status: timeout" in _report(response) and "Duration: 1000.00 ms" in _report(response)
    after = client.invoke(FunctionName="Sleep", Payload=json.dumps({"seconds": 0}), LogType="Tail")
    assert "FunctionError" not in after
    assert "Init Duration: " in _report(after)  # a new environment


def test_invoke_api_caps_concurrency_and_throttles_beyond(test_emulator: Emulator) -> None:
    url = f"{test_emulator.lambda_url}/2015-03-31/functions/Slow/invocations"

    def invoke(_: int) -> httpx.Response:
        return httpx.post(url, content=json.dumps({"seconds": HOLD_S}), timeout=30)

    with ThreadPoolExecutor(MAX_CONCURRENCY + 2) as threads:
        results = list(threads.map(invoke, range(MAX_CONCURRENCY + 2)))
    served = [r for r in results if r.status_code == 200]
    throttled = [r for r in results if r.status_code == 429]
    assert (len(served), len(throttled)) == (MAX_CONCURRENCY, 2)
    assert {r.headers["x-amzn-errortype"] for r in throttled} == {"TooManyRequestsException"}
    pids = {r.json()["pid"] for r in served}
    assert len(pids) == MAX_CONCURRENCY
    # The environments are warm now, and reused one after the other.
    again = [httpx.post(url, content=b"{}", timeout=30) for _ in range(3)]
    assert {r.json()["pid"] for r in again} <= pids


def test_http_front_caps_concurrency_and_answers_a_throttle_as_api_gateway_does(test_emulator: Emulator) -> None:
    def get(_: int) -> httpx.Response:
        return httpx.get(f"{test_emulator.http_url}/slow", params={"seconds": HOLD_S}, timeout=30)

    with ThreadPoolExecutor(MAX_CONCURRENCY + 2) as threads:
        results = list(threads.map(get, range(MAX_CONCURRENCY + 2)))
    # An HTTP API answers a throttled Lambda integration with 500 (not Lambda's 429).
    assert sorted(r.status_code for r in results) == [200] * MAX_CONCURRENCY + [500] * 2
    assert [r.json() for r in results if r.status_code == 500] == [{"message": "Internal Server Error"}] * 2
    assert len({r.json()["pid"] for r in results if r.status_code == 200}) <= MAX_CONCURRENCY


# Through boto3: the limits and the context of an environment, on the environments template.


@pytest.fixture(scope="module")
def environments_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    log_path = tmp_path_factory.mktemp("environments") / "emulator.log"
    process, emulator = start_emulator(log_path, ENVIRONMENTS_TEMPLATE, "--no-reload")
    try:
        yield emulator
    finally:
        stop_server(process)


def test_boto3_sees_out_of_memory_and_an_oversized_response_as_function_errors(environments_emulator: Emulator) -> None:
    client = environments_emulator.client()
    response = client.invoke(FunctionName="Allocate", Payload=json.dumps({"mb": 400}), LogType="Tail")
    error = json.loads(response["Payload"].read())
    assert (response["FunctionError"], error["errorType"]) == ("Unhandled", OUT_OF_MEMORY)
    assert "Status: error" in _report(response) and f"Error Type: {OUT_OF_MEMORY}" in _report(response)
    response = client.invoke(FunctionName="RespondWith", Payload=json.dumps({"bytes": 7 * limits.MB}))
    error = json.loads(response["Payload"].read())
    assert (response["FunctionError"], error) == (
        "Unhandled",
        {"errorMessage": RESPONSE_TOO_LARGE_MESSAGE, "errorType": RESPONSE_TOO_LARGE},
    )


def test_boto3_client_context_and_alias_reach_the_function(environments_emulator: Emulator) -> None:
    client = environments_emulator.client()
    client_context = base64.b64encode(json.dumps({"custom": {"tenant": "a"}, "env": {"locale": "en"}}).encode()).decode()
    response = client.invoke(FunctionName="ContextView", Qualifier="live", ClientContext=client_context, LogType="Tail")
    seen = json.loads(response["Payload"].read())
    assert seen["client_context"] == {"custom": {"tenant": "a"}, "env": {"locale": "en"}}
    assert (seen["function_version"], response["ExecutedVersion"]) == ("1", "1")
    assert seen["invoked_function_arn"].endswith(":function:ContextView:live")
    start = base64.b64decode(response["LogResult"]).decode().splitlines()[0]
    assert start == f"START RequestId: {response['ResponseMetadata']['RequestId']} Version: 1"
    assert seen["trace_id"].startswith("Root=1-")


def test_tmp_has_the_templates_ephemeral_storage(environments_emulator: Emulator) -> None:
    require_namespaces()
    response = environments_emulator.client().invoke(FunctionName="TemporaryFolder", Payload=json.dumps({"name": "a"}))
    seen = json.loads(response["Payload"].read())
    assert (seen["folder"], seen["before"], seen["size_mb"]) == ("/tmp", [], 640)


# WorkerPool driven directly: versions, warm-up and recycling.


def test_each_version_has_environments_of_its_own() -> None:
    spec = function("context_view", alias="live")

    async def body(pool: WorkerPool) -> list[Invocation]:
        return [await pool.invoke(b"{}", options=InvokeOptions(version=version)) for version in ("$LATEST", "1", "$LATEST", "1")]

    latest, one, latest_again, one_again = run_pool(spec, body)
    assert [i.executed_version for i in (latest, one, latest_again, one_again)] == ["$LATEST", "1", "$LATEST", "1"]
    assert answer(latest)["function_version"] == "$LATEST" and answer(one)["function_version"] == "1"
    assert answer(latest)["pid"] == answer(latest_again)["pid"] != answer(one)["pid"] == answer(one_again)["pid"]
    assert "Init Duration: " in report(one) and "Init Duration: " not in report(one_again)


def test_warm_starts_an_environment_per_version_and_recycle_replaces_them() -> None:
    spec = function("context_view", alias="live")

    async def body(pool: WorkerPool) -> dict[str, Invocation]:
        await pool.warm()
        await pool.warm()  # already warm: nothing more starts
        warmed = {version: await pool.invoke(b"{}", options=InvokeOptions(version=version)) for version in ("$LATEST", "1")}
        await pool.recycle()
        recycled = await pool.invoke(b"{}")
        return {**warmed, "recycled": recycled}

    invocations = run_pool(spec, body)
    assert "Init Duration: " not in report(invocations["$LATEST"]) and "Init Duration: " not in report(invocations["1"])
    assert "Init Duration: " in report(invocations["recycled"])
    assert answer(invocations["recycled"])["pid"] != answer(invocations["$LATEST"])["pid"]


def test_recycle_retires_a_busy_environment_once_its_invocation_is_answered() -> None:
    spec = function("temporary_folder", timeout_s=5.0)

    async def body(pool: WorkerPool) -> tuple[Invocation, Invocation, Invocation]:
        busy = asyncio.create_task(pool.invoke(json.dumps({"name": "busy", "hold_s": HOLD_RECYCLED_S}).encode()))
        await asyncio.sleep(HOLD_RECYCLED_S / 2)  # started, not answered
        await pool.recycle()
        answered = await busy
        after = await pool.invoke(json.dumps({"name": "after"}).encode())
        again = await pool.invoke(json.dumps({"name": "again"}).encode())
        return answered, after, again

    answered, after, again = run_pool(spec, body)
    assert not answered.function_error  # its invocation finished in the old environment
    assert "Init Duration: " in report(after) and answer(after)["before"] == []  # new code: a new environment
    assert "Init Duration: " not in report(again)


def _children() -> list[int]:
    """The processes this test process started, from /proc (its environments)."""
    children = []
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if entry.name.isdigit() and int(fields[1]) == os.getpid() and fields[0] not in ("Z", "X"):
            children.append(int(entry.name))
    return children


def test_close_stops_the_busy_environments_and_their_invocations_end_as_function_errors() -> None:
    spec = function("temporary_folder", timeout_s=30.0)

    async def body(pool: WorkerPool) -> tuple[list[int], list[int], list[Invocation | BaseException]]:
        before = _children()
        event = json.dumps({"name": "busy", "hold_s": 25}).encode()
        busy = [asyncio.create_task(pool.invoke(event)) for _ in range(2)]
        while len(set(_children()) - set(before)) < 2:  # both environments started
            await asyncio.sleep(0.05)
        started = [pid for pid in _children() if pid not in before]
        await asyncio.wait_for(pool.close(), 10)
        left = [pid for pid in started if pid in _children()]
        return started, left, await asyncio.gather(*busy, return_exceptions=True)

    started, left, answered = run_pool(spec, body)
    assert len(started) == 2 and left == [], f"environments still running after close: {left}"
    assert all(isinstance(result, Invocation) and result.function_error for result in answered), answered


def test_concurrency_is_the_functions_across_versions() -> None:
    spec = function("temporary_folder", alias="live", timeout_s=5.0)

    async def body(pool: WorkerPool) -> list[Invocation | BaseException]:
        event = json.dumps({"name": "x", "hold_s": HOLD_RECYCLED_S}).encode()
        calls = [pool.invoke(event, options=InvokeOptions(version=version)) for version in ("$LATEST", "1", "1")]
        return await asyncio.gather(*calls, return_exceptions=True)

    results = run_pool(spec, body, max_concurrency=2)
    assert sum(isinstance(result, Throttled) for result in results) == 1
    assert sum(isinstance(result, Invocation) and not result.function_error for result in results) == 2
