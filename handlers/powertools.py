"""Powertools for the Lambda edge: JSON logs with correlation ids, CloudWatch EMF metrics, X-Ray.

Prometheus stays the container-mode metrics; on Lambda (ENABLE_METRICS=false) the engine's
per-request figures go to EMF through an engine observer, so nothing is counted twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from aws_lambda_powertools import Logger, Metrics, single_metric
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import MetricUnit

from engine.facade import InferenceEngine, PredictionObserver
from handlers.coldstart import cold_start_settings

# API Gateway (HTTP and REST) carry requestContext.requestId; an ALB only a trace header.
CORRELATION_ID_PATH = 'requestContext.requestId || headers."x-amzn-trace-id"'

_settings = cold_start_settings()
logger = Logger(service=_settings.powertools_service_name)  # POWERTOOLS_LOG_LEVEL sets the level
metrics = Metrics(namespace=_settings.powertools_metrics_namespace, service=_settings.powertools_service_name)
Handler = TypeVar("Handler", bound=Callable[..., Any])


def trace(handler: Handler) -> Handler:
    """X-Ray tracing of the handler when ENABLE_TRACING is on. Off, the X-Ray SDK is not even
    imported (it costs about 0.1 s of cold start); Powertools' Tracer is itself a no-op outside
    Lambda or with POWERTOOLS_TRACE_DISABLED=true."""
    if not _settings.enable_tracing:
        return handler
    from aws_lambda_powertools import Tracer

    traced: Handler = Tracer(service=_settings.powertools_service_name).capture_lambda_handler(capture_response=False)(handler)
    return traced


def _emf_observer(namespace: str) -> PredictionObserver:
    def observe(model: str, version: str, inputs: int, latency_ms: float) -> None:
        for name, unit, value in (
            ("Predictions", MetricUnit.Count, float(inputs)),
            ("PredictionLatency", MetricUnit.Milliseconds, latency_ms),
        ):
            with single_metric(name=name, unit=unit, value=value, namespace=namespace) as metric:
                metric.add_dimension(name="model", value=model)
                metric.add_dimension(name="model_version", value=version)

    return observe


def instrument(engine: InferenceEngine) -> None:
    """Route the engine's logs through the JSON logger and its per-request figures to EMF."""
    copy_config_to_registered_loggers(source_logger=logger, include={"engine", "handlers"}, log_level=logging.INFO)
    engine.observers.append(_emf_observer(_settings.powertools_metrics_namespace))
