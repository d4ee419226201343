"""The one table from engine errors to HTTP status codes."""

from __future__ import annotations

import logging
import time

import pytest

from engine import errors
from handlers.errors import STATUS_BY_ERROR, ErrorReplies, ShedLog, error_body, error_response, status_for


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (errors.Unauthorized("x"), 401),
        (errors.ModelNotFound("x"), 404),
        (errors.VersionNotFound("x"), 404),
        (errors.PayloadTooLarge("x"), 413),
        (errors.InvalidInput("x"), 422),
        (errors.Overloaded("x"), 503),
        (errors.ModelNotReady("x"), 503),
        (errors.BackendUnavailable("x"), 503),
        (errors.InferenceFailed("x"), 500),
        (errors.EngineError("x"), 500),
    ],
)
def test_each_engine_error_has_one_status(error: errors.EngineError, status: int) -> None:
    assert status_for(error) == status


def test_every_engine_error_class_is_covered_by_the_table() -> None:
    mapped = [cls for cls, _ in STATUS_BY_ERROR]
    public = {cls for cls in vars(errors).values() if isinstance(cls, type) and issubclass(cls, errors.EngineError)}
    uncovered = {cls for cls in public if not any(issubclass(cls, m) for m in mapped)}
    assert uncovered == {errors.EngineError}


def test_subclasses_come_before_their_bases() -> None:
    order = [cls for cls, _ in STATUS_BY_ERROR]
    for i, cls in enumerate(order):
        assert not any(issubclass(cls, earlier) for earlier in order[:i]), f"{cls.__name__} is shadowed by an earlier base"


def test_error_body_shape() -> None:
    assert error_body("c", "m") == {"error": {"code": "c", "message": "m"}}
    assert error_body("c", "m", {"indexes": (1, 2)}) == {"error": {"code": "c", "message": "m", "details": {"indexes": [1, 2]}}}


@pytest.mark.parametrize(
    ("retry_after_s", "header"),
    [(None, "1"), (0.0, "1"), (0.2, "1"), (1.0, "1"), (1.01, "2"), (2.5, "3"), (30.0, "30"), (float("inf"), "1"), (float("nan"), "1")],
)
def test_retry_after_is_the_engine_estimate_rounded_up(retry_after_s: float | None, header: str) -> None:
    replies = ErrorReplies(None, "/api/v1/predict")
    response = replies.for_error("/api/v1/predict", "POST", errors.Overloaded("busy", retry_after_s=retry_after_s))
    assert (response.status_code, response.headers["retry-after"]) == (503, header)
    deadline = replies.for_error("/api/v1/predict", "POST", errors.DeadlineExceeded("late", retry_after_s=retry_after_s))
    assert deadline.headers["retry-after"] == header


def test_other_503s_say_retry_after_1_and_401_names_the_header() -> None:
    assert error_response(503, "model_not_ready", "m").headers["retry-after"] == "1"
    unauthorized = error_response(401, "unauthorized", "m", close=True)
    assert unauthorized.headers["www-authenticate"] == "X-Token" and unauthorized.headers["connection"] == "close"
    assert "retry-after" not in error_response(422, "invalid_request", "m").headers


def test_sheds_log_one_warning_per_code_per_interval_with_the_count(caplog: pytest.LogCaptureFixture) -> None:
    replies = ErrorReplies(None, "/api/v1/predict")
    replies.shed_log = ShedLog(interval_s=0.3)
    with caplog.at_level(logging.DEBUG, logger="handlers.errors"):
        for _ in range(1000):
            replies.for_error("/api/v1/predict", "POST", errors.Overloaded("queue full"))
            replies.for_error("/api/v1/predict", "POST", errors.DeadlineExceeded("too late"))
        time.sleep(0.35)
        replies.for_error("/api/v1/predict", "POST", errors.Overloaded("queue full"))
    records = [r for r in caplog.records if r.name == "handlers.errors"]
    assert all(r.levelno == logging.WARNING for r in records), [r.getMessage() for r in records]
    messages = [r.getMessage() for r in records]
    assert len(messages) == 3, messages
    assert "(overloaded)" in messages[0] and "0 more" in messages[0]
    assert "(deadline_exceeded)" in messages[1]
    assert "(overloaded)" in messages[2] and "999 more" in messages[2]


def test_other_server_errors_are_logged_at_error(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="handlers.errors"):
        response = ErrorReplies(None, "/p").for_error("/p", "POST", errors.InferenceFailed("runtime broke"))
    assert response.status_code == 500
    assert [r.levelno for r in caplog.records if r.name == "handlers.errors"] == [logging.ERROR]


def test_replies_are_counted_by_status_and_code() -> None:
    from prometheus_client import CollectorRegistry

    from engine.metrics import Metrics

    metrics = Metrics(CollectorRegistry())
    replies = ErrorReplies(metrics, "/api/v1/predict")
    replies.reply("/api/v1/predict", 401, "unauthorized", "m")
    replies.reply("/api/v1/cache", 401, "unauthorized", "m")
    replies.for_error("/api/v1/predict", "POST", errors.ModelNotFound("m"), engine_counted=True)

    def value(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(name, labels)

    assert value("http_errors_total", status="401", code="unauthorized") == 2
    assert value("http_errors_total", status="404", code="model_not_found") == 1
    # Only the predict route's own rejection is a failed prediction request; the engine counted its 404.
    assert value("inference_requests_total", model="unknown", model_version="unresolved", outcome="unauthorized") == 1
    assert value("inference_errors_total", code="unauthorized") == 1
    assert value("inference_errors_total", code="model_not_found") is None
