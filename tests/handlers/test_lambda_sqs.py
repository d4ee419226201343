"""The SQS batch handler in a fresh execution environment: partial batch failures, results in S3 (moto server)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.handlers.lambda_events import generate
from tests.handlers.lambda_harness import run_lambda
from tests.moto_server import CREDENTIALS_ENV, moto_server

BUCKET = "mlinfer-results"


def _s3(endpoint: str) -> Any:
    credentials = {name.lower(): value for name, value in CREDENTIALS_ENV.items() if name != "AWS_DEFAULT_REGION"}
    return boto3.session.Session().client("s3", endpoint_url=endpoint, region_name="us-east-1", **credentials)


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_server() as url:
        s3 = boto3.session.Session().client(
            "s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t"
        )
        s3.create_bucket(Bucket=BUCKET)
        yield url


def _records(bodies: list[str]) -> dict[str, Any]:
    template = generate("sqs", "receive-message")
    record = template["Records"][0]
    records = []
    for i, body in enumerate(bodies):
        copy = json.loads(json.dumps(record))
        copy.update(messageId=f"msg-{i}", body=body)
        records.append(copy)
    return {"Records": records}


def test_batch_writes_each_result_and_fails_only_bad_records(endpoint: str, models_dir: Path) -> None:
    bodies = [
        json.dumps({"id": "review/1", "texts": ["I love this product", "This is terrible"]}),
        "this is not json",
        json.dumps({"id": "iris-7", "model": "iris", "instances": [[5.1, 3.5, 1.4, 0.2]]}),
        json.dumps({"texts": ["no id to store the result under"]}),
        json.dumps({"id": "nope", "texts": ["x"], "model": "no-such-model"}),
        json.dumps({"id": "pinned", "texts": ["Boring and far too long."], "model_version": "v2"}),
    ]
    run = run_lambda(
        "handlers.lambda_sqs",
        [_records(bodies)],
        AWS_ENDPOINT_URL=endpoint,
        BATCH_RESULTS_URI=f"s3://{BUCKET}/batch/",
        **CREDENTIALS_ENV,
    )
    response = run.responses[0]
    assert sorted(f["itemIdentifier"] for f in response["batchItemFailures"]) == ["msg-1", "msg-3", "msg-4"]
    s3 = _s3(endpoint)
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="batch/")["Contents"])
    assert keys == ["batch/iris-7.json", "batch/pinned.json", "batch/review%2F1.json"]
    review = json.loads(s3.get_object(Bucket=BUCKET, Key="batch/review%2F1.json")["Body"].read())
    assert review["request_id"] == "review/1"
    assert [r["prediction"] for r in review["results"]] == ["positive", "negative"]
    pinned = json.loads(s3.get_object(Bucket=BUCKET, Key="batch/pinned.json")["Body"].read())
    assert (pinned["model_version"], pinned["results"][0]["prediction"]) == ("v2", "negative")
    iris = json.loads(s3.get_object(Bucket=BUCKET, Key="batch/iris-7.json")["Body"].read())
    assert iris["results"][0]["prediction"] == "setosa"
    assert any(line.get("message") == "batch record answered" for line in run.logs)
    assert any("BatchRecordFailures" in line for line in run.logs if "_aws" in line)


def test_a_file_uri_writes_each_result_into_a_local_folder(tmp_path: Path, models_dir: Path) -> None:
    """Without isolation: the host's /tmp (tmp_path) is not an isolated environment's."""
    import asyncio
    import os

    from emulator.pool import WorkerPool
    from emulator.template import FunctionSpec
    from emulator.worker import EnvironmentOptions
    from tests.conftest import REPO_ROOT
    from tests.handlers.lambda_harness import DEFAULT_ENVIRONMENT, FUNCTION_NAME

    folder = tmp_path / "not" / "yet" / "there"
    environment = {**DEFAULT_ENVIRONMENT, "BATCH_RESULTS_URI": f"file://{folder}/"}
    spec = FunctionSpec(FUNCTION_NAME, "handlers.lambda_sqs.handler", REPO_ROOT, memory_mb=2048, timeout_s=60.0, environment=environment)
    bodies = [json.dumps({"id": "review/1", "texts": ["I love this product"]}), "not json", json.dumps({"id": "r2", "texts": ["Awful."]})]
    logged: list[str] = []

    async def invoke() -> bytes:
        pool = WorkerPool(
            spec, os.environ, max_concurrency=1, log_sink=lambda _f, text: logged.append(text), options=EnvironmentOptions(isolate=False)
        )
        try:
            invocation = await pool.invoke(json.dumps(_records(bodies)).encode())
            assert not invocation.function_error, invocation.payload
            return invocation.payload
        finally:
            await pool.close()

    response = json.loads(asyncio.run(invoke()))
    assert response == {"batchItemFailures": [{"itemIdentifier": "msg-1"}]}
    assert sorted(path.name for path in folder.iterdir()) == ["r2.json", "review%2F1.json"]
    review = json.loads((folder / "review%2F1.json").read_text())
    assert (review["request_id"], review["results"][0]["prediction"]) == ("review/1", "positive")
    answered = [json.loads(line) for line in "".join(logged).splitlines() if '"batch record answered"' in line]
    assert sorted(line["result_file"] for line in answered) == [str(folder / "r2.json"), str(folder / "review%2F1.json")]
    assert all("s3_key" not in line for line in answered)
