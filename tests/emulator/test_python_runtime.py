"""emulator/python_runtime.py: awslambdaric's context as the runtime builds it, in-process."""

from __future__ import annotations

import time

from emulator.python_runtime import function_arn, make_context


def test_a_context_carries_the_invocations_client_context_arn_and_deadline() -> None:
    client_context = {"client": {"installation_id": "i-1", "app_title": "app"}, "custom": {"k": "v"}, "env": {"platform": "test"}}
    deadline_ms = int(time.time() * 1000) + 5000
    context = make_context("req-1", deadline_ms=deadline_ms, invoked_function_arn=function_arn("Fn") + ":1", client_context=client_context)
    assert context.aws_request_id == "req-1" and context.invoked_function_arn.endswith(":function:Fn:1")
    assert (context.client_context.custom, context.client_context.env) == ({"k": "v"}, {"platform": "test"})
    assert (context.client_context.client.installation_id, context.client_context.client.app_title) == ("i-1", "app")
    assert 0 < context.get_remaining_time_in_millis() <= 5000


def test_a_context_made_without_arguments_has_a_request_id_and_no_client_context() -> None:
    context = make_context()
    assert context.aws_request_id and context.client_context is None
    assert context.get_remaining_time_in_millis() > 0
