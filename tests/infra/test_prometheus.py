"""A real Prometheus (Debian's ``prometheus`` package) scraping two live ``mlinfer serve`` processes every second,
one with a single process and one with ``--workers 2``: after bounded traffic (texts, cache repeats, a canary
split, a shadow model, tabular rows, errors), every query of the README's promql block and every panel query of
the Grafana dashboard returns data; the two-worker server's figures are the sums over its workers; and
``promtool check metrics`` passes on both servers' /metrics but for the one lint rule the README names."""

from __future__ import annotations

import math
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.prometheus_process import launch
from tests.conftest import MODELS_DIR, require_models
from tests.infra.conftest import report, system_tool
from tests.infra.test_dashboards import dashboard_queries, readme_queries
from tests.network import SERVER_TOKEN, start_server, stop_server, wait_until_ready
from tests.registries import sentiment, write_registry

SCRAPE_S = 1
WAIT_S = 30.0
IRIS_MODEL = MODELS_DIR / "iris_v1" / "model.onnx"
# The one promlint rule the README lists: the seed's `inference_latency_ms` (and the other millisecond metrics, and their
# `_created` series) break it.
IGNORED_LINT = re.compile(r"^\w+_ms(?:_created)? metric names should not contain abbreviated units$")
ROUNDS = 2  # a round creates the series, the next one moves them: rates over the window are then finite


@dataclass(frozen=True)
class Server:
    job: str
    process: subprocess.Popen[bytes]
    base_url: str


@dataclass(frozen=True)
class Stack:
    prometheus: str
    single: Server
    workers: Server


def registry(folder: Path) -> Path:
    return write_registry(
        folder,
        {
            "sentiment_analysis": sentiment(rollout={"type": "canary", "canary_percentage": 30, "target_version": "v2"}),
            "sentiment_shadow": sentiment(rollout={"type": "shadow", "target_version": "v2"}),
            "iris": {"kind": "tabular", "default_version": "v1", "versions": {"v1": {"path": str(IRIS_MODEL), "status": "active"}}},
        },
    )


def start_prometheus(folder: Path, servers: list[Server]) -> tuple[subprocess.Popen[bytes], str]:
    binary = system_tool("prometheus", "prometheus")
    process, url, log_path = launch(binary, folder, {s.job: s.base_url.removeprefix("http://") for s in servers}, SCRAPE_S)
    wait_until_ready(process, f"{url}/-/ready", log_path, what="prometheus", timeout_s=WAIT_S)
    return process, url


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_models(IRIS_MODEL)
    folder = tmp_path_factory.mktemp("prometheus")
    path = str(registry(folder))

    def serve(job: str, workers: int) -> Server:
        process, base_url = start_server(folder / f"{job}.log", "--workers", str(workers), MODEL_REGISTRY_PATH=path)
        return Server(job, process, base_url)

    with ThreadPoolExecutor(2) as pool:
        started = [pool.submit(serve, "single", 1), pool.submit(serve, "workers", 2)]
        servers = [future.result() for future in started]
    prometheus: subprocess.Popen[bytes] | None = None
    try:
        prometheus, url = start_prometheus(folder, servers)
        built = Stack(url, *servers)
        until(lambda: query(built, "sum(up)") == [2.0], "both servers scraped")
        for number in range(ROUNDS):
            for server in servers:
                traffic(server.base_url, number)
            for server in servers:
                wait_for_requests(built, server.job, REQUESTS_PER_ROUND * (number + 1))
        shadows = float(ROUNDS * SHADOW_REQUESTS)  # the shadow runs after the answer: wait until each counted its input
        until(lambda: query(built, "sum by (job) (shadow_predictions_total)") == [shadows, shadows], "the shadow runs scraped")
        yield built
    finally:
        if prometheus is not None:
            prometheus.terminate()
            prometheus.wait(timeout=15)
        for server in servers:
            stop_server(server.process)


# ---------------------------------------------------------------------------- traffic

