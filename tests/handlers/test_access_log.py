"""handlers/access_log.py against real ``mlinfer serve`` processes: one access line per request,
the request id in and out, the prediction's fields, JSON lines, and never a token or a text
(unless LOG_TEXTS=true)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.facade import InferenceEngine
from handlers.access_log import request_id_from
from handlers.app import create_app
from tests.conftest import make_settings
from tests.network import SERVER_TOKEN, start_server, stop_server
from tests.registries import V1_MODEL, sentiment, write_registry

ACCESS_LINE = re.compile(r"INFO handlers\.access: (?P<method>\S+) (?P<path>\S+) (?P<status>\d{3}) (?P<ms>[\d.]+) ms (?P<fields>.*)$")
PAIR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\[[^\]]*\]|\S+)')
AUTH = {"X-Token": SERVER_TOKEN}
LOG_WAIT_S = 10.0


@dataclass(frozen=True)
class Served:
    base_url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text()


def _serve(
    tmp_path_factory: pytest.TempPathFactory, name: str, *, log_format: str = "text", log_texts: str = "false", tokens: str = ""
) -> Iterator[Served]:
    """A server over sentiment_analysis v1; ``tokens``: ADMIN_TOKEN and METRICS_TOKEN, derived from it (unset when empty)."""
    folder = tmp_path_factory.mktemp(name)
    registry = write_registry(folder, {"sentiment_analysis": sentiment({"v1": {"path": V1_MODEL, "status": "active"}})})
    log_path = folder / "server.log"
    process, base_url = start_server(
        log_path,
        "--workers",
        "1",
        MODEL_REGISTRY_PATH=str(registry),
        LOG_LEVEL="INFO",
        LOG_FORMAT=log_format,
        LOG_TEXTS=log_texts,
        ADMIN_TOKEN=tokens and f"admin-{tokens}",
        METRICS_TOKEN=tokens and f"metrics-{tokens}",
    )
    try:
        yield Served(base_url, log_path)
    finally:
        stop_server(process)


@pytest.fixture(scope="module")
def text_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from _serve(tmp_path_factory, "text-log", tokens="sentinel-0042")


@pytest.fixture(scope="module")
def json_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from _serve(tmp_path_factory, "json-log", log_format="json", log_texts="true")


def _access_lines(log: str) -> list[dict[str, Any]]:
    lines = []
    for line in log.splitlines():
        match = ACCESS_LINE.search(line)
        if match is None:
            continue
        fields: dict[str, Any] = {key: value for key, value in PAIR.findall(match["fields"])}
        lines.append(
            {"method": match["method"], "path": match["path"], "status": int(match["status"]), "latency_ms": match["ms"], **fields}
        )
    return lines


def _until(
    served: Served, parse: Callable[[str], list[dict[str, Any]]], ready: Callable[[list[dict[str, Any]]], bool]
) -> list[dict[str, Any]]:
    """The server's parsed access lines once ``ready`` says they are all there (a line is written after its reply)."""
    deadline = time.monotonic() + LOG_WAIT_S
    while True:
        lines = parse(served.log())
        if ready(lines) or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def _by_id(served: Served, ids: set[str], parse: Callable[[str], list[dict[str, Any]]] = _access_lines) -> dict[str, list[dict[str, Any]]]:
    lines = _until(served, parse, lambda found: ids <= {line.get("request_id") for line in found})
    grouped: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        if line.get("request_id") in ids:
            grouped.setdefault(line["request_id"], []).append(line)
    return grouped


# -- one line per request, the request id -------------------------------------------------------

ROUTES: list[tuple[str, str, dict[str, str], dict[str, Any] | None, int]] = [
    ("GET", "/health/live", {}, None, 200),
    ("GET", "/api/v1/models", {}, None, 200),
    ("POST", "/api/v1/predict", AUTH, {"texts": ["a fine film"]}, 200),
    ("POST", "/api/v1/predict", {}, {"texts": ["no token"]}, 401),
    ("POST", "/api/v1/predict", AUTH, {"texts": "not a list"}, 422),
    ("GET", "/nowhere", {}, None, 404),
    ("GET", "/v2/health/ready", {}, None, 200),
]


