"""Lambda semantics of the worker pools, seen from outside through real processes and HTTP."""

from __future__ import annotations

import base64
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from tests.emulator.conftest import MAX_CONCURRENCY, Emulator

HOLD_S = 2.0
"""Long enough for every parallel request to arrive while the first ones still run."""


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


def test_http_front_caps_concurrency_and_throttles_with_429(test_emulator: Emulator) -> None:
    def get(_: int) -> httpx.Response:
        return httpx.get(f"{test_emulator.http_url}/slow", params={"seconds": HOLD_S}, timeout=30)

    with ThreadPoolExecutor(MAX_CONCURRENCY + 2) as threads:
        results = list(threads.map(get, range(MAX_CONCURRENCY + 2)))
    assert sorted(r.status_code for r in results) == [200] * MAX_CONCURRENCY + [429] * 2
    assert [r.json() for r in results if r.status_code == 429] == [{"message": "Too Many Requests"}] * 2
    assert len({r.json()["pid"] for r in results if r.status_code == 200}) <= MAX_CONCURRENCY
