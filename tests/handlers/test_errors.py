"""The one table from engine errors to HTTP status codes."""

from __future__ import annotations

import pytest

from engine import errors
from handlers.errors import STATUS_BY_ERROR, error_body, status_for


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