def test_every_request_leaves_one_access_line_and_gets_its_id_back(text_server: Served) -> None:
    # Measured before this: about 500 requests left 9 log lines, and X-Request-ID was ignored.
    sent: dict[str, tuple[str, str, int]] = {}
    with httpx.Client(base_url=text_server.base_url, timeout=30.0) as client:
        for i in range(140):
            method, path, headers, body, status = ROUTES[i % len(ROUTES)]
            request_id = f"count-{i}"
            reply = client.request(method, path, json=body, headers={**headers, "X-Request-ID": request_id})
            assert reply.status_code == status, (path, reply.text)
            assert reply.headers["x-request-id"] == request_id, (path, reply.headers)
            assert reply.headers.get_list("x-request-id") == [request_id], "one header, never two"
            sent[request_id] = (method, path, status)
    logged = _by_id(text_server, set(sent))
    assert set(logged) == set(sent)
    for request_id, (method, path, status) in sent.items():
        (line,) = logged[request_id]
        assert (line["method"], line["path"], line["status"]) == (method, path, status)
        assert float(line["latency_ms"]) > 0


@pytest.mark.parametrize(
    "inbound",
    [None, b"x" * 257, b"tab\there", b"caf\xc3\xa9", b"caf\xe9"],
    ids=["absent", "257-chars", "control-character", "utf-8", "latin-1"],
)
def test_a_missing_or_invalid_request_id_is_replaced_without_an_error(text_server: Served, inbound: bytes | None) -> None:
    headers = {} if inbound is None else {"X-Request-ID": inbound}
    reply = httpx.get(f"{text_server.base_url}/health/live", headers=headers)  # type: ignore[arg-type]
    assert reply.status_code == 200
    assert re.fullmatch(r"[0-9a-f]{32}", reply.headers["x-request-id"]), reply.headers["x-request-id"]


def test_the_id_rule() -> None:
    longest = b"~" + b" " * 254 + b"!"
    assert request_id_from(longest) == longest.decode()
    assert request_id_from(b"req-1/a b:c") == "req-1/a b:c"
    for invalid in (b"", b" lead", b"trail ", b"x" * 257, b"nul\x00", b"del\x7f"):
        assert request_id_from(invalid) != invalid.decode("latin-1")


def test_the_engine_answers_with_the_header_id_and_a_body_id_wins(text_server: Served) -> None:
    url = f"{text_server.base_url}/api/v1/predict"
    from_header = httpx.post(url, json={"texts": ["from the header"]}, headers={**AUTH, "X-Request-ID": "hdr-7"})
    assert from_header.status_code == 200
    assert from_header.json()["request_id"] == "hdr-7" and from_header.headers["x-request-id"] == "hdr-7"
    from_body = httpx.post(url, json={"id": "body-7", "texts": ["from the body"]}, headers={**AUTH, "X-Request-ID": "hdr-8"})
    assert from_body.json()["request_id"] == "body-7" and from_body.headers["x-request-id"] == "body-7"
    generated = httpx.post(url, json={"texts": ["no id at all"]}, headers=AUTH)
    assert generated.json()["request_id"] == generated.headers["x-request-id"]
    logged = _by_id(text_server, {"hdr-7", "body-7"})
    assert [len(logged["hdr-7"]), len(logged["body-7"])] == [1, 1]
    assert "hdr-8" not in {line.get("request_id") for line in _access_lines(text_server.log())}


def test_a_prediction_line_has_its_model_version_arm_and_cache_hits(text_server: Served) -> None:
    url = f"{text_server.base_url}/api/v1/predict"
    body = {"texts": ["cache line one", "cache line two"]}
    for request_id in ("cache-miss", "cache-hit"):
        assert httpx.post(url, json=body, headers={**AUTH, "X-Request-ID": request_id}).status_code == 200
    unknown = httpx.post(url, json={"model": "nope", "texts": ["x"]}, headers={**AUTH, "X-Request-ID": "unknown-model"})
    assert unknown.status_code == 404
    logged = _by_id(text_server, {"cache-miss", "cache-hit", "unknown-model"})
    miss, hit, failed = logged["cache-miss"][0], logged["cache-hit"][0], logged["unknown-model"][0]
    expected = {"model": "sentiment_analysis", "model_version": "v1", "arm": "v1", "inputs": "2"}
    assert {k: miss[k] for k in expected} == expected and miss["cache_hits"] == "0"
    assert {k: hit[k] for k in expected} == expected and hit["cache_hits"] == "2"
    assert failed["status"] == 404 and failed["model"] == "nope" and "cache_hits" not in failed


