"""handlers/docs.py over a live ``mlinfer serve``: /docs and /redoc name no outside host, their
assets come from the installed package with long cache headers, and the OpenAPI document carries
named request examples that the server accepts and error examples with the codes it sends."""

from __future__ import annotations

import gzip
import json
import re
import socket
from html.parser import HTMLParser
from importlib.util import find_spec
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from engine.errors import EngineError
from handlers.errors import HTTP_CODES, status_for
from tests.handlers.conftest import LiveServer

PREDICT = "/api/v1/predict"
ASSET_NAMES = {"swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png"}
# Codes the HTTP edge sends itself (not engine errors, not in HTTP_CODES): each is checked live
# below, except too_many_connections (tests/handlers/test_http_protocol.py fills MAX_CONNECTIONS).
EDGE_CODES = {"invalid_request": 422, "malformed_request": 400, "too_many_headers": 431, "too_many_connections": 503}


class _Links(HTMLParser):
    """Every URL an HTML page makes the browser load: src and href attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in {"src", "href"} and value]


def _links(html: str) -> list[str]:
    parser = _Links()
    parser.feed(html)
    return parser.urls


def _engine_codes() -> dict[str, int]:
    found: dict[str, int] = {}
    pending = list(EngineError.__subclasses__())
    while pending:
        cls = pending.pop()
        found[cls.code] = status_for(cls("example"))
        pending += cls.__subclasses__()
    return found


def real_codes() -> dict[str, set[int]]:
    """Every error code the HTTP edge can send, with its statuses: the engine errors through the
    one status table, the edge's own codes by status, and the codes of its HTTP protocol."""
    codes: dict[str, set[int]] = {}
    for code, status in (*_engine_codes().items(), *((c, s) for s, c in HTTP_CODES.items()), *EDGE_CODES.items()):
        codes.setdefault(code, set()).add(status)
    return codes


@pytest.fixture(scope="module")
def spec(client: httpx.Client) -> dict[str, Any]:
    reply = client.get("/openapi.json")
    assert reply.status_code == 200
    document: dict[str, Any] = reply.json()
    return document


def _operations(spec: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(path, method): op for path, item in spec["paths"].items() for method, op in item.items()}


@pytest.fixture(scope="module")
def client(live_server: LiveServer) -> Any:
    # Module scope: the spec fixture reads it once.
    with httpx.Client(base_url=live_server.base_url, timeout=30.0) as http:
        yield http


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_nothing_from_outside_and_need_no_token(client: httpx.Client, page: str) -> None:
    reply = client.get(page)  # no X-Token: the pages are public, as the OpenAPI document is
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/html")
    html = reply.text
    outside = re.findall(r"(?:https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}[^\s\"'<>)]*", html)
    assert outside == [], f"{page} names outside hosts (blank without internet): {outside}"
    assert "fonts.googleapis.com" not in html and "cdn.jsdelivr.net" not in html
    loaded = {Path(urlsplit(url).path).name for url in _links(html)} | set(re.findall(r"(?:src|href)=\"[^\"]*/([^\"/]+)\"", html))
    assert loaded & ASSET_NAMES, f"{page} loads none of the packaged assets: {_links(html)}"


def test_assets_come_from_the_installed_package_with_long_cache_headers(client: httpx.Client) -> None:
    spec_ = find_spec("fastapi_offline")
    assert spec_ is not None and spec_.submodule_search_locations, "fastapi-offline is missing: pip install -e '.[dev]'"
    static = Path(next(iter(spec_.submodule_search_locations))) / "static"
    urls = {urljoin(f"{client.base_url}{page}", url) for page in ("/docs", "/redoc") for url in _links(client.get(page).text)}
    served = {Path(urlsplit(url).path).name: url for url in urls}
    assert set(served) == ASSET_NAMES, sorted(urls)
    types = {"js": "javascript", "css": "text/css", "png": "image/png"}
    for name, url in served.items():
        reply = client.get(url)
        assert reply.status_code == 200, (url, reply.status_code)
        assert reply.content == (static / name).read_bytes(), f"{url} is not the package's {name}"
        assert types[name.rsplit(".", 1)[1]] in reply.headers["content-type"], (url, reply.headers["content-type"])
        cache = reply.headers.get("cache-control", "")
        max_age = re.search(r"max-age=(\d+)", cache)
        assert max_age and int(max_age.group(1)) >= 30 * 86400 and "immutable" in cache, (url, cache)
        again = client.get(url, headers={"If-None-Match": reply.headers["etag"]})
        assert again.status_code == 304, (url, again.status_code)
    # The URLs carry the package's version, so an upgrade is never hidden by a cached copy.
    from importlib.metadata import version

    assert all(f"/{version('fastapi-offline')}/" in url for url in served.values()), sorted(served.values())


