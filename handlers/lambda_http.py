"""AWS Lambda entry point for HTTP: Mangum over the same FastAPI app the server runs.

API Gateway HTTP API (payload 2.0), REST API (1.0) and ALB events all work. Mangum runs the
ASGI lifespan on every invocation (Kludex/mangum#342), so the lifespan is off and the engine
is built once per cold start, at import, by the shared factory. With ENVIRONMENT=production
the init fails when the API would accept the development default token, or none.

A warm-up ping gets ``{"warm": true, "function": ..., "source": ...}`` at once, logs one line,
and touches neither the app nor the models: an EventBridge (CloudWatch Events) schedule's
``{"source": "aws.events", "detail-type": "Scheduled Event", ...}``, serverless-plugin-warmup's
``{"source": "serverless-plugin-warmup"}``, or ``{"warmup": true}``. Any other event that is not
HTTP fails with ``UnsupportedEvent``, whose message says what is accepted (Mangum alone would
raise a bare RuntimeError).
"""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from mangum import Mangum

from handlers.app import create_app
from handlers.auth import check_production
from handlers.coldstart import cold_start_engine, cold_start_settings
from handlers.powertools import CORRELATION_ID_PATH, instrument, logger, metrics, trace

ACCEPTED = (
    "API Gateway (HTTP API payload 2.0, REST API 1.0) and ALB events, and warm-up pings: an EventBridge 'Scheduled Event',"
    ' {"source": "serverless-plugin-warmup"} or {"warmup": true}'
)


class UnsupportedEvent(ValueError):
    """An event that is neither HTTP nor a warm-up ping: retrying it will not help."""


settings = cold_start_settings()
check_production(settings)  # ENVIRONMENT=production: fail the init with the default token, before any model loads
engine = cold_start_engine()
instrument(engine)
adapter = Mangum(
    # The Powertools "http request" line below is this edge's access log (JSON, with the invocation's
    # request id): the app's own access log would print a second line per request.
    create_app(settings.model_copy(update={"access_log": False}), engine, manage_engine=False),
    lifespan="off",
    api_gateway_base_path=settings.api_gateway_base_path,
)


def warm_up_source(event: Any) -> str | None:
    """Which warm-up ping the event is ("aws.events", "serverless-plugin-warmup", "warmup"); None for any other event."""
    if not isinstance(event, dict):
        return None
    if event.get("source") == "aws.events" and event.get("detail-type") == "Scheduled Event":
        return "aws.events"
    if event.get("source") == "serverless-plugin-warmup":
        return "serverless-plugin-warmup"
    return "warmup" if event.get("warmup") is True else None


def _check_http(event: Any, context: Any) -> None:
    try:
        if isinstance(event, dict):
            adapter.infer(event, context)
            return
    except RuntimeError:  # Mangum: "unable to infer a handler"
        pass
    shape = f"keys {sorted(event)[:10]}" if isinstance(event, dict) else f"a JSON {type(event).__name__}"
    raise UnsupportedEvent(f"this function answers {ACCEPTED}; the event has {shape}")


@trace
@logger.inject_lambda_context(correlation_id_path=CORRELATION_ID_PATH, log_event=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    source = warm_up_source(event)
    if source is not None:
        metrics.add_metric(name="WarmUpPings", unit=MetricUnit.Count, value=1)
        logger.info("warm-up ping", extra={"source": source})
        return {"warm": True, "function": context.function_name, "source": source}
    _check_http(event, context)
    started = time.perf_counter()
    metrics.add_metric(name="HttpInvocations", unit=MetricUnit.Count, value=1)
    response = adapter(event, context)
    logger.info(
        "http request",
        extra={"status": response.get("statusCode"), "duration_ms": round((time.perf_counter() - started) * 1000.0, 2)},
    )
    return response
