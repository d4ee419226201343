"""Logging of a server process: one handler on the root logger, in text or JSON (LOG_FORMAT).

Every line goes through it, the service's and uvicorn's (uvicorn is started without a logging
config of its own, so its loggers propagate here). In JSON each line is one object with
``timestamp``, ``level``, ``logger`` and ``message``; a line logged while a request is served
also carries its ``request_id`` (and ``trace_id`` with tracing on), and the access log line
(``handlers.access_log``) its fields: method, path, status, latency_ms, model, model_version,
arm, cache_hits, inputs. Nothing here reads a header: a token is never logged.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping
from typing import Any, Literal

from engine import tracing

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FIELDS_ATTRIBUTE = "fields"
"""A record's structured fields (``logger.info(..., extra={"fields": {...}})``): JSON keys, or
``key=value`` pairs after a text line's message."""
MESSAGE_FIELDS_ATTRIBUTE = "message_fields"
"""Fields the message itself already tells (the access line's method, path, status, latency):
JSON keys too, but not repeated after a text line's message."""
_HANDLER_NAME = "mlinfer"
# Loggers that come with handlers of their own (uvicorn's config, gunicorn's worker): theirs go,
# and their lines propagate to the root's one handler.
_FOREIGN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.asgi", "gunicorn.error")
# The servers' own access logs stay silent: the app's (handlers.access_log) has the request id and
# the model. (uvicorn skips its access line when its logger has no handler, propagated ones included.)
_SILENT_LOGGERS = ("uvicorn.access", "gunicorn.access")


def _fields(record: logging.LogRecord) -> Mapping[str, Any] | None:
    fields: Mapping[str, Any] | None = getattr(record, FIELDS_ATTRIBUTE, None)
    return fields


def _text_value(value: Any) -> str:
    kind = type(value)
    if kind is int or kind is float:
        return str(value)
    if kind is str and value and " " not in value and '"' not in value and "=" not in value:
        return str(value)
    return json.dumps(value, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``TEXT_FORMAT``, then the record's fields as ``key=value`` (strings with spaces JSON-quoted)."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = _fields(record)
        if not fields:
            return line
        pairs = " ".join(f"{key}={_text_value(value)}" for key, value in fields.items() if value is not None)
        return f"{line} {pairs}" if pairs else line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: timestamp (UTC, ISO 8601 with milliseconds), level, logger,
    message, the request's id and trace id when one is being served, the record's fields, and
    the exception's traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "timestamp": _iso_utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request = tracing.current_request.get()
        if request is not None:
            line["request_id"] = request.request_id
        trace_id = tracing.current_trace_id()
        if trace_id is not None:
            line["trace_id"] = trace_id
        for fields in (getattr(record, MESSAGE_FIELDS_ATTRIBUTE, None), _fields(record)):
            if fields:
                line.update((key, value) for key, value in fields.items() if value is not None)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def _iso_utc(created: float) -> str:
    seconds = int(created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int((created - seconds) * 1000):03d}Z"


def formatter(log_format: Literal["text", "json"]) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter()


def configure(level: str, log_format: Literal["text", "json"]) -> None:
    """The process's logging: one stderr handler on the root logger in ``log_format``, at
    ``level``. Idempotent (every start-up step of a server process calls it); handlers that
    others added to the root (a test's capture) stay."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == _HANDLER_NAME:
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter(log_format))
    root.addHandler(handler)
    root.setLevel(level)
    for name in (*_FOREIGN_LOGGERS, *_SILENT_LOGGERS):
        foreign = logging.getLogger(name)
        foreign.handlers.clear()
        foreign.setLevel(logging.NOTSET)  # LOG_LEVEL (the root's) decides, whatever level a server's config set
        foreign.propagate = name in _FOREIGN_LOGGERS