def test_predict_has_named_request_examples_for_each_kind_that_the_server_accepts(
    client: httpx.Client, spec: dict[str, Any], live_server: LiveServer
) -> None:
    operation = spec["paths"][PREDICT]["post"]
    examples = operation["requestBody"]["content"]["application/json"]["examples"]
    assert {"text_classification", "tabular", "embedding", "pinned_version"} <= set(examples), sorted(examples)
    kinds = {}
    for name, example in examples.items():
        assert example["summary"], name
        reply = client.post(PREDICT, json=example["value"], headers={"X-Token": live_server.token})
        assert reply.status_code == 200, (name, reply.text)
        kinds[name] = reply.json()
    assert kinds["tabular"]["model"] == "iris" and "instance" in kinds["tabular"]["results"][0]
    assert len(kinds["embedding"]["results"][0]["embedding"]) == 384
    assert kinds["pinned_version"]["rollout"]["strategy"] == "request"
    assert kinds["text_classification"]["results"][0]["prediction"] in {"positive", "neutral", "negative"}
    # The response has a named example for each, shaped as the server answers.
    answers = operation["responses"]["200"]["content"]["application/json"]["examples"]
    assert set(examples) <= set(answers), sorted(answers)
    for name, answer in answers.items():
        real = kinds.get(name)
        if real is not None:
            assert set(answer["value"]) == set(real), name
            assert set(answer["value"]["results"][0]) == set(real["results"][0]), name


