"""boto3's Lambda client against the emulator's Invoke API."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError

from emulator import limits
from tests.conftest import REPO_ROOT
from tests.emulator.conftest import TOKEN, Emulator, start_emulator
from tests.network import stop_server


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


# The fronts' template: qualifiers and aliases, payload limits, ClientContext, tracing, Event retries, control plane.

FRONTS_TEMPLATE = Path(__file__).resolve().parent / "templates" / "fronts.yaml"
RETRY_DELAY_S = 0.2
ARN = "arn:aws:lambda:us-east-1:123456789012:function"


@pytest.fixture(scope="module")
def fronts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    log_path = tmp_path_factory.mktemp("fronts") / "invoke_api.log"
    delays = f"{RETRY_DELAY_S},{RETRY_DELAY_S}"
    process, emulator = start_emulator(log_path, FRONTS_TEMPLATE, "--event-retry-delays", delays, "--no-reload", "--use-dev-env")
    try:
        yield emulator
    finally:
        stop_server(process)


def _error(raised: pytest.ExceptionInfo[ClientError]) -> tuple[int, str, str]:
    response = raised.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"], response["Error"]["Message"]


def test_sync_request_over_6_mb_is_refused_with_413(fronts: Emulator) -> None:
    payload = json.dumps("x" * limits.SYNC_REQUEST_BYTES.value).encode()
    with pytest.raises(ClientError) as raised:
        fronts.client().invoke(FunctionName="Plain", Payload=payload)
    message = "Request must be smaller than 6291456 bytes for the InvokeFunction operation"
    assert _error(raised) == (413, "RequestEntityTooLargeException", message)


def test_event_request_over_1_mb_is_refused_with_413(fronts: Emulator) -> None:
    payload = json.dumps("x" * limits.EVENT_REQUEST_BYTES.value).encode()
    with pytest.raises(ClientError) as raised:
        fronts.client().invoke(FunctionName="Plain", InvocationType="Event", Payload=payload)
    message = f"{len(payload)} byte payload is too large for the Event invocation type (limit 1048576 bytes)"
    assert _error(raised) == (413, "RequestEntityTooLargeException", message)


@pytest.mark.parametrize(
    ("name", "qualifier", "version", "invoked"),
    [
        ("Aliased", None, "$LATEST", f"{ARN}:Aliased"),
        ("Aliased:live", None, "1", f"{ARN}:Aliased:live"),
        ("Aliased", "live", "1", f"{ARN}:Aliased:live"),
        ("Aliased", "1", "1", f"{ARN}:Aliased:1"),
        (f"{ARN}:Aliased:$LATEST", None, "$LATEST", f"{ARN}:Aliased:$LATEST"),
        ("123456789012:function:Aliased:live", None, "1", f"{ARN}:Aliased:live"),
    ],
)
def test_qualifiers_run_the_version_they_name(fronts: Emulator, name: str, qualifier: str | None, version: str, invoked: str) -> None:
    extra = {"Qualifier": qualifier} if qualifier else {}
    response = fronts.client().invoke(FunctionName=name, Payload=b"{}", **extra)
    assert response["ExecutedVersion"] == version
    seen = _payload(response)
    assert (seen["function_version"], seen["invoked_function_arn"]) == (version, invoked)


def test_unknown_qualifiers_are_resource_not_found(fronts: Emulator) -> None:
    client = fronts.client()
    for name, qualifier in (("Aliased:nope", None), ("Plain:live", None), ("Plain", "1")):
        with pytest.raises(client.exceptions.ResourceNotFoundException) as raised:
            client.invoke(FunctionName=name, **({"Qualifier": qualifier} if qualifier else {}))
        full = f"{ARN}:{name}" + (f":{qualifier}" if qualifier else "")
        assert _error(raised) == (404, "ResourceNotFoundException", f"Function not found: {full}")
    with pytest.raises(client.exceptions.InvalidParameterValueException):
        client.invoke(FunctionName="Aliased:live", Qualifier="1")


def test_client_context_reaches_the_function_for_sync_invocations(fronts: Emulator) -> None:
    client_context = {"custom": {"tenant": "t-1"}, "env": {"locale": "fr"}, "client": {}}
    encoded = base64.b64encode(json.dumps(client_context).encode()).decode()
    seen = _payload(fronts.client().invoke(FunctionName="Plain", Payload=b"{}", ClientContext=encoded))
    assert seen["client_context"] == {"custom": {"tenant": "t-1"}, "env": {"locale": "fr"}}
    assert _payload(fronts.client().invoke(FunctionName="Plain", Payload=b"{}"))["client_context"] is None


@pytest.mark.parametrize(
    "client_context",
    ["not base64!", base64.b64encode(b"not json").decode(), base64.b64encode(b"[1]").decode(), "e30=" + "A" * 3584],
)
def test_invalid_client_context_is_400(fronts: Emulator, client_context: str) -> None:
    client = fronts.client()
    with pytest.raises(client.exceptions.InvalidRequestContentException) as raised:
        client.invoke(FunctionName="Plain", Payload=b"{}", ClientContext=client_context)
    status, _code, message = _error(raised)
    assert status == 400 and message.startswith("Client context must be")


def test_trace_header_becomes_the_functions_trace_id(fronts: Emulator) -> None:
    trace = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    url = f"{fronts.lambda_url}/2015-03-31/functions/Plain/invocations"
    response = httpx.post(url, content=b"{}", headers={"X-Amzn-Trace-Id": trace}, timeout=30)
    assert response.status_code == 200 and response.json()["trace_id"] == trace


def test_failed_event_is_retried_twice_with_the_same_request_id(fronts: Emulator) -> None:
    response = fronts.client().invoke(FunctionName="Fail", InvocationType="Event", Payload=b"{}")
    assert response["StatusCode"] == 202
    request_id = response["ResponseMetadata"]["RequestId"]
    dropped = f"Fail: event {request_id} failed (RuntimeError) after 2 retries; dropped"
    deadline = time.monotonic() + 30
    while dropped not in (log := fronts.log_path.read_text()):
        assert time.monotonic() < deadline, "the Event invocation was not retried twice"
        time.sleep(0.05)
    assert log.count(f"START RequestId: {request_id} ") == 3
    assert log.count(f"fronts-fail: request {request_id}") == 3
    for attempt in (1, 2):
        assert f"Fail: event {request_id} failed (RuntimeError); retry {attempt} of 2 in {RETRY_DELAY_S:g} s" in log


def test_list_functions_answers_from_the_template(fronts: Emulator) -> None:
    functions = {f["FunctionName"]: f for f in fronts.client().list_functions()["Functions"]}
    assert set(functions) == {"Aliased", "Plain", "Reply", "Size", "Hold", "Fail", "RestEcho"}
    plain = functions["Plain"]
    assert plain["FunctionArn"] == f"{ARN}:Plain" and plain["Version"] == "$LATEST"
    assert (plain["Runtime"], plain["PackageType"], plain["Handler"]) == ("python3.12", "Zip", "tests.emulator.handlers_fronts.context")
    assert (plain["MemorySize"], plain["Timeout"], plain["Environment"]) == (128, 3, {"Variables": {"FRONTS": "yes"}})
    assert plain["LastModified"].endswith("+0000") and plain["EphemeralStorage"] == {"Size": 512}


def test_get_function_and_its_configuration_by_qualifier(fronts: Emulator) -> None:
    client = fronts.client()
    assert client.get_function(FunctionName="Aliased")["Configuration"]["Version"] == "$LATEST"
    live = client.get_function_configuration(FunctionName="Aliased", Qualifier="live")
    assert (live["Version"], live["FunctionArn"]) == ("1", f"{ARN}:Aliased:1")
    with pytest.raises(client.exceptions.ResourceNotFoundException) as raised:
        client.get_function_configuration(FunctionName="Aliased", Qualifier="nope")
    assert _error(raised)[2] == f"Function not found: {ARN}:Aliased:nope"
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_function(FunctionName="NoSuchFunction")


def test_aliases_and_versions_of_the_auto_publish_alias(fronts: Emulator) -> None:
    client = fronts.client()
    alias = client.get_alias(FunctionName="Aliased", Name="live")
    assert (alias["AliasArn"], alias["FunctionVersion"]) == (f"{ARN}:Aliased:live", "1")
    assert [a["Name"] for a in client.list_aliases(FunctionName="Aliased")["Aliases"]] == ["live"]
    assert client.list_aliases(FunctionName="Plain")["Aliases"] == []
    versions = client.list_versions_by_function(FunctionName="Aliased")["Versions"]
    assert [v["Version"] for v in versions] == ["$LATEST", "1"]
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_alias(FunctionName="Aliased", Name="nope")


def test_other_control_plane_calls_get_an_aws_error(fronts: Emulator) -> None:
    client = fronts.client()
    calls: list[Callable[[], Any]] = [
        lambda: client.get_account_settings(),
        lambda: client.delete_function(FunctionName="Plain"),
        lambda: client.create_alias(FunctionName="Plain", Name="x", FunctionVersion="1"),
    ]
    for call in calls:
        with pytest.raises(ClientError) as raised:
            call()
        status, code, message = _error(raised)
        assert (status, code) == (404, "UnknownOperationException") and "not an operation the local Lambda API answers" in message
