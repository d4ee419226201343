"""What the API documentation shows: the /docs (Swagger UI) and /redoc (ReDoc) pages, and the
example of each error reply in the OpenAPI document.

The pages load their scripts, styles and icon from the installed ``fastapi-offline`` package,
never from a CDN, and ReDoc's Google Fonts are off: a cluster without internet, or a laptop
offline, gets working pages. The assets' URLs carry the package's version, so they are cached
for a year (``immutable``) and an upgrade still reaches every browser.

Each error example is built from the one status table (``handlers.errors``): a route names the
codes it can send, and a code that no table knows fails when the app is built.
"""

from __future__ import annotations

import os
from importlib.metadata import version
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.models import Example
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse, Response
from starlette.types import Scope

from engine.errors import EngineError
from handlers.errors import HTTP_CODES, error_body, status_for

ASSET_PACKAGE = "fastapi-offline"
ASSET_NAMES = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png")
ASSET_CACHE_CONTROL = "public, max-age=31536000, immutable"
DOCS_PATH, REDOC_PATH = "/docs", "/redoc"


def asset_dir() -> Path:
    """The ``static/`` folder of the installed ``fastapi-offline`` package."""
    spec = find_spec(ASSET_PACKAGE.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"/docs needs the {ASSET_PACKAGE} package: pip install {ASSET_PACKAGE}")
    static = Path(next(iter(spec.submodule_search_locations))) / "static"
    missing = [name for name in ASSET_NAMES if not (static / name).is_file()]
    if missing:
        raise RuntimeError(f"{static} lacks {', '.join(missing)}: reinstall {ASSET_PACKAGE}")
    return static


