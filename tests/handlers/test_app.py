"""The HTTP API end to end: real server process, real HTTP over loopback, real models."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.facade import InferenceEngine
from tests.handlers.conftest import LiveServer

SEED_BODY = '{ "id": "1", "texts": ["I love this product"], "model_version": "v1" }'


def _auth(server: LiveServer) -> dict[str, str]:
    return {"X-Token": server.token}


def _assert_error(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    error: dict[str, object] = body["error"]
    return error


def test_seed_quick_start_request(client: httpx.Client, live_server: LiveServer) -> None:
    response = client.post("/api/v1/predict", content=SEED_BODY, headers={**_auth(live_server), "Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["request_id"] == "1"
    assert body["model_version"] == "v1"
    assert body["model"] == "sentiment_analysis"
    assert response.headers["x-request-id"] == "1"
    (result,) = body["results"]
    assert result["text"] == "I love this product"
    assert result["prediction"] == "positive"
    assert set(result["scores"]) == {"positive", "neutral", "negative"}
    assert result["scores"]["positive"] > 0.8
    assert sum(result["scores"].values()) == pytest.approx(1.0, abs=1e-5)
    assert result["latency_ms"] > 0 and body["latency_ms"] >= result["latency_ms"]


@pytest.mark.parametrize(
    "content_type",
    [None, "application/x-www-form-urlencoded", "text/plain", "application/json; charset=utf-8"],
    ids=["no-content-type", "curl-d-form", "text-plain", "json-charset"],
)
def test_body_is_json_whatever_the_content_type(client: httpx.Client, live_server: LiveServer, content_type: str | None) -> None:
    headers = _auth(live_server)
    if content_type is not None:
        headers["Content-Type"] = content_type
    response = client.post("/api/v1/predict", content=b'{"texts": ["This is terrible"]}', headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["prediction"] == "negative"


def test_several_texts_keep_their_order(client: httpx.Client, live_server: LiveServer) -> None:
    texts = [
        "This is terrible",
        "I love this product",
        "Boring, predictable and far too long. I hated it.",
        "Brilliant, funny and moving.",
    ]
    response = client.post("/api/v1/predict", json={"texts": texts}, headers=_auth(live_server))
    assert response.status_code == 200, response.text
    body = response.json()
    assert [r["text"] for r in body["results"]] == texts
    # Clear-cut texts: both the stable v1 and the canary v3 (whichever the request id picks) agree on them.
    assert [r["prediction"] for r in body["results"]] == ["negative", "positive", "negative", "positive"]
    assert len(body["request_id"]) == 32  # generated when the request has no id
    # No version asked for: the registry's 10% canary from v1 to v3 chose one.
    assert body["rollout"] == {"strategy": "canary", "arm": body["model_version"]}
    assert body["model_version"] in {"v1", "v3"}


def test_pinned_version_answers(client: httpx.Client, live_server: LiveServer) -> None:
    response = client.post("/api/v1/predict", json={"texts": ["I love this product"], "model_version": "v2"}, headers=_auth(live_server))
    assert response.status_code == 200, response.text
    assert response.json()["model_version"] == "v2"
    assert response.json()["results"][0]["prediction"] == "positive"


def test_concurrent_clients_get_their_own_results(live_server: LiveServer) -> None:
    texts = [f"{word} movie, number {i}" for i, word in enumerate(["great", "awful", "wonderful", "boring"] * 8)]

    def one(text: str) -> dict[str, float]:
        with httpx.Client(base_url=live_server.base_url, timeout=30.0) as http:
            response = http.post("/api/v1/predict", json={"texts": [text], "model_version": "v1"}, headers=_auth(live_server))
            assert response.status_code == 200, response.text
            result = response.json()["results"][0]
            assert result["text"] == text
            scores: dict[str, float] = result["scores"]
            return scores

    with ThreadPoolExecutor(max_workers=16) as pool:
        concurrent_scores = list(pool.map(one, texts))
    with httpx.Client(base_url=live_server.base_url, timeout=30.0) as http:
        solo = http.post("/api/v1/predict", json={"texts": texts, "model_version": "v1"}, headers=_auth(live_server)).json()["results"]
    for got, expected in zip(concurrent_scores, solo, strict=True):
        for label, value in expected["scores"].items():
            assert got[label] == pytest.approx(value, abs=1e-4)


@pytest.mark.parametrize("token", [None, "wrong-token", "test-token-but-longer", ""])
def test_missing_or_bad_token_is_401(client: httpx.Client, token: str | None) -> None:
    headers = {} if token is None else {"X-Token": token}
    response = client.post("/api/v1/predict", json={"texts": ["hello"]}, headers=headers)
    _assert_error(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "X-Token"


def test_auth_is_checked_before_the_body(client: httpx.Client) -> None:
    _assert_error(client.post("/api/v1/predict", content=b"not json"), 401, "unauthorized")
    _assert_error(client.post("/api/v1/predict", content=b"\xff" * 100, headers={"Content-Encoding": "br"}), 401, "unauthorized")


@pytest.mark.parametrize(
    "body",
    [
        b'{"texts": ["a"',
        b"texts=hello",
        b"{}",
        b'{"texts": []}',
        b'{"texts": "just a string"}',
        b'{"texts": [1, 2]}',
        b'{"texts": ["a"], "model_versoin": "v1"}',
        b'{"texts": ["a"], "id": 7}',
        b"[]",
        b"",
    ],
    ids=["truncated", "form-fields", "empty-object", "no-texts", "string", "numbers", "typo-field", "int-id", "array", "empty"],
)
def test_invalid_body_is_422(client: httpx.Client, live_server: LiveServer, body: bytes) -> None:
    error = _assert_error(client.post("/api/v1/predict", content=body, headers=_auth(live_server)), 422, "invalid_request")
    assert error["details"]


def test_unknown_model_and_version_are_404(client: httpx.Client, live_server: LiveServer) -> None:
    error = _assert_error(
        client.post("/api/v1/predict", json={"texts": ["a"], "model": "nope"}, headers=_auth(live_server)), 404, "model_not_found"
    )
    assert "sentiment_analysis" in str(error["message"])
    error = _assert_error(
        client.post("/api/v1/predict", json={"texts": ["a"], "model_version": "v9"}, headers=_auth(live_server)), 404, "version_not_found"
    )
    assert "v1" in str(error["message"])


def test_too_many_texts_is_413(client: httpx.Client, live_server: LiveServer) -> None:
    response = client.post("/api/v1/predict", json={"texts": ["a"] * 257}, headers=_auth(live_server))
    assert "MAX_TEXTS_PER_REQUEST" in str(_assert_error(response, 413, "payload_too_large")["message"])
    ok = client.post("/api/v1/predict", json={"texts": [f"text {i}" for i in range(256)]}, headers=_auth(live_server))
    assert ok.status_code == 200 and len(ok.json()["results"]) == 256


def test_text_too_long_is_413(client: httpx.Client, live_server: LiveServer) -> None:
    response = client.post("/api/v1/predict", json={"texts": ["short", "x" * 10_001]}, headers=_auth(live_server))
    error = _assert_error(response, 413, "payload_too_large")
    assert error["details"] == {"indexes": [1]}


def test_body_too_large_is_413(client: httpx.Client, live_server: LiveServer) -> None:
    body = json.dumps({"texts": ["y" * 9_000] * 500}).encode()  # about 4.5 MB
    _assert_error(client.post("/api/v1/predict", content=body, headers=_auth(live_server)), 413, "payload_too_large")


def test_chunked_body_too_large_is_413(live_server: LiveServer) -> None:
    """No Content-Length: the limit is enforced while the body streams in."""

    def chunks() -> Iterator[bytes]:
        yield b'{"texts": ["'
        for _ in range(80):
            yield b"z" * 65_536
        yield b'"]}'

    with httpx.Client(base_url=live_server.base_url, timeout=30.0) as http:
        response = http.post("/api/v1/predict", content=chunks(), headers=_auth(live_server))
    _assert_error(response, 413, "payload_too_large")


def test_malformed_http_does_not_hang(live_server: LiveServer) -> None:
    host, port = live_server.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"POST /api/v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n")
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), reply
    assert b"content-type: application/json" in head.lower(), reply
    assert json.loads(body)["error"]["code"] == "malformed_request", reply


def test_health_reports_ready_models_and_providers(client: httpx.Client) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "active"
    assert body["ready"] is True
    # MODEL_CACHE_SIZE=5: the defaults, the rollout's target (v3), then v2; v4 loads when named.
    assert body["active_models"] == [
        "sentiment_analysis:v1",
        "sentiment_analysis:v2",
        "sentiment_analysis:v3",
        "iris:v1",
        "sentence_embedding:v1",
    ]
    assert "CPUExecutionProvider" in body["providers"]
    states = {(m["name"], m["version"], m["state"]) for m in body["models"]}
    assert states == {
        ("sentiment_analysis", "v1", "ready"),
        ("sentiment_analysis", "v2", "ready"),
        ("sentiment_analysis", "v3", "ready"),
        ("sentiment_analysis", "v4", "unloaded"),
        ("iris", "v1", "ready"),
        ("sentence_embedding", "v1", "ready"),
    }


@pytest.mark.parametrize("path", ["/models", "/api/v1/models"])
def test_models_lists_versions(client: httpx.Client, path: str) -> None:
    body = client.get(path).json()
    assert body["total"] == 6
    by_version = {(m["name"], m["version"]): m for m in body["models"]}
    v1, v2, iris = by_version["sentiment_analysis", "v1"], by_version["sentiment_analysis", "v2"], by_version["iris", "v1"]
    assert v1["default"] is True and v1["status"] == "active" and v1["kind"] == "text_classification"
    assert v2["status"] == "candidate" and "model.onnx" in v2["model_id"]
    assert v1["rollout"] == {"type": "canary", "canary_percentage": 10.0, "target_version": "v3"}
    assert iris["kind"] == "tabular" and iris["labels"] == ["setosa", "versicolor", "virginica"]


def test_metrics_count_requests_by_model_and_version(client: httpx.Client, live_server: LiveServer) -> None:
    client.post("/api/v1/predict", json={"texts": ["fine"], "model_version": "v2"}, headers=_auth(live_server))
    client.post("/api/v1/predict", json={"texts": ["fine"], "model_version": "attacker-chosen-label"}, headers=_auth(live_server))
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'inference_requests_total{model="sentiment_analysis",model_version="v2",outcome="ok"}' in text
    assert 'inference_latency_ms_bucket{le="+Inf",model="sentiment_analysis",model_version="v2"}' in text
    assert "active_models 5.0" in text
    assert "attacker-chosen-label" not in text  # label values stay bounded


def test_docs_and_openapi(client: httpx.Client) -> None:
    assert client.get("/docs").status_code == 200
    assert client.get("/redoc").status_code == 200
    spec = client.get("/openapi.json").json()
    predict = spec["paths"]["/api/v1/predict"]["post"]
    assert {"401", "404", "413", "422", "503"} <= set(predict["responses"])
    schema = spec["components"]["schemas"]["PredictRequest"]
    assert schema["examples"][0]["texts"]


def test_unknown_route_and_method_use_the_error_shape(client: httpx.Client) -> None:
    _assert_error(client.get("/nope"), 404, "not_found")
    _assert_error(client.get("/api/v1/predict"), 405, "method_not_allowed")


# In-process variants of the settings, over the session's loaded engine (no lifespan needed).


def _in_process(engine_fixture: object, **overrides: object) -> httpx.AsyncClient:
    from engine.facade import InferenceEngine
    from handlers.app import create_app
    from tests.conftest import make_settings

    assert isinstance(engine_fixture, InferenceEngine)
    app = create_app(make_settings(**overrides), engine_fixture, manage_engine=False)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def _get(client: httpx.AsyncClient, path: str) -> httpx.Response:
    async with client:
        return await client.get(path)


def test_metrics_can_be_disabled(engine: object) -> None:
    import asyncio

    response = asyncio.run(_get(_in_process(engine, enable_metrics=False), "/metrics"))
    _assert_error(response, 404, "not_found")


def test_api_prefix_is_configurable(engine: object) -> None:
    import asyncio

    assert asyncio.run(_get(_in_process(engine, api_v1_str="/v2/"), "/v2/models")).status_code == 200
    assert asyncio.run(_get(_in_process(engine, api_v1_str="/v2/"), "/api/v1/models")).status_code == 404


def test_routing_key_header_keys_sticky_rollout(client: httpx.Client, live_server: LiveServer) -> None:
    from engine.rollout import Canary, routing_bucket

    canary = Canary(stable="v1", canary="v3", percentage=10)
    key = next(k for k in (f"user-{i}" for i in range(1000)) if canary.assign(routing_bucket("sentiment_analysis", k)).version == "v3")
    headers = {**_auth(live_server), "X-Routing-Key": key}
    versions = {
        client.post("/api/v1/predict", json={"id": f"r{i}", "texts": ["ok"]}, headers=headers).json()["model_version"] for i in range(10)
    }
    assert versions == {"v3"}


def test_admin_reload_over_http(tmp_path: Path, models_dir: Path) -> None:
    import asyncio

    from engine.factory import build_engine
    from handlers.app import create_app
    from tests.conftest import make_settings
    from tests.registries import sentiment, write_registry

    registry = write_registry(tmp_path, {"sentiment_analysis": sentiment()})
    disabled = build_engine(make_settings(model_registry_path=registry))
    enabled = build_engine(make_settings(model_registry_path=registry, admin_token="admin-secret"))
    enabled.load()

    async def post(engine: InferenceEngine, headers: dict[str, str]) -> httpx.Response:
        app = create_app(engine.settings, engine, manage_engine=False)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
            return await http.post("/api/v1/admin/reload", headers=headers)

    try:
        _assert_error(asyncio.run(post(disabled, {"X-Admin-Token": "anything"})), 403, "forbidden")
        _assert_error(asyncio.run(post(enabled, {"X-Admin-Token": "wrong"})), 401, "unauthorized")
        _assert_error(asyncio.run(post(enabled, {"X-Token": "admin-secret"})), 401, "unauthorized")
        ok = asyncio.run(post(enabled, {"X-Admin-Token": "admin-secret"}))
        assert ok.status_code == 200 and ok.json()["ok"] is True
        assert ok.json()["unchanged"] == ["sentiment_analysis:v1", "sentiment_analysis:v2"]
        registry.write_text("models: {}")
        error = _assert_error(asyncio.run(post(enabled, {"X-Admin-Token": "admin-secret"})), 409, "reload_failed")
        assert str(registry) in str(error["message"])
    finally:
        enabled.close()


def test_sighup_reloads_the_registry_of_a_running_server(tmp_path: Path, models_dir: Path) -> None:
    import signal
    import time

    from tests.network import start_server, stop_server
    from tests.registries import V1_MODEL, sentiment, write_registry

    registry = write_registry(tmp_path, {"sentiment_analysis": sentiment({"v1": {"path": V1_MODEL}})})
    process, base_url = start_server(tmp_path / "server.log", MODEL_REGISTRY_PATH=str(registry))
    try:
        assert [m["version"] for m in httpx.get(f"{base_url}/models").json()["models"]] == ["v1"]
        write_registry(tmp_path, {"sentiment_analysis": sentiment()})
        process.send_signal(signal.SIGHUP)
        # One worker per CPU: each reloads on its own, so wait until every worker has (its generation 2).
        deadline = time.monotonic() + 30
        versions: list[str] = []
        health: dict[str, Any] = {}
        while time.monotonic() < deadline:
            versions = [m["version"] for m in httpx.get(f"{base_url}/models").json()["models"]]
            health = httpx.get(f"{base_url}/health").json()
            if versions == ["v1", "v2"] and all(worker["generation"] == 2 for worker in health["workers"] or [health]):
                break
            time.sleep(0.1)
        assert versions == ["v1", "v2"], (tmp_path / "server.log").read_text()
        assert health["last_reload"]["ok"] is True and health["last_reload"]["added"] == ["sentiment_analysis:v2"], health
    finally:
        stop_server(process)


def test_tabular_model_end_to_end(client: httpx.Client, live_server: LiveServer) -> None:
    rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 2.8, 4.3, 1.3]]
    response = client.post("/api/v1/predict", json={"id": "iris-1", "model": "iris", "instances": rows}, headers=_auth(live_server))
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model"], body["model_version"], body["rollout"]["strategy"]) == ("iris", "v1", "pinned")
    assert [r["instance"] for r in body["results"]] == rows
    assert [r["prediction"] for r in body["results"]] == ["setosa", "virginica", "versicolor"]
    assert all(sum(r["scores"].values()) == pytest.approx(1.0, abs=1e-5) for r in body["results"])


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"model": "iris", "instances": [[5.1, 3.5, 1.4]]}, "4"),
        ({"model": "iris", "instances": [[5.1, 3.5, 1.4, "x"]]}, "number"),
        ({"model": "iris", "instances": [[5.1, 3.5, 1.4, True]]}, "number"),
        ({"model": "iris", "texts": ["a flower"]}, "instances"),
        ({"texts": ["ok"], "instances": [[1, 2, 3, 4]]}, "exactly one"),
        ({"model": "sentiment_analysis", "instances": [[1, 2, 3, 4]]}, "texts"),
    ],
    ids=["short-row", "string", "bool", "texts-to-tabular", "both", "instances-to-text"],
)
def test_tabular_inputs_are_checked_against_the_signature(
    client: httpx.Client, live_server: LiveServer, body: dict[str, object], fragment: str
) -> None:
    response = client.post("/api/v1/predict", json=body, headers=_auth(live_server))
    assert response.status_code == 422, response.text
    assert fragment in response.text


def test_repeated_text_is_served_from_the_cache(client: httpx.Client, live_server: LiveServer) -> None:
    body = {"texts": ["a text only this test sends", "I love this product"], "model_version": "v2"}
    first = client.post("/api/v1/predict", json=body, headers=_auth(live_server)).json()
    second = client.post("/api/v1/predict", json=body, headers=_auth(live_server)).json()
    assert [r["cached"] for r in first["results"]][0] is False
    assert [r["cached"] for r in second["results"]] == [True, True]
    assert [r["scores"] for r in second["results"]] == [r["scores"] for r in first["results"]]
    assert client.get("/health").json()["cache"] == {"backend": "memory", "state": "ok"}
    metrics = client.get("/metrics").text
    assert 'cache_hits_total{model="sentiment_analysis",model_version="v2"}' in metrics
    assert 'cache_tier_hits_total{model="sentiment_analysis",model_version="v2",tier="memory"}' in metrics
    assert "cache_misses_total" in metrics and "cache_state 0.0" in metrics


def test_cache_invalidation_over_http(client: httpx.Client, live_server: LiveServer, models_dir: Path) -> None:
    import asyncio

    from engine.factory import build_engine
    from handlers.app import create_app
    from tests.conftest import make_settings

    _assert_error(client.delete("/api/v1/cache", headers={"X-Admin-Token": "x"}), 403, "forbidden")
    settings = make_settings(admin_token="admin-secret")
    engine = build_engine(settings)
    engine.load()

    async def scenario() -> list[httpx.Response]:
        app = create_app(settings, engine, manage_engine=False)
        admin = {"X-Admin-Token": "admin-secret"}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
            await http.post("/api/v1/predict", json={"texts": ["p", "q"], "model_version": "v1"}, headers={"X-Token": "secret-token"})
            replies = [
                await http.delete("/api/v1/cache", params={"model": "sentiment_analysis", "version": "v2"}, headers=admin),
                await http.delete("/api/v1/cache", params={"model": "sentiment_analysis"}, headers=admin),
                await http.delete("/api/v1/cache", params={"version": "v1"}, headers=admin),
                await http.delete("/api/v1/cache", headers={"X-Admin-Token": "wrong"}),
            ]
        await engine.aclose()
        return replies

    v2, model, version_only, wrong = asyncio.run(scenario())
    assert (v2.status_code, v2.json()) == (200, {"deleted": 0})
    assert (model.status_code, model.json()) == (200, {"deleted": 2})
    _assert_error(version_only, 422, "invalid_input")
    _assert_error(wrong, 401, "unauthorized")


def test_a_lone_surrogate_gets_422_and_never_fails_other_requests(live_server: LiveServer) -> None:
    """Poisoned and clean requests at once: each poisoned one gets 422 naming the index, every clean one 200."""
    poisoned = b'{"texts": ["fine", "bad \\ud800 text"], "model_version": "v1"}'

    def send(i: int) -> tuple[bool, httpx.Response]:
        with httpx.Client(base_url=live_server.base_url, timeout=60.0) as http:
            if i % 5 == 0:
                return True, http.post("/api/v1/predict", content=poisoned, headers=_auth(live_server))
            return False, http.post(
                "/api/v1/predict", json={"texts": [f"clean request {i}"], "model_version": "v1"}, headers=_auth(live_server)
            )

    with ThreadPoolExecutor(max_workers=16) as pool:
        replies = list(pool.map(send, range(60)))
    for is_poisoned, reply in replies:
        if is_poisoned:
            error = _assert_error(reply, 422, "invalid_input")
            assert error["details"] == {"indexes": [1]}
        else:
            assert reply.status_code == 200, reply.text


# Request ids: echoed in X-Request-ID, so checked before any inference runs.


def _raw_post(server: LiveServer, body: bytes) -> bytes:
    host, port = server.base_url.removeprefix("http://").split(":")
    request = (
        f"POST /api/v1/predict HTTP/1.1\r\nHost: {host}\r\nX-Token: {server.token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
    reply = b""
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(request)
        while chunk := sock.recv(65_536):
            reply += chunk
    return reply


@pytest.mark.parametrize(
    "request_id",
    ["line\r\nX-Injected: 1", "tab\there", "bell\x07", "nul\x00", "del\x7f", "caf\u00e9", "\u20ac-euro", "\U0001f600", " padded "],
    ids=["crlf", "tab", "bell", "nul", "del", "latin-1", "non-latin-1", "emoji", "padded"],
)
def test_a_request_id_no_header_can_carry_is_422(live_server: LiveServer, request_id: str) -> None:
    body = json.dumps({"id": request_id, "texts": ["fine"], "model_version": "v1"}).encode()
    reply = _raw_post(live_server, body)
    head, _, payload = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 422"), reply[:300]
    assert b"x-injected" not in head.lower()
    error = json.loads(payload)["error"]
    assert error["code"] == "invalid_request" and error["details"][0]["loc"] == ["body", "id"]


def test_a_printable_request_id_is_echoed(client: httpx.Client, live_server: LiveServer) -> None:
    request_id = "order 42/a-b_c:d@e~!"
    response = client.post("/api/v1/predict", json={"id": request_id, "texts": ["ok"]}, headers=_auth(live_server))
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == request_id == response.json()["request_id"]


# Bodies Python's JSON parser cannot read are invalid bodies like any other: 422, never 400.


@pytest.mark.parametrize(
    "body",
    [
        b'{"texts": ["caf\xe9"]}',
        b'{"texts": ["a"], "id": "\xff\xfe"}',
        b'{"texts": ["a"], "model_version": ' + b"1" * 5000 + b"}",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"texts": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    ],
    ids=["invalid-utf8", "invalid-utf8-id", "10**5000", "deep-array", "deep-texts"],
)
def test_unreadable_json_is_422(client: httpx.Client, live_server: LiveServer, body: bytes) -> None:
    error = _assert_error(client.post("/api/v1/predict", content=body, headers=_auth(live_server)), 422, "invalid_request")
    assert error["details"]


def test_a_gzip_body_over_http(client: httpx.Client, live_server: LiveServer) -> None:
    import gzip

    body = gzip.compress(b'{"texts": ["This is terrible"], "model_version": "v1"}')
    response = client.post("/api/v1/predict", content=body, headers={**_auth(live_server), "Content-Encoding": "gzip"})
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["prediction"] == "negative"


# Every error reply is counted; predict-route rejections before the engine count as requests too.


def _sample(metrics: str, name: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{") and line.rsplit(" ", 1)[0] == name:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_401_413_422_and_415_are_counted(client: httpx.Client, live_server: LiveServer) -> None:
    series = {
        401: ('http_errors_total{code="unauthorized",status="401"}', 'inference_errors_total{code="unauthorized"}'),
        413: ('http_errors_total{code="payload_too_large",status="413"}', 'inference_errors_total{code="payload_too_large"}'),
        415: ('http_errors_total{code="unsupported_media_type",status="415"}', 'inference_errors_total{code="unsupported_media_type"}'),
        422: ('http_errors_total{code="invalid_request",status="422"}', 'inference_errors_total{code="invalid_request"}'),
    }
    unknown = 'inference_requests_total{model="unknown",model_version="unresolved",outcome="%s"}'
    before = client.get("/metrics").text
    assert client.post("/api/v1/predict", json={"texts": ["a"]}).status_code == 401
    big = json.dumps({"texts": ["y" * 9_000] * 500}).encode()
    assert client.post("/api/v1/predict", content=big, headers=_auth(live_server)).status_code == 413
    assert client.post("/api/v1/predict", content=b"{}", headers={**_auth(live_server), "Content-Encoding": "br"}).status_code == 415
    assert client.post("/api/v1/predict", content=b"{", headers=_auth(live_server)).status_code == 422
    after = client.get("/metrics").text
    for status, names in series.items():
        for name in names:
            assert _sample(after, name) == _sample(before, name) + 1, (status, name)
    for code in ("unauthorized", "payload_too_large", "unsupported_media_type", "invalid_request"):
        assert _sample(after, unknown % code) == _sample(before, unknown % code) + 1, code
    # An engine error is counted once, by the facade, and once as an HTTP error reply.
    client.post("/api/v1/predict", json={"texts": ["a"], "model": "nope"}, headers=_auth(live_server))
    final = client.get("/metrics").text
    not_found = 'inference_errors_total{code="model_not_found"}'
    assert _sample(final, not_found) == _sample(after, not_found) + 1
    assert _sample(final, 'http_errors_total{code="model_not_found",status="404"}') >= 1


# The OpenAPI schema says what the server accepts and every status it sends.


def test_openapi_request_schema_takes_exactly_one_input_field(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    schema = spec["components"]["schemas"]["PredictRequest"]
    assert schema["oneOf"] == [
        {"required": ["texts"], "properties": {"texts": {"type": "array"}}},
        {"required": ["instances"], "properties": {"instances": {"type": "array"}}},
    ]
    assert schema["additionalProperties"] is False
    id_schema = next(s for s in schema["properties"]["id"]["anyOf"] if s.get("type") == "string")
    assert id_schema["pattern"] == "^([!-~]([ -~]*[!-~])?)?$" and id_schema["maxLength"] == 256


def test_openapi_documents_every_status_and_the_metrics_media_type(client: httpx.Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    statuses = {(path, method): set(op["responses"]) for path, item in paths.items() for method, op in item.items()}
    assert statuses["/api/v1/predict", "post"] == {"200", "400", "401", "404", "408", "413", "415", "422", "431", "500", "503"}
    assert statuses["/api/v1/admin/reload", "post"] == {"200", "400", "401", "403", "408", "409", "413", "415", "422", "431", "503"}
    assert statuses["/api/v1/cache", "delete"] == {"200", "400", "401", "403", "408", "422", "431", "503"}
    assert statuses["/metrics", "get"] == {"200", "400", "404", "408", "431", "503"}  # 401 too with METRICS_TOKEN (test_contract)
    assert statuses["/health", "get"] == statuses["/health/ready", "get"] == {"200", "400", "408", "431", "503"}
    assert set(paths["/metrics"]["get"]["responses"]["200"]["content"]) == {"text/plain"}
    for (path, method), codes in statuses.items():
        for code in codes - {"200"}:
            content = paths[path][method]["responses"][code]["content"]["application/json"]["schema"]["$ref"]
            # The Open Inference Protocol's own error shape on /v2, the native one elsewhere.
            shapes = ("/V2Error",) if path.startswith("/v2") else ("/ErrorBody", "/HealthReport", "/Probe")
            assert content.endswith(shapes), (path, method, code)


def test_production_refuses_to_serve_with_the_default_token(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from tests.conftest import REGISTRY_PATH, REPO_ROOT
    from tests.network import free_port

    # One process or a supervisor with workers: one clear error before anything is loaded or forked.
    for token, workers in (("secret-token", "1"), ("", "1"), ("secret-token", "2")):
        env = {**os.environ, "ENVIRONMENT": "production", "AUTH_TOKEN": token, "MODEL_REGISTRY_PATH": str(REGISTRY_PATH)}
        command = [sys.executable, "-m", "handlers.cli", "serve", "--host", "127.0.0.1", "--port", str(free_port()), "--workers", workers]
        result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 1, result.stderr[-2000:]
        assert "ENVIRONMENT=production" in result.stderr and "AUTH_TOKEN" in result.stderr, result.stderr[-2000:]
        assert "Traceback" not in result.stderr, result.stderr[-2000:]
