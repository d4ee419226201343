"""engine/metrics.py: label sets that the documented queries can divide, process figures in one process and
across worker processes (real processes sharing a PROMETHEUS_MULTIPROC_DIR), and every name the README lists."""

from __future__ import annotations

import asyncio
import os
import re
import select
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import multiprocess
from prometheus_client.parser import text_string_to_metric_families

from engine.errors import ModelNotFound
from engine.facade import InferenceEngine
from engine.metrics import Metrics
from engine.schemas import PredictRequest
from tests.conftest import REPO_ROOT

README = REPO_ROOT / "README.md"
METRIC_PREFIXES = ("inference_", "http_", "cache_", "model_", "rollout_", "shadow_", "registry_", "process_", "server_", "active_")

# A stand-in for one server worker: the real Metrics in a real process, writing to the shared folder.
WORKER = """
import sys
from pathlib import Path
from engine.metrics import Metrics
metrics = Metrics(multiprocess_dir=Path(sys.argv[1]))
metrics.requests.labels("sentiment_analysis", "v1", "ok").inc(int(sys.argv[2]))
metrics.count_cache_hit("sentiment_analysis", "v1", "memory")
metrics.in_flight.inc()
print("ready", flush=True)
sys.stdin.readline()
"""


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every sample of a /metrics text, by sample name."""
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return found


def test_hits_and_misses_carry_the_same_labels() -> None:
    metrics = Metrics()
    metrics.count_cache_hit("sentiment_analysis", "v1", "memory")
    metrics.count_cache_hit("sentiment_analysis", "v1", "redis")
    metrics.count_cache_miss("sentiment_analysis", "v1")
    metrics.count_cache_miss("iris", "v1")
    found = samples(metrics.render().decode())
    hits = {tuple(sorted(labels.items())): value for labels, value in found["cache_hits_total"]}
    misses = {tuple(sorted(labels.items())): value for labels, value in found["cache_misses_total"]}
    assert hits.keys() == misses.keys(), "the seed's hits / (hits + misses) matches series one to one"
    # The seed's query, evaluated on the scraped series: a version with only misses reads 0, not nothing.
    rate = {dict(key)["model"]: hits[key] / (hits[key] + misses[key]) for key in hits}
    assert rate == {"sentiment_analysis": 2 / 3, "iris": 0.0}
    tiers = {labels["tier"]: value for labels, value in found["cache_tier_hits_total"]}
    assert tiers == {"memory": 1.0, "redis": 1.0}


def test_one_process_reports_its_process_figures() -> None:
    found = samples(Metrics().render().decode())
    ((labels, rss),) = found["process_resident_memory_bytes"]
    assert labels == {} and rss > 10 * 2**20
    assert found["process_cpu_seconds_total"][0][1] > 0
    assert found["server_workers"] == [({}, 1.0)]


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[tuple[Path, list[subprocess.Popen[str]]]]:
    folder = tmp_path / "metrics"
    folder.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder)}
    started = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(folder), str(count)],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for count in (2, 3)
    ]
    try:
        for process in started:
            assert process.stdout is not None
            ready, _, _ = select.select([process.stdout], [], [], 30.0)
            assert ready and process.stdout.readline().strip() == "ready", f"worker {process.pid} did not start"
        yield folder, started
    finally:
        for process in started:
            process.kill()
            process.wait(timeout=10)
            for pipe in (process.stdin, process.stdout):
                if pipe is not None:
                    pipe.close()


def test_worker_processes_are_summed_and_each_reports_its_process(workers: tuple[Path, list[subprocess.Popen[str]]]) -> None:
    folder, started = workers
    pids = {str(p.pid) for p in started}
    render = Metrics(multiprocess_dir=folder).render  # any worker renders the same: it reads the shared files
    found = samples(render().decode())
    assert found["inference_requests_total"] == [({"model": "sentiment_analysis", "model_version": "v1", "outcome": "ok"}, 5.0)]
    assert found["cache_hits_total"] == [({"model": "sentiment_analysis", "model_version": "v1"}, 2.0)]
    assert found["inference_in_flight_requests"] == [({}, 2.0)]
    assert {labels["pid"] for labels, _ in found["server_workers"]} == pids
    rss = {labels["pid"]: value for labels, value in found["process_resident_memory_bytes"]}
    assert rss.keys() == pids and all(v > 5 * 2**20 for v in rss.values())
    assert {labels["pid"] for labels, _ in found["process_cpu_seconds_total"]} == pids

    # A worker that died (the supervisor marks it dead): its counts stay in the sums, its process figures go.
    gone = started[0]
    gone.kill()
    gone.wait(timeout=10)
    multiprocess.mark_process_dead(gone.pid, str(folder))  # type: ignore[no-untyped-call]
    found = samples(render().decode())
    assert found["inference_requests_total"][0][1] == 5.0
    assert found["inference_in_flight_requests"] == [({}, 1.0)]
    assert {labels["pid"] for labels, _ in found["process_resident_memory_bytes"]} == {str(started[1].pid)}


def test_errors_are_counted_by_code(engine: InferenceEngine) -> None:
    def errors() -> float:
        return engine.metrics.registry.get_sample_value("inference_errors_total", {"code": "model_not_found"}) or 0.0

    before = errors()
    for _ in range(2):
        with pytest.raises(ModelNotFound):
            asyncio.run(engine.predict(PredictRequest(texts=["a text"], model="no_such_model")))
    assert errors() - before == 2
    requests = engine.metrics.registry.get_sample_value(
        "inference_requests_total", {"model": "unknown", "model_version": "unresolved", "outcome": "model_not_found"}
    )
    assert requests is not None and requests >= 2


def readme_metric_names() -> set[str]:
    """The metric names the README's Metrics section lists (backticked, label sets aside)."""
    text = README.read_text()
    section = text[text.index("## Metrics\n") : text.index("\n## ", text.index("## Metrics\n") + 1)]
    bullets = section[: section.index("```promql")]
    return {name for name in re.findall(r"`([a-z][a-z0-9_]*)(?:\{[^`]*\})?`", bullets) if name.startswith(METRIC_PREFIXES)}


def test_every_metric_the_readme_lists_is_registered() -> None:
    names = readme_metric_names()
    assert len(names) > 25, names
    registered = set()
    for family in Metrics().registry.collect():
        registered.add(family.name)
        registered |= {sample.name for sample in family.samples}
        if family.type == "counter":
            registered.add(f"{family.name}_total")
    assert names <= registered, f"listed in the README, not in engine/metrics.py: {sorted(names - registered)}"
