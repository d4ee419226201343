"""The README's PromQL block and the Grafana dashboard (infra/grafana/dashboards/ml-inference.json): the panels the
dashboard must have, each with the README's own queries, all parsed by ``promtool``. tests/infra/test_prometheus.py
runs the same queries through a real Prometheus."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tests.conftest import REPO_ROOT
from tests.infra.conftest import INFRA_DIR
from tests.infra.test_compose import check_promql, promql_metric_names, registered_series

README = REPO_ROOT / "README.md"
DASHBOARD = INFRA_DIR / "grafana" / "dashboards" / "ml-inference.json"
# Grafana's own interval variables, as a 1 s scrape makes them.
GRAFANA_INTERVALS = {"__rate_interval": "1m", "__interval": "15s", "__range": "5m"}

# The panels the dashboard must show (by title), each with the metric its queries must read.
REQUIRED_PANELS = {
    "Request rate": "inference_requests_total",
    "Latency p50 / p95 / p99 by version": "inference_latency_ms_bucket",
    "Cache hit rate": "cache_hits_total",
    "Batch size": "inference_batch_size_bucket",
    "Queue depth": "inference_queued_inputs",
    "Canary share": "rollout_assignments_total",
    "Errors by code": "inference_errors_total",
}


def metrics_section() -> str:
    text = README.read_text()
    start = text.index("## Metrics\n")
    return text[start : text.index("\n## ", start + 1)]


def readme_queries() -> list[str]:
    """Every query of the Metrics section's one ```promql block: one per line, `#` lines are comments."""
    blocks = re.findall(r"^```promql\n(.*?)^```", metrics_section(), re.S | re.M)
    assert len(blocks) == 1, "the README's Metrics section has exactly one ```promql block"
    return [line.strip() for line in blocks[0].splitlines() if line.strip() and not line.lstrip().startswith("#")]


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def substitute(expr: str, board: dict[str, Any]) -> str:
    """A panel query as Grafana sends it: its template variables (the dashboard's, and Grafana's intervals) replaced."""
    values = dict(GRAFANA_INTERVALS)
    for variable in board.get("templating", {}).get("list", []):
        current = variable.get("current", {}).get("value")
        values[variable["name"]] = ".*" if current in (None, "$__all", ["$__all"]) else str(current)

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in values, f"unknown template variable ${name} in {expr}"
        return values[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, expr)


def dashboard_queries() -> dict[str, str]:
    """Every panel target's query (template variables substituted), keyed by panel title and refId."""
    board = dashboard()
    return {
        f"{panel['title']} [{target['refId']}]": substitute(target["expr"], board)
        for panel in board["panels"]
        for target in panel.get("targets", [])
    }


def test_the_readme_block_parses_and_names_real_metrics(tmp_path: Path) -> None:
    queries = readme_queries()
    assert len(queries) == len(set(queries)) >= 20
    check_promql({f"readme_{i}": q for i, q in enumerate(queries)}, tmp_path)
    known = registered_series()
    for query in queries:
        assert promql_metric_names(query) <= known, f"{query}: {promql_metric_names(query) - known} not in engine/metrics.py"


def test_histograms_are_queried_through_their_buckets_sum_and_count() -> None:
    histograms = {
        "inference_latency_ms",
        "inference_batch_size",
        "inference_batch_latency_ms",
        "inference_queue_wait_ms",
        "inference_batch_phase_ms",
    }
    for query in readme_queries():
        for name in promql_metric_names(query):
            assert name not in histograms, f"{query}: a histogram has no bare series; use {name}_bucket, _sum or _count"
        if "histogram_quantile" in query:
            assert re.search(r"histogram_quantile\([0-9.]+, sum by \(le\b", query), f"{query}: quantiles need the rate of buckets by le"


def test_the_dashboard_charts_the_readme_queries() -> None:
    readme = set(readme_queries())
    panels = dashboard_queries()
    assert panels
    not_documented = {title: q for title, q in panels.items() if q not in readme}
    assert not not_documented, f"panel queries not in the README's promql block: {not_documented}"


def test_the_dashboard_has_the_required_panels() -> None:
    titles = {panel["title"]: panel for panel in dashboard()["panels"] if panel["type"] != "row"}
    for title, metric in REQUIRED_PANELS.items():
        assert title in titles, f"no {title!r} panel"
        named = set().union(*(promql_metric_names(t["expr"]) for t in titles[title]["targets"]))
        assert metric in named, f"{title!r} does not chart {metric}"
    latency = {t["expr"] for t in titles["Latency p50 / p95 / p99 by version"]["targets"]}
    for q in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({q}, sum by (le, model_version) (rate(inference_latency_ms_bucket[5m])))" in latency


def test_panels_do_not_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard()["panels"]:
        grid = panel["gridPos"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]