SENTIMENT_REQUESTS, REPEATS, BATCH_TEXTS, SHADOW_REQUESTS, IRIS_REQUESTS = 10, 4, 6, 3, 2
ERRORS = {"model_not_found": 404, "unauthorized": 401, "invalid_request": 422}
REQUESTS_PER_ROUND = SENTIMENT_REQUESTS + REPEATS + 1 + SHADOW_REQUESTS + IRIS_REQUESTS + len(ERRORS)
SENTIMENT_INPUTS_PER_ROUND = SENTIMENT_REQUESTS + REPEATS + BATCH_TEXTS


def post(base_url: str, body: dict[str, Any], *, token: str = SERVER_TOKEN, routing_key: str | None = None) -> httpx.Response:
    """One request on a connection of its own, so that SO_REUSEPORT spreads them over the workers."""
    headers = {"X-Token": token, **({"X-Routing-Key": routing_key} if routing_key else {})}
    return httpx.post(f"{base_url}/api/v1/predict", json=body, headers=headers, timeout=30.0)


def traffic(base_url: str, number: int) -> None:
    def ok(response: httpx.Response) -> None:
        assert response.status_code == 200, response.text

    for i in range(SENTIMENT_REQUESTS):  # a new routing key each: the 30 % canary splits them
        ok(post(base_url, {"texts": [f"round {number}: review {i} of the product"]}, routing_key=f"user-{number}-{i}"))
    for _ in range(REPEATS):  # one text again and again: cache hits
        ok(post(base_url, {"texts": ["I love this product"], "model_version": "v1"}))
    ok(post(base_url, {"texts": [f"round {number}: batch text {i}" for i in range(BATCH_TEXTS)], "model_version": "v1"}))
    for i in range(SHADOW_REQUESTS):
        ok(post(base_url, {"model": "sentiment_shadow", "texts": [f"round {number}: shadowed text {i}"]}))
    for i in range(IRIS_REQUESTS):
        ok(post(base_url, {"model": "iris", "instances": [[5.1, 3.5, 1.4 + i + number, 0.2]]}))
    errors = {
        "model_not_found": post(base_url, {"model": "no_such_model", "texts": ["x"]}),
        "unauthorized": post(base_url, {"texts": ["x"]}, token="wrong-token"),
        "invalid_request": post(base_url, {"texts": "not a list"}),
    }
    for code, response in errors.items():
        assert response.status_code == ERRORS[code] and response.json()["error"]["code"] == code, response.text


# ---------------------------------------------------------------------------- Prometheus's HTTP API


