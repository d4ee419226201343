"""handlers/logs.py: the text and JSON formats, the request's id on every line logged while it is
served, and one handler for the whole process (uvicorn's loggers included)."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from collections.abc import Iterator

import pytest

from engine.tracing import RequestRecord, current_request
from handlers import logs


def _record(message: str = "hello %s", args: tuple[object, ...] = ("world",), **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("engine.test", logging.WARNING, __file__, 1, message, args, None)
    record.__dict__.update(extra)
    return record


def test_json_lines_carry_timestamp_level_logger_message_and_fields() -> None:
    fields = {"method": "POST", "status": 200, "model": "m", "arm": None}
    line = json.loads(logs.JsonFormatter().format(_record(fields=fields)))
    assert set(line) == {"timestamp", "level", "logger", "message", "method", "status", "model"}, "a None field is left out"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["timestamp"])
    assert (line["level"], line["logger"], line["message"]) == ("WARNING", "engine.test", "hello world")
    assert (line["method"], line["status"], line["model"]) == ("POST", 200, "m")


def test_a_line_logged_while_a_request_is_served_has_its_request_id() -> None:
    token = current_request.set(RequestRecord("req-42"))
    try:
        line = json.loads(logs.JsonFormatter().format(_record()))
    finally:
        current_request.reset(token)
    assert line["request_id"] == "req-42"
    assert "request_id" not in json.loads(logs.JsonFormatter().format(_record()))


def test_json_keeps_the_traceback_on_one_line() -> None:
    try:
        raise ValueError("broken")
    except ValueError:
        record = logging.LogRecord("engine.test", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    text = logs.JsonFormatter().format(record)
    assert "\n" not in text
    assert "ValueError: broken" in json.loads(text)["exception"]


def test_text_lines_keep_the_format_and_append_fields() -> None:
    fields = {"request_id": "abc", "latency_ms": 1.5, "model": None, "texts": ["two words"]}
    text = logs.TextFormatter().format(_record(fields=fields))
    assert re.fullmatch(r'\S+ \S+ WARNING engine\.test: hello world request_id=abc latency_ms=1\.5 texts=\["two words"\]', text), text
    assert re.fullmatch(r"\S+ \S+ WARNING engine\.test: hello world", logs.TextFormatter().format(_record()))


@pytest.fixture()
def restored_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    names = ("uvicorn", "uvicorn.error", "uvicorn.asgi", "uvicorn.access", "gunicorn.error", "gunicorn.access")
    foreign = {name: (list(logging.getLogger(name).handlers), logging.getLogger(name).propagate) for name in names}
    try:
        yield
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        for name, (handlers, propagate) in foreign.items():
            logging.getLogger(name).handlers[:] = handlers
            logging.getLogger(name).propagate = propagate


@pytest.mark.usefixtures("restored_logging")
def test_configure_installs_one_handler_and_routes_uvicorn_through_it(monkeypatch: pytest.MonkeyPatch) -> None:
    uvicorn_logger = logging.getLogger("uvicorn.error")
    uvicorn_logger.addHandler(logging.StreamHandler(io.StringIO()))
    uvicorn_logger.propagate = False
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    logs.configure("INFO", "text")
    logs.configure("INFO", "json")  # again, as each start-up step of a server process does
    ours = [h for h in logging.getLogger().handlers if h.get_name() == "mlinfer"]
    assert len(ours) == 1 and isinstance(ours[0].formatter, logs.JsonFormatter)
    uvicorn_logger.info("Started server process [%d]", 1)
    logging.getLogger("uvicorn.access").info("the server's own access line: the app's replaces it")
    logging.getLogger("engine.lifecycle").debug("below the level")
    (line,) = stream.getvalue().splitlines()
    assert json.loads(line)["logger"] == "uvicorn.error" and json.loads(line)["message"] == "Started server process [1]"