class _ImmutableAssets(StaticFiles):
    """Static files under a versioned URL: cached for a year, revalidated by ETag otherwise."""

    def file_response(
        self, full_path: str | os.PathLike[str], stat_result: os.stat_result, scope: Scope, status_code: int = 200
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["Cache-Control"] = ASSET_CACHE_CONTROL
        return response


def install_docs(app: FastAPI) -> None:
    """Serve /docs and /redoc (build ``app`` with ``docs_url=None, redoc_url=None``). They need no
    token, as /openapi.json does not; behind a path prefix (API Gateway stage) the URLs follow
    ``root_path``."""
    assets = f"{DOCS_PATH}/assets/{version(ASSET_PACKAGE)}"
    app.mount(assets, _ImmutableAssets(directory=asset_dir()), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get(DOCS_PATH, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{assets}/swagger-ui.css",
            swagger_favicon_url=f"{root}{assets}/favicon.png",
            swagger_ui_parameters=app.swagger_ui_parameters,
        )

    @app.get(REDOC_PATH, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{assets}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{assets}/favicon.png",
            with_google_fonts=False,
        )


# Error examples. The status of a code comes from the tables; only the words are written here.


def _engine_errors() -> dict[str, type[EngineError]]:
    found: dict[str, type[EngineError]] = {}
    pending = list(EngineError.__subclasses__())
    while pending:
        cls = pending.pop()
        found[cls.code] = cls
        pending += cls.__subclasses__()
    return found


# Codes the HTTP edge sends itself, beyond HTTP_CODES: an invalid request (handlers.errors,
# handlers.body), and the server's HTTP protocol's own replies (handlers.http_protocol).
EDGE_CODES = {"invalid_request": 422, "malformed_request": 400, "too_many_headers": 431, "too_many_connections": 503}
# Sent by the HTTP server for any request, before a route is chosen.
PROTOCOL_CODES = ("malformed_request", "request_timeout", "request_headers_too_large", "too_many_headers", "too_many_connections")
# Sent for any POST by the body middleware: a body declared too large, another encoding, bad gzip.
BODY_CODES = ("payload_too_large", "unsupported_media_type", "invalid_request")

_REGISTRY_MODELS = "['iris', 'sentence_embedding', 'sentiment_analysis']"
_RELOAD_ERROR = (
    "new versions failed to load, kept the previous registry: sentiment_analysis:v3: ModelSourceError: "
    "/app/models/sentiment_v3/model.onnx: model file /app/models/sentiment_v3/model.onnx not found"
)
# code: (summary, message, details), as the server words them.
_WORDS: dict[str, tuple[str, str, Any]] = {
    "unauthorized": ("Token missing or wrong", "missing or invalid X-Token header", None),
    "forbidden": ("Admin endpoints disabled", "admin endpoints are disabled: set ADMIN_TOKEN to enable them", None),
    "model_not_found": ("Unknown model", f"unknown model 'sentiment'; available: {_REGISTRY_MODELS}", None),
    "version_not_found": (
        "Unknown version",
        "model 'sentiment_analysis' version 'v9' does not exist; servable versions: ['v1', 'v2', 'v3', 'v4']",
        None,
    ),
    "payload_too_large": (
        "Too many inputs, or a body too large",
        "300 inputs in one request; the limit is 256 (MAX_TEXTS_PER_REQUEST)",
        None,
    ),
    "invalid_input": (
        "Inputs that do not fit the model",
        "this model takes rows of 4 finite numbers; 1 of 1 inputs are not",
        [{"index": 0, "problem": "expected 4 features, got 2"}],
    ),
    "invalid_request": (
        "Not JSON, or not a valid request",
        "the request is not a valid request",
        [
            {
                "loc": ["body"],
                "msg": "Value error, give exactly one of 'texts' (text_classification, text_embedding models) "
                "or 'instances' (tabular models)",
                "type": "value_error",
            }
        ],
    ),
    "inference_failed": (
        "The runtime failed",
        "inference failed for model 'sentiment_analysis' version 'v1': [ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION",
        None,
    ),
    "model_not_ready": (
        "Version not loaded",
        "model 'sentiment_analysis' version 'v2' failed to load: models/sentiment_v2/model.onnx: No such file",
        None,
    ),
    "overloaded": (
        "Overloaded (retry after Retry-After)",
        "4096 inputs already queued for this model version (MAX_QUEUED_INPUTS); retry shortly",
        None,
    ),
    "deadline_exceeded": (
        "Deadline passed (retry after Retry-After)",
        "no answer from model 'sentiment_analysis' version 'v1' within 30000 ms (REQUEST_TIMEOUT_MS)",
        None,
    ),
    "backend_unavailable": ("Token store unreadable", "the API token store (/mlinfer/api-token) cannot be read", None),
    "reload_failed": (
        "Reload refused, the previous registry serves",
        _RELOAD_ERROR,
        {"ok": False, "registry": "/app/model_registry.yaml", "registry_digest": None, "error": _RELOAD_ERROR, "added": [], "changed": []},
    ),
    "not_found": ("Metrics disabled", "metrics are disabled (ENABLE_METRICS=false)", None),
    "method_not_allowed": ("Method not allowed", "Method Not Allowed", None),
    "length_required": ("Length required", "Length Required", None),
    "unsupported_media_type": (
        "Unsupported Content-Encoding",
        "Content-Encoding 'br' is not supported: send gzip or no encoding",
        None,
    ),
    "request_timeout": ("Request too slow", "the request line and headers did not arrive within 10 s", None),
    "request_headers_too_large": (
        "Headers too large",
        "the request line and headers are larger than 16384 bytes (MAX_HEADER_BYTES)",
        None,
    ),
    "too_many_headers": ("Too many headers", "more than 100 request headers (MAX_HEADERS)", None),
    "malformed_request": ("Not HTTP/1.1", "the request is not valid HTTP/1.1: Invalid method encountered", None),
    "too_many_connections": (
        "Too many connections (retry after Retry-After)",
        "the server has its 2048 connections open (MAX_CONNECTIONS); retry later",
        None,
    ),
}


def status_of(code: str) -> int:
    """The status an error code is sent with, from the tables; ``KeyError`` for a code none has."""
    engine = _engine_errors().get(code)
    if engine is not None:
        return status_for(engine(code))
    by_code = {name: status for status, name in HTTP_CODES.items()} | EDGE_CODES
    return by_code[code]


def error_examples(codes: tuple[str, ...]) -> dict[int, dict[str, Example]]:
    """The OpenAPI examples of ``codes``, by status, each named by its code."""
    examples: dict[int, dict[str, Example]] = {}
    for code in codes:
        summary, message, details = _WORDS[code]
        examples.setdefault(status_of(code), {})[code] = Example(summary=summary, value=error_body(code, message, details))
    return examples


def named_examples(examples: dict[str, dict[str, Any]]) -> dict[str, Example]:
    """Plain ``{name: {"summary", "value"}}`` examples (from ``engine.schemas``) as OpenAPI's."""
    return {name: Example(summary=str(example["summary"]), value=example["value"]) for name, example in examples.items()}