def _native(spec: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    # The Open Inference Protocol's routes (/v2) answer its own {"error": "..."}, with no code.
    return {key: op for key, op in _operations(spec).items() if not key[0].startswith("/v2")}


def test_every_error_response_has_examples_with_the_real_codes(spec: dict[str, Any]) -> None:
    codes = real_codes()
    for (path, method), operation in _native(spec).items():
        for status, response in operation["responses"].items():
            if status == "200":
                continue
            examples = response["content"]["application/json"].get("examples")
            assert examples, f"{method} {path} {status} has no example"
            for name, example in examples.items():
                if name == "not_ready":  # a probe's 503 is its own body
                    assert (path, status) in {("/health", "503"), ("/health/ready", "503")} and example["value"]["ready"] is False
                    continue
                error = example["value"]["error"]
                assert error["code"] != "string" and int(status) in codes.get(error["code"], set()), (path, method, status, error)
                assert name == error["code"] and example["summary"] and error["message"], (path, method, status, name)
    shown = {(path, method, status): set(r["content"]["application/json"]["examples"]) for (path, method), op in _native(spec).items()
             for status, r in op["responses"].items() if status != "200"}  # fmt: skip
    assert shown[PREDICT, "post", "401"] == {"unauthorized"}
    assert shown[PREDICT, "post", "404"] == {"model_not_found", "version_not_found"}
    assert shown[PREDICT, "post", "413"] == {"payload_too_large"}
    assert shown[PREDICT, "post", "415"] == {"unsupported_media_type"}
    assert shown[PREDICT, "post", "422"] == {"invalid_input", "invalid_request"}
    assert shown[PREDICT, "post", "500"] == {"inference_failed"}
    assert shown[PREDICT, "post", "503"] == {
        "model_not_ready",
        "overloaded",
        "deadline_exceeded",
        "backend_unavailable",
        "too_many_connections",
    }
    assert shown["/api/v1/admin/reload", "post", "409"] == {"reload_failed"}
    assert shown["/api/v1/admin/reload", "post", "403"] == shown["/api/v1/cache", "delete", "403"] == {"forbidden"}
    assert shown["/api/v1/cache", "delete", "422"] == {"invalid_input"}
    assert shown["/metrics", "get", "404"] == {"not_found"}
    assert shown["/health", "get", "400"] == {"malformed_request"}
    assert shown["/health", "get", "431"] == {"request_headers_too_large", "too_many_headers"}


def _raw(base_url: str, request: bytes) -> dict[str, Any]:
    host, port = urlsplit(base_url).hostname or "", urlsplit(base_url).port or 0
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    body: dict[str, Any] = json.loads(data.split(b"\r\n\r\n", 1)[1])
    return body


def test_the_documented_codes_are_the_ones_the_server_sends(client: httpx.Client, spec: dict[str, Any], live_server: LiveServer) -> None:
    responses = spec["paths"][PREDICT]["post"]["responses"]
    token = {"X-Token": live_server.token}
    replies = [
        client.post(PREDICT, json={"texts": ["x"]}),
        client.post(PREDICT, json={"model": "nope", "texts": ["x"]}, headers=token),
        client.post(PREDICT, json={"texts": ["x"], "model_version": "v9"}, headers=token),
        client.post(PREDICT, json={"model": "iris", "instances": [[1, 2]]}, headers=token),
        client.post(PREDICT, content=b"{not json", headers=token),
        client.post(PREDICT, json={"texts": ["x"] * 100_000}, headers=token),
        client.post(PREDICT, content=gzip.compress(b"{}"), headers={**token, "Content-Encoding": "br"}),
    ]
    for reply in replies:
        code = reply.json()["error"]["code"]
        documented = responses[str(reply.status_code)]["content"]["application/json"]["examples"]
        assert code in documented, (reply.status_code, code, sorted(documented))
    # The codes of the edge's HTTP protocol, on the wire.
    assert _raw(live_server.base_url, b"NOT HTTP AT ALL\r\n\r\n")["error"]["code"] == "malformed_request"
    headers = b"".join(b"X-H%d: 1\r\n" % i for i in range(150))
    many = _raw(live_server.base_url, b"GET /health HTTP/1.1\r\nHost: x\r\n" + headers + b"Connection: close\r\n\r\n")
    assert many["error"]["code"] == "too_many_headers"


def test_admin_and_api_tokens_are_declared_on_their_operations(spec: dict[str, Any]) -> None:
    schemes = spec["components"]["securitySchemes"]
    by_header = {scheme["name"]: name for name, scheme in schemes.items() if scheme["type"] == "apiKey" and scheme["in"] == "header"}
    assert set(by_header) == {"X-Token", "X-Admin-Token"}, schemes
    operations = _operations(spec)
    assert operations[PREDICT, "post"]["security"] == [{by_header["X-Token"]: []}]
    for key in (("/api/v1/admin/reload", "post"), ("/api/v1/cache", "delete")):
        assert operations[key]["security"] == [{by_header["X-Admin-Token"]: []}], key
    assert all("security" not in operations[path, "get"] for path in ("/health", "/health/live", "/health/ready", "/api/v1/models"))


def test_pages_follow_the_path_prefix(engine: Any) -> None:
    # Behind API Gateway's stage (Mangum's api_gateway_base_path), every URL keeps the prefix.
    import asyncio

    from handlers.app import create_app
    from tests.conftest import make_settings

    async def pages() -> list[httpx.Response]:
        app = create_app(make_settings(), engine, manage_engine=False)
        transport = httpx.ASGITransport(app=app, root_path="/prod")
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            replies = [await http.get("/docs"), await http.get("/redoc")]
            asset = next(url for url in _links(replies[0].text) if url.endswith(".js"))
            replies.append(await http.get(asset))  # the ASGI path carries root_path
            return replies

    docs, redoc, asset = asyncio.run(pages())
    assert "'/prod/openapi.json'" in docs.text and 'spec-url="/prod/openapi.json"' in redoc.text
    assert all(url.startswith("/prod/docs/assets/") for url in _links(docs.text) + _links(redoc.text)), _links(docs.text)
    assert asset.status_code == 200 and "immutable" in asset.headers["cache-control"]


def test_every_code_of_the_tables_has_an_example_at_its_status() -> None:
    from handlers.docs import error_examples

    for code, statuses in real_codes().items():
        (status,) = statuses
        assert set(error_examples((code,))) == {status}, code
