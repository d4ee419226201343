"""AWS Lambda entry point for SQS batch inference.

Each record body is ``{id, texts, model?, model_version?}`` (or ``instances`` for a tabular
model). Each answer is written as one JSON object under ``BATCH_RESULTS_URI``, keyed by the
record id. A malformed record fails alone (partial batch response), is retried by SQS and
lands in the dead-letter queue after the redrive limit; the other records succeed.

``BATCH_RESULTS_URI`` is ``s3://bucket/prefix/`` on AWS. Locally it may be ``file:///folder/``
(or relative, ``file://./batch-results/``, to the working directory): each answer is then the
file ``<id>.json`` in that folder, which is created when missing.
"""

from __future__ import annotations

import asyncio
import functools
import os
import urllib.parse
from pathlib import Path
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from pydantic import ValidationError

from engine.schemas import PredictRequest
from handlers.coldstart import cold_start_engine, cold_start_settings
from handlers.powertools import instrument, logger, metrics, trace

settings = cold_start_settings()
engine = cold_start_engine()
instrument(engine)
processor = BatchProcessor(event_type=EventType.SQS)
# One event loop for the environment's life: the engine's cache connections belong to it.
loop = asyncio.new_event_loop()


FILE_SCHEME = "file://"


class BadRecord(ValueError):
    """The record cannot be answered as sent; retrying will not help."""


@functools.cache
def _s3() -> Any:
    import boto3

    return boto3.session.Session().client("s3")  # honours AWS_ENDPOINT_URL


def results_location() -> tuple[str, str]:
    """The S3 bucket and key prefix of ``BATCH_RESULTS_URI`` (an ``s3://`` URI)."""
    if not settings.batch_results_uri:
        raise RuntimeError("BATCH_RESULTS_URI (s3://bucket/prefix/, or locally file://folder/) is not set")
    bucket, _, prefix = settings.batch_results_uri.removeprefix("s3://").partition("/")
    return bucket, prefix if not prefix or prefix.endswith("/") else prefix + "/"


def results_folder() -> Path | None:
    """The local folder of a ``file://`` ``BATCH_RESULTS_URI``; None for S3."""
    uri = settings.batch_results_uri or ""
    return Path(uri.removeprefix(FILE_SCHEME)) if uri.startswith(FILE_SCHEME) else None


def write_result(record_id: str, body: bytes) -> dict[str, str]:
    """Store one answer as ``<id>.json`` under ``BATCH_RESULTS_URI``; where it went, for the log line."""
    name = f"{urllib.parse.quote(record_id, safe='')}.json"
    folder = results_folder()
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        partial = folder / f".{name}.{os.getpid()}.partial"
        partial.write_bytes(body)
        partial.replace(path)  # a reader never sees half a result
        return {"result_file": str(path)}
    bucket, prefix = results_location()
    _s3().put_object(Bucket=bucket, Key=prefix + name, Body=body, ContentType="application/json")
    return {"s3_key": prefix + name}


def parse_record(body: str) -> PredictRequest:
    try:
        request = PredictRequest.model_validate_json(body)
    except ValidationError as exc:
        raise BadRecord(f"invalid record body: {exc.errors(include_url=False)}") from exc
    if not request.id:
        raise BadRecord("a batch record needs an 'id': its result is stored under it")
    return request


def record_handler(record: SQSRecord) -> None:
    request = parse_record(record.body)
    response = loop.run_until_complete(engine.predict(request))
    where = write_result(request.id or "", response.model_dump_json().encode())
    logger.info("batch record answered", extra={"record_id": request.id, **where, "model_version": response.model_version})


@trace
@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    metrics.add_metric(name="BatchRecords", unit=MetricUnit.Count, value=len(event.get("Records", [])))
    response = process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
    result: dict[str, Any] = dict(response)
    failures = len(result["batchItemFailures"])
    if failures:
        metrics.add_metric(name="BatchRecordFailures", unit=MetricUnit.Count, value=failures)
    return result
