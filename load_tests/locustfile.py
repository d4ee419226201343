"""Load test of the HTTP API (``mlinfer serve`` or the docker-compose stack) with Locust.

    .venv-tools/bin/locust -f load_tests/locustfile.py --host=http://localhost:8000
    .venv-tools/bin/locust -f load_tests/locustfile.py --host=http://localhost:8000 \\
        --headless -u 50 -r 10 -t 1m --csv /tmp/ml-inference

Environment: AUTH_TOKEN (the server's X-Token, default ``secret-token``, the local default),
MODEL_VERSIONS (versions to pin, default ``v1,v2``), LOCUST_WAIT_MIN_S / LOCUST_WAIT_MAX_S (each
user's think time between requests, default 0.1-0.5 s). Every response is checked: HTTP 200 and
one result per input sent; a pinned request must be answered by the version it asked for.
"""

from __future__ import annotations

import os
import random
from typing import Any

from locust import HttpUser, between, task
from locust.clients import ResponseContextManager

PREDICT_PATH = "/api/v1/predict"
HEALTH_PATH = "/health"
AUTH_TOKEN = os.environ.get("AUTH_TOKEN", "secret-token")
MODEL_VERSIONS = tuple(v.strip() for v in os.environ.get("MODEL_VERSIONS", "v1,v2").split(",") if v.strip())
BATCH_SIZES = (2, 4, 8, 16)

# Short reviews, varied enough that the result cache does not answer every one of them.
_OPENINGS = ("I love", "I really like", "I can't stand", "I returned", "I am happy with", "I regret buying", "Nobody should buy")
_SUBJECTS = ("this product", "the battery", "the screen", "this jacket", "the delivery", "the headphones", "the customer service")
_ENDINGS = (
    "",
    ", amazing quality.",
    ", it broke after a week.",
    ", works exactly as described.",
    ", a total waste of money.",
    ", five stars.",
    ", never again.",
)


def review() -> str:
    return f"{random.choice(_OPENINGS)} {random.choice(_SUBJECTS)}{random.choice(_ENDINGS)}"


def check_prediction(response: ResponseContextManager, inputs: int, pinned: str | None = None) -> None:
    """Mark the response failed unless it is a 200 with one result per input (from ``pinned``, when given)."""
    if response.status_code != 200:
        response.failure(f"HTTP {response.status_code}: {response.text[:300]}")
        return
    try:
        body: dict[str, Any] = response.json()
    except ValueError:
        response.failure(f"not JSON: {response.text[:300]}")
        return
    results = body.get("results")
    if not isinstance(results, list) or len(results) != inputs:
        got = len(results) if isinstance(results, list) else results
        response.failure(f"{inputs} inputs sent, {got} results")
    elif pinned is not None and body.get("model_version") != pinned:
        response.failure(f"pinned {pinned}, answered by {body.get('model_version')}")
    else:
        response.success()


class InferenceUser(HttpUser):
    """A client of the API: mostly single reviews, some batches, some pinned to a version, a health check now and then."""

    wait_time = between(float(os.environ.get("LOCUST_WAIT_MIN_S", "0.1")), float(os.environ.get("LOCUST_WAIT_MAX_S", "0.5")))

    def on_start(self) -> None:
        self.client.headers.update({"X-Token": AUTH_TOKEN, "Content-Type": "application/json"})

    def _predict(self, texts: list[str], name: str, model_version: str | None = None) -> None:
        body: dict[str, Any] = {"texts": texts}
        if model_version is not None:
            body["model_version"] = model_version
        with self.client.post(PREDICT_PATH, json=body, name=name, catch_response=True) as response:
            check_prediction(response, len(texts), model_version)

    @task(6)
    def predict_one(self) -> None:
        self._predict([review()], f"{PREDICT_PATH} [1 text]")

    @task(2)
    def predict_batch(self) -> None:
        self._predict([review() for _ in range(random.choice(BATCH_SIZES))], f"{PREDICT_PATH} [batch]")

    @task(2)
    def predict_pinned(self) -> None:
        version = random.choice(MODEL_VERSIONS)
        self._predict([review()], f"{PREDICT_PATH} [pinned {version}]", model_version=version)

    @task(1)
    def health(self) -> None:
        with self.client.get(HEALTH_PATH, name=HEALTH_PATH, catch_response=True) as response:
            if response.status_code == 200:
                response.success()
            else:
                response.failure(f"HTTP {response.status_code}: {response.text[:300]}")
