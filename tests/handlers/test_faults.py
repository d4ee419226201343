"""Faults under a running ``mlinfer serve``: a failed canary, reloads around it, a weights file
truncated under a loaded version, a Redis that answers +OK to everything, and ``active_models``."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.registry import load_registry
from engine.rollout import routing_bucket, strategy_for
from tests.conftest import MODELS_DIR, V1_DIR, V2_DIR
from tests.engine.cache.redis_server import start_ok_redis
from tests.network import SERVER_TOKEN, start_server, stop_server
from tests.registries import V1_MODEL, V2_MODEL, broken_v2_folder, sentiment, write_registry

ADMIN = "admin-secret"
AUTH = {"X-Token": SERVER_TOKEN}
IRIS = {"default_version": "v1", "kind": "tabular", "versions": {"v1": {"path": str(MODELS_DIR / "iris_v1" / "model.onnx")}}}
CANARY = {"type": "canary", "canary_percentage": 10, "target_version": "v2"}
REQUESTS = 1000


def _metric(base_url: str, name: str, **labels: str) -> float:
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
        if match and ",".join(sorted((match.group(1) or "").split(","))) == wanted:
            return float(match.group(2))
    return 0.0


def _versions(health: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f"{m['name']}:{m['version']}": m for m in health["models"]}


def _predict_many(base_url: str, ids: list[str], **extra: str) -> list[httpx.Response]:
    """One unpinned request per id, 16 at a time."""

    async def run() -> list[httpx.Response]:
        limit = asyncio.Semaphore(16)
        async with httpx.AsyncClient(base_url=base_url, timeout=30, headers=AUTH) as client:

            async def one(request_id: str) -> httpx.Response:
                async with limit:
                    return await client.post("/api/v1/predict", json={"id": request_id, "texts": ["I love it"], **extra})

            return list(await asyncio.gather(*(one(i) for i in ids)))

    return asyncio.run(run())


def _reload(base_url: str) -> httpx.Response:
    return httpx.post(f"{base_url}/api/v1/admin/reload", headers={"X-Admin-Token": ADMIN}, timeout=120)


def test_a_failed_canary_fails_over_and_reloads_retry_it(tmp_path: Path, models_dir: Path) -> None:
    folder = broken_v2_folder(tmp_path)
    versions = {"v1": {"path": V1_MODEL}, "v2": {"path": str(folder / "model.onnx"), "status": "candidate"}}
    registry = write_registry(tmp_path, {"sentiment_analysis": sentiment(versions, rollout=CANARY)})
    strategy = strategy_for(load_registry(registry).models["sentiment_analysis"])
    ids = [f"user-{i}" for i in range(REQUESTS)]
    to_canary = sum(strategy.assign(routing_bucket("sentiment_analysis", i)).version == "v2" for i in ids)
    log = tmp_path / "server.log"
    process, base_url = start_server(log, "--workers", "1", MODEL_REGISTRY_PATH=str(registry), ADMIN_TOKEN=ADMIN, CACHE_BACKEND="none")
    try:
        responses = _predict_many(base_url, ids)
        assert [r.status_code for r in responses] == [200] * REQUESTS, next(r.text for r in responses if r.status_code != 200)
        assert {(r.json()["model_version"], r.json()["rollout"]["arm"]) for r in responses} == {("v1", "v1")}
        assert _metric(base_url, "rollout_failovers_total", model="sentiment_analysis", from_version="v2", to_version="v1") == to_canary
        health = httpx.get(f"{base_url}/health")
        assert health.status_code == 200 and (health.json()["status"], health.json()["ready"]) == ("degraded", True)
        v2 = _versions(health.json())["sentiment_analysis:v2"]
        assert (v2["state"], v2["failover_to"]) == ("failed", "v1")
        pinned = httpx.post(f"{base_url}/api/v1/predict", json={"texts": ["ok"], "model_version": "v2"}, headers=AUTH)
        assert (pinned.status_code, pinned.json()["error"]["code"]) == (503, "model_not_ready")

        # Another model changes while v2 still fails to load: the reload goes through.
        write_registry(tmp_path, {"sentiment_analysis": sentiment(versions, rollout=CANARY), "iris": IRIS})
        reply = _reload(base_url)
        assert reply.status_code == 200, reply.text
        assert reply.json()["added"] == ["iris:v1"] and reply.json()["still_failed"] == ["sentiment_analysis:v2"]
        assert _versions(httpx.get(f"{base_url}/health").json())["iris:v1"]["state"] == "ready"

        # The file is fixed, the registry left as it is: the reload tries v2 again and it serves.
        for name in ("model.onnx", "model.onnx.data"):
            shutil.copyfile(V2_DIR / name, folder / name)
        reply = _reload(base_url)
        assert reply.status_code == 200, reply.text
        assert reply.json()["retried"] == ["sentiment_analysis:v2"] and reply.json()["still_failed"] == []
        health = httpx.get(f"{base_url}/health").json()
        assert (health["status"], _versions(health)["sentiment_analysis:v2"]["failover_to"]) == ("active", None)
        answered = {r.json()["model_version"] for r in _predict_many(base_url, ids[:200])}
        assert answered == {"v1", "v2"}
        assert _metric(base_url, "active_models") == len(health["active_models"]) == 3
    finally:
        stop_server(process)


def test_active_models_is_right_after_a_reload(tmp_path: Path, models_dir: Path) -> None:
    registry = write_registry(tmp_path, {"sentiment_analysis": sentiment({"v1": {"path": V1_MODEL}})})
    process, base_url = start_server(tmp_path / "server.log", MODEL_REGISTRY_PATH=str(registry), ADMIN_TOKEN=ADMIN)
    try:
        assert _metric(base_url, "active_models") == 1
        three = {"v1": {"path": V1_MODEL}, "v2": {"path": V2_MODEL, "status": "candidate"}, "v3": {"path": V2_MODEL}}
        write_registry(tmp_path, {"sentiment_analysis": sentiment(three, rollout=CANARY)})
        assert _reload(base_url).status_code == 200
        health = httpx.get(f"{base_url}/health").json()
        assert len(health["active_models"]) == 3
        assert _metric(base_url, "active_models") == 3
    finally:
        stop_server(process)


def test_weights_truncated_under_a_loaded_version_do_not_kill_the_server(tmp_path: Path, models_dir: Path) -> None:
    folder = tmp_path / "v1"
    folder.mkdir()
    for name in ("model.onnx", "model.onnx.data", "tokenizer.json", "labels.json"):
        shutil.copyfile(V1_DIR / name, folder / name)
    versions = {"v1": {"path": str(folder / "model.onnx")}, "v2": {"path": V2_MODEL, "status": "candidate"}}
    registry = write_registry(tmp_path, {"sentiment_analysis": sentiment(versions)})
    log = tmp_path / "server.log"
    process, base_url = start_server(
        log, "--workers", "1", MODEL_REGISTRY_PATH=str(registry), CACHE_BACKEND="none", MODEL_CACHE_DIR=str(tmp_path / "cache")
    )
    try:
        body = {"texts": ["I love this product", "This is terrible"]}
        before = httpx.post(f"{base_url}/api/v1/predict", json=body, headers=AUTH).json()
        os.truncate(folder / "model.onnx.data", 0)
        for version in ("v1", "v2", "v1"):
            reply = httpx.post(f"{base_url}/api/v1/predict", json={**body, "model_version": version}, headers=AUTH, timeout=30)
            assert reply.status_code == 200, f"{reply.status_code} {reply.text}\n{log.read_text()}"
        assert [r["scores"] for r in reply.json()["results"]] == [r["scores"] for r in before["results"]]
        assert process.poll() is None
        models = _versions(httpx.get(f"{base_url}/health").json())
        assert (models["sentiment_analysis:v1"]["files_changed"], models["sentiment_analysis:v2"]["files_changed"]) == (True, False)
        assert "changed on disk" in log.read_text()
    finally:
        stop_server(process)


@pytest.fixture
def ok_redis() -> Iterator[int]:
    """A fake Redis on 127.0.0.1 that answers ``+OK`` to every command (writes succeed, reads make no
    sense), in a thread of the test process; yields its port."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    port: list[int] = []

    stop: list[asyncio.Event] = []

    async def serve() -> None:
        stop.append(asyncio.Event())
        server = await start_ok_redis()
        port.append(server.sockets[0].getsockname()[1])
        started.set()
        async with server:
            await stop[0].wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert started.wait(10)
    yield port[0]
    loop.call_soon_threadsafe(stop[0].set)
    thread.join(10)
    loop.close()


def test_a_redis_that_answers_ok_to_everything_opens_the_circuit(tmp_path: Path, models_dir: Path, ok_redis: int) -> None:
    registry = write_registry(tmp_path, {"sentiment_analysis": sentiment({"v1": {"path": V1_MODEL}})})
    process, base_url = start_server(
        tmp_path / "server.log",
        "--workers",
        "1",
        MODEL_REGISTRY_PATH=str(registry),
        CACHE_BACKEND="redis",
        REDIS_HOST="127.0.0.1",
        REDIS_PORT=str(ok_redis),
        REDIS_TIMEOUT_MS="1000",
    )
    try:
        with httpx.Client(base_url=base_url, headers=AUTH, timeout=30) as client:
            for i in range(8):
                reply = client.post("/api/v1/predict", json={"texts": [f"text number {i}"]})
                assert reply.status_code == 200, reply.text
                assert reply.json()["results"][0]["prediction"] in ("positive", "neutral", "negative")
            assert client.get("/health").json()["cache"] == {"backend": "redis", "state": "open"}
            assert _metric(base_url, "cache_state") == 2
            assert _metric(base_url, "cache_errors_total", operation="get") == 5  # then the open circuit skips Redis
    finally:
        stop_server(process)
