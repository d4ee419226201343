"""Run a Lambda handler module in a fresh process, as an execution environment would.

    python -m tests.handlers.lambda_harness handlers.lambda_http events.json results.json

Imports the module (the cold start), invokes ``handler`` once per event in the JSON list with
a Lambda-shaped context, and writes the responses (and init / invoke timings) to results.json.
Whatever the handler logs goes to stdout, as in CloudWatch.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any


class LambdaContext:
    function_name = "ml-inference-test"
    function_version = "$LATEST"
    memory_limit_in_mb = 2048
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:ml-inference-test"
    log_group_name = "/aws/lambda/ml-inference-test"
    log_stream_name = "test"

    def __init__(self) -> None:
        self.aws_request_id = str(uuid.uuid4())
        self._deadline = time.monotonic() + 30.0

    def get_remaining_time_in_millis(self) -> int:
        return int((self._deadline - time.monotonic()) * 1000)


def main(module_name: str, events_path: str, results_path: str) -> None:
    started = time.perf_counter()
    module = importlib.import_module(module_name)
    init_ms = (time.perf_counter() - started) * 1000.0
    results: list[dict[str, Any]] = []
    for event in json.loads(Path(events_path).read_text()):
        invoked = time.perf_counter()
        response = module.handler(event, LambdaContext())
        results.append({"response": response, "duration_ms": (time.perf_counter() - invoked) * 1000.0})
    Path(results_path).write_text(json.dumps({"init_ms": init_ms, "results": results}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
