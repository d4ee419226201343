"""boto3's Lambda client against the emulator's Invoke API."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT
from tests.emulator.conftest import TOKEN, Emulator


def _payload(response: dict[str, Any]) -> Any:
    return json.loads(response["Payload"].read())


def test_request_response_with_the_real_inference_function(real_emulator: Emulator) -> None:
    event = json.loads((REPO_ROOT / "events" / "http_api_predict.json").read_text())
    event["headers"]["x-token"] = TOKEN
    response = real_emulator.client().invoke(FunctionName="InferenceFunction", Payload=json.dumps(event))
    assert response["StatusCode"] == 200 and "FunctionError" not in response
    reply = _payload(response)
    assert reply["statusCode"] == 200, reply
    assert json.loads(reply["body"])["results"][0]["prediction"] == "positive"


def test_function_error_is_200_with_the_error_payload(test_emulator: Emulator) -> None:
    response = test_emulator.client().invoke(FunctionName="Fail", Payload=json.dumps({"reason": "testing"}))
    assert (response["StatusCode"], response["FunctionError"]) == (200, "Unhandled")
    error = _payload(response)
    assert error["errorType"] == "ValueError" and error["errorMessage"] == "failed on purpose: testing"
    assert any("handlers_for_tests.py" in frame for frame in error["stackTrace"])


def test_init_error_is_a_function_error(test_emulator: Emulator) -> None:
    response = test_emulator.client().invoke(FunctionName="Broken")
    assert response["FunctionError"] == "Unhandled"
    assert _payload(response)["errorType"] == "Runtime.ImportModuleError"


def test_tail_logs(test_emulator: Emulator) -> None:
    response = test_emulator.client().invoke(FunctionName="Echo", Payload=b'{"a": 1}', LogType="Tail")
    log = base64.b64decode(response["LogResult"]).decode()
    request_id = response["ResponseMetadata"]["RequestId"]
    assert f"START RequestId: {request_id} Version: $LATEST" in log
    assert f"echo: request {request_id}" in log
    assert f"END RequestId: {request_id}" in log
    report = log.splitlines()[-1]
    assert report.startswith(f"REPORT RequestId: {request_id}\tDuration: ")
    for field in ("Billed Duration: ", "Memory Size: 256 MB", "Max Memory Used: "):
        assert field in report


def test_unknown_function_is_resource_not_found(test_emulator: Emulator) -> None:
    client = test_emulator.client()
    with pytest.raises(client.exceptions.ResourceNotFoundException) as raised:
        client.invoke(FunctionName="NoSuchFunction")
    assert "NoSuchFunction" in raised.value.response["Error"]["Message"]


def test_event_invocation_is_accepted_and_runs(test_emulator: Emulator) -> None:
    marker = f"event-{time.monotonic_ns()}"
    response = test_emulator.client().invoke(FunctionName="Echo", InvocationType="Event", Payload=json.dumps({"marker": marker}))
    assert response["StatusCode"] == 202
    request_id = response["ResponseMetadata"]["RequestId"]
    deadline = time.monotonic() + 10
    while f"END RequestId: {request_id}" not in Path(test_emulator.log_path).read_text():
        assert time.monotonic() < deadline, "the Event invocation never ran"
        time.sleep(0.05)


def test_arn_and_qualified_names_resolve(test_emulator: Emulator) -> None:
    client = test_emulator.client()
    arn = "arn:aws:lambda:us-east-1:123456789012:function:Echo:$LATEST"
    assert _payload(client.invoke(FunctionName=arn, Payload=b'{"b": 2}')) == {"b": 2}