def test_a_v2_inference_line_has_the_model_fields(text_server: Served) -> None:
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["a v2 request"]}]}
    reply = httpx.post(f"{text_server.base_url}/v2/models/sentiment_analysis/infer", json=body, headers={**AUTH, "X-Request-ID": "v2-line"})
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-request-id"] == "v2-line"
    (line,) = _by_id(text_server, {"v2-line"})["v2-line"]
    assert (line["model"], line["model_version"], line["inputs"], line["cache_hits"]) == ("sentiment_analysis", "v1", "1", "0")


def test_tokens_and_texts_never_reach_the_log(text_server: Served) -> None:
    secret_text = "a private sentence 7731"
    base = text_server.base_url
    headers = {**AUTH, "X-Request-ID": "secrets", "Authorization": "Bearer bearer-sentinel-0044"}
    assert httpx.post(f"{base}/api/v1/predict", json={"texts": [secret_text]}, headers=headers).status_code == 200
    assert (
        httpx.post(f"{base}/api/v1/predict", json={"texts": [secret_text]}, headers={"X-Token": "wrong-sentinel-0045"}).status_code == 401
    )
    admin = httpx.delete(f"{base}/api/v1/cache", headers={"X-Admin-Token": "admin-sentinel-0042", "X-Request-ID": "admin-call"})
    assert admin.status_code == 200, admin.text
    metrics = httpx.get(f"{base}/metrics", headers={"Authorization": "Bearer metrics-sentinel-0042", "X-Request-ID": "metrics-call"})
    assert metrics.status_code == 200
    _by_id(text_server, {"secrets", "admin-call", "metrics-call"})
    log = text_server.log()
    assert "uvicorn.access" not in log, "one access log: the app's, with the request id"
    for secret in (
        SERVER_TOKEN,
        "bearer-sentinel-0044",
        "wrong-sentinel-0045",
        "admin-sentinel-0042",
        "metrics-sentinel-0042",
        secret_text,
    ):
        assert secret not in log, secret


# -- LOG_FORMAT=json, LOG_TEXTS=true ------------------------------------------------------------


def _json_lines(log: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.splitlines() if line.strip()]


def _json_access(log: str) -> list[dict[str, Any]]:
    return [line for line in _json_lines(log) if line["logger"] == "handlers.access"]


def test_json_format_makes_every_line_an_object_with_the_request_fields(json_server: Served) -> None:
    texts = ["logged on purpose", "LOG_TEXTS is on"]
    reply = httpx.post(f"{json_server.base_url}/api/v1/predict", json={"texts": texts}, headers={**AUTH, "X-Request-ID": "json-1"})
    assert reply.status_code == 200
    (line,) = _by_id(json_server, {"json-1"}, _json_access)["json-1"]
    assert set(line) >= {"timestamp", "level", "logger", "message", "method", "path", "status", "latency_ms", "request_id"}
    assert (line["level"], line["method"], line["path"], line["status"]) == ("INFO", "POST", "/api/v1/predict", 200)
    assert (line["model"], line["model_version"], line["arm"], line["cache_hits"], line["inputs"]) == (
        "sentiment_analysis",
        "v1",
        "v1",
        0,
        2,
    )
    assert line["texts"] == texts, "LOG_TEXTS=true logs the texts"
    assert isinstance(line["latency_ms"], float) and line["latency_ms"] > 0
    every = _json_lines(json_server.log())  # each line parses, uvicorn's too
    assert all({"timestamp", "level", "logger", "message"} <= set(entry) for entry in every)
    assert any(entry["logger"].startswith("uvicorn") for entry in every), [entry["logger"] for entry in every]


# -- ACCESS_LOG=false (in process) --------------------------------------------------------------


def test_access_log_off_logs_nothing_and_still_returns_the_id(engine: InferenceEngine, caplog: pytest.LogCaptureFixture) -> None:
    async def get(access_log: bool) -> httpx.Response:
        app = create_app(make_settings(access_log=access_log), engine, manage_engine=False)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            return await client.get("/health/live", headers={"X-Request-ID": "quiet"})

    with caplog.at_level(logging.INFO, logger="handlers.access"):
        reply = asyncio.run(get(access_log=False))
        assert reply.headers["x-request-id"] == "quiet"
        assert [r for r in caplog.records if r.name == "handlers.access"] == []
        asyncio.run(get(access_log=True))
    (record,) = [r for r in caplog.records if r.name == "handlers.access"]
    assert re.fullmatch(r"GET /health/live 200 [\d.]+ ms", record.getMessage())
    assert getattr(record, "fields", {}).get("request_id") == "quiet"