def query_result(stack: Stack, expr: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{stack.prometheus}/api/v1/query", params={"query": expr}, timeout=10.0)
    body = response.json()
    assert response.status_code == 200 and body["status"] == "success", f"{expr}: {response.text}"
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def query(stack: Stack, expr: str) -> list[float]:
    """The values of an instant query, sorted."""
    return sorted(float(item["value"][1]) for item in query_result(stack, expr))


def until(check: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout_s} s: {what}")
        time.sleep(0.25)


def wait_for_requests(stack: Stack, job: str, count: int) -> None:
    expr = f'sum(inference_requests_total{{job="{job}"}})'
    until(lambda: query(stack, expr) == [float(count)], f"{job}: Prometheus scraped {count} requests")


def unanswered(stack: Stack, queries: dict[str, str]) -> dict[str, str]:
    """The queries that return no series, or only NaN."""
    failed = {}
    for name, expr in queries.items():
        result = query_result(stack, expr)
        if not result:
            failed[name] = "no series"
        elif not any(math.isfinite(float(item["value"][1])) for item in result):
            failed[name] = f"only NaN: {result}"
    return failed


# ---------------------------------------------------------------------------- the tests


def test_every_readme_query_returns_data(stack: Stack) -> None:
    queries = readme_queries()
    failed = unanswered(stack, {q: q for q in queries})
    assert not failed, f"{len(failed)} of {len(queries)} README queries answer nothing: {failed}"


def test_every_dashboard_panel_query_returns_data(stack: Stack) -> None:
    queries = dashboard_queries()
    failed = unanswered(stack, queries)
    assert not failed, f"{len(failed)} of {len(queries)} panel queries answer nothing: {failed}"


def test_the_seed_queries_as_the_issue_measured_them(stack: Stack) -> None:
    # A histogram has no bare series (so the README never queries one bare); hits and misses now divide.
    assert query_result(stack, "avg(inference_latency_ms) by (model_version)") == []
    assert query(stack, 'cache_hits_total{job="single", model="sentiment_analysis", model_version="v1"}') == [float(ROUNDS * REPEATS - 1)]
    hit_rate = query(stack, 'cache_hits_total{model="sentiment_analysis"} / (cache_hits_total + cache_misses_total)')
    assert hit_rate and all(0.0 <= v <= 1.0 for v in hit_rate)


def test_errors_are_counted_by_code(stack: Stack) -> None:
    for server in (stack.single, stack.workers):
        by_code = {
            item["metric"]["code"]: float(item["value"][1]) for item in query_result(stack, f'inference_errors_total{{job="{server.job}"}}')
        }
        assert by_code == {code: float(ROUNDS) for code in ERRORS}, server.job


def worker_pids(supervisor: subprocess.Popen[bytes]) -> set[str]:
    return set(Path(f"/proc/{supervisor.pid}/task/{supervisor.pid}/children").read_text().split())


def rss_bytes(pid: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return float(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def test_two_workers_are_summed(stack: Stack) -> None:
    job = '{job="workers"}'
    total = REQUESTS_PER_ROUND * ROUNDS
    assert query(stack, f"sum(inference_requests_total{job})") == [float(total)]
    assert query(stack, 'sum(inference_requests_total{job="workers", outcome="ok"})') == [float(total - len(ERRORS) * ROUNDS)]
    lookups = query(stack, 'sum(cache_hits_total{job="workers", model="sentiment_analysis"} + cache_misses_total)')
    assert lookups == [float(SENTIMENT_INPUTS_PER_ROUND * ROUNDS)], "every input looked up once, whichever worker"
    assert query(stack, f"sum(inference_in_flight_requests{job})") == [0.0]
    versions = 5.0  # each worker loads every version of the registry
    assert query(stack, 'sum by (job) (model_loads_total{outcome="ok"})') == [versions, 2 * versions]
    pids = worker_pids(stack.workers.process)
    assert len(pids) == 2

    # Process figures: one series per live worker, labelled with its pid, each the worker's own.
    assert {item["metric"]["pid"] for item in query_result(stack, f"server_workers{job}")} == pids
    rss = {item["metric"]["pid"]: float(item["value"][1]) for item in query_result(stack, f"process_resident_memory_bytes{job}")}
    assert rss.keys() == pids
    for pid, value in rss.items():
        assert 0.75 < value / rss_bytes(pid) < 1.25, (pid, value, rss_bytes(pid))
    cpu = query(stack, f"process_cpu_seconds_total{job}")
    assert len(cpu) == 2 and all(v > 0 for v in cpu)


def test_one_process_reports_its_own_figures(stack: Stack) -> None:
    (item,) = query_result(stack, 'process_resident_memory_bytes{job="single"}')
    assert "pid" not in item["metric"]
    assert 0.75 < float(item["value"][1]) / rss_bytes(str(stack.single.process.pid)) < 1.25
    assert query(stack, 'server_workers{job="single"}') == [1.0]


@pytest.mark.parametrize("job", ["single", "workers"])
def test_promtool_check_metrics_passes_but_for_the_listed_rule(stack: Stack, job: str) -> None:
    server = stack.single if job == "single" else stack.workers
    text = httpx.get(f"{server.base_url}/metrics", timeout=10.0).text
    promtool = system_tool("promtool", "prometheus")
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60, check=False)
    problems = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    other = [line for line in problems if not IGNORED_LINT.match(line)]
    assert not other, report(result)
    # Exit 3 is promtool's "lint problems found"; anything else (1: the text does not parse) fails.
    assert result.returncode == (3 if problems else 0), report(result)
    assert any(line.startswith("inference_latency_ms ") for line in problems), "the seed's name is the one the README explains"
