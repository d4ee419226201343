"""docker-compose.yaml as ``docker-compose config`` resolves it, and the Prometheus and Grafana files it mounts:
the Prometheus config and every PromQL expression (dashboard panels, alerts) checked by ``promtool``, and every
metric they name one that engine/metrics.py registers."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.metrics import Metrics
from tests.conftest import REPO_ROOT
from tests.infra.conftest import DOCKERFILES, INFRA_DIR, report, system_tool
from tests.infra.test_dockerfiles import parse

COMPOSE_FILE = REPO_ROOT / "docker-compose.yaml"
PROMETHEUS_CONFIG = INFRA_DIR / "prometheus" / "prometheus.yml"
ALERTS = INFRA_DIR / "prometheus" / "alerts.yml"
GRAFANA_DIR = INFRA_DIR / "grafana"
DATASOURCES = GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yaml"
DASHBOARD_PROVIDERS = GRAFANA_DIR / "provisioning" / "dashboards" / "dashboards.yaml"
DASHBOARD = GRAFANA_DIR / "dashboards" / "ml-inference.json"
SERVICES = {"ml-inference-api", "redis", "prometheus", "grafana"}
PUBLISHED = {"ml-inference-api": [8000, 8001], "prometheus": [9090], "grafana": [3000]}  # 8001: gRPC
COMPOSE_VARIABLES = ("AUTH_TOKEN", "LOG_LEVEL", "GRAFANA_ADMIN_PASSWORD")
# The metrics the dashboard must chart (engine/metrics.py's names, as Prometheus stores them).
DASHBOARD_METRICS = {
    "inference_requests_total",
    "inference_latency_ms_bucket",
    "inference_batch_size_bucket",
    "cache_hits_total",
    "cache_misses_total",
    "inference_errors_total",
    "inference_in_flight_requests",
    "inference_queued_inputs",
    "shadow_predictions_total",
    "rollout_assignments_total",
}
# Hits and misses carry the same labels (the tier is cache_tier_hits_total's): the hit rate per version.
CACHE_HIT_RATE = (
    "sum by (model_version) (rate(cache_hits_total[5m])) / (sum by (model_version) (rate(cache_hits_total[5m]))"
    " + sum by (model_version) (rate(cache_misses_total[5m])))"
)

# ---------------------------------------------------------------------------- PromQL helpers (test_manifests uses them too)

_PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values", "group",
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset", "inf", "nan",
}  # fmt: skip


def promql_metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: identifiers left once strings, label matchers, ranges, groupings and
    function calls are set aside."""
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    bare = re.sub(r"\{[^}]*\}", " ", bare)
    bare = re.sub(r"\[[^\]]*\]", " ", bare)
    bare = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", bare)
    names = re.findall(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*+)(?!\s*\()", bare)
    return {n for n in names if n.lower() not in _PROMQL_WORDS}


def registered_series() -> set[str]:
    """Every series name engine/metrics.py's Metrics can expose, plus Prometheus's own `up`."""
    names = {"up"}
    for family in Metrics().registry.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names |= {f"{family.name}_bucket", f"{family.name}_sum", f"{family.name}_count"}
        else:
            names.add(family.name)
    return names


def check_promql(expressions: dict[str, str], tmp_path: Path) -> None:
    """Parse every expression with `promtool check rules`, each one a recording rule of a generated rules file."""
    assert expressions, "no expressions to check"
    rules = [{"record": f"check:{re.sub(r'[^a-zA-Z0-9_]', '_', name)}", "expr": expr} for name, expr in expressions.items()]
    path = tmp_path / "expressions.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "checked", "rules": rules}]}, sort_keys=False))
    result = run_system_tool("promtool", "prometheus", "check", "rules", str(path))
    assert result.returncode == 0, report(result) + "\n--- rules\n" + path.read_text()
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout + result.stderr, report(result)


def run_system_tool(name: str, apt_package: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [system_tool(name, apt_package), *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )


# ---------------------------------------------------------------------------- docker-compose config


def compose_config(tmp_path: Path, **variables: str) -> dict[str, Any]:
    """`docker-compose config` with only ``variables`` set of the file's variables (an empty --env-file: no .env read)."""
    env_file = tmp_path / "compose.env"
    env_file.write_text("")
    env = {k: v for k, v in os.environ.items() if k not in COMPOSE_VARIABLES and not k.startswith(("COMPOSE_", "DOCKER_"))}
    env.update(variables)
    result = run_system_tool("docker-compose", "docker-compose", "--env-file", str(env_file), "-f", str(COMPOSE_FILE), "config", env=env)
    assert result.returncode == 0, report(result)
    assert "WARNING" not in result.stderr, report(result)
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


@pytest.fixture(scope="module")
def compose(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return compose_config(tmp_path_factory.mktemp("compose"))


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def mounts(service: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Container path -> (host path or volume name, mode) of a resolved service's volumes."""
    found = {}
    for volume in service.get("volumes", []):
        source, target, *mode = volume.split(":")
        found[target] = (source, mode[0] if mode else "rw")
    return found


def seconds(duration: str) -> float:
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"not a duration: {duration!r}"
    return sum(float(n) * units[u] for n, u in parts)


def image_port() -> int:
    (cmd,) = parse(DOCKERFILES["cpu"]).final.args("CMD")
    argv = json.loads(cmd)
    return int(argv[argv.index("--port") + 1])


def test_compose_has_the_stack(compose: dict[str, Any]) -> None:
    assert set(services(compose)) == SERVICES


def test_every_host_port_is_bound_to_loopback(compose: dict[str, Any]) -> None:
    published: dict[str, list[int]] = {}
    for name, service in services(compose).items():
        for port in service.get("ports", []):
            assert isinstance(port, str) and port.startswith("127.0.0.1:"), f"{name} publishes {port!r} beyond loopback"
            published.setdefault(name, []).append(int(port.split(":")[1]))
    assert published == PUBLISHED


def test_api_service_runs_the_cpu_image_with_the_tiered_cache(compose: dict[str, Any]) -> None:
    api = services(compose)["ml-inference-api"]
    assert (Path(api["build"]["context"]) / api["build"]["dockerfile"]).resolve() == DOCKERFILES["cpu"].resolve()
    env = api["environment"]
    assert api["ports"] == [f"127.0.0.1:8000:{image_port()}/tcp", f"127.0.0.1:8001:{env['GRPC_PORT']}/tcp"], (
        "host port 8000 maps to the port the image serves on, 8001 to its gRPC port"
    )
    assert env["CACHE_BACKEND"] == "tiered"
    assert env["REDIS_HOST"] == "redis" and int(env["REDIS_PORT"]) == 6379
    assert env["AUTH_TOKEN"] == "secret-token", "the local-only default when AUTH_TOKEN is unset"
    assert "/health/ready" in " ".join(api["healthcheck"]["test"])
    assert f"127.0.0.1:{image_port()}/health/ready" in " ".join(api["healthcheck"]["test"])
    assert seconds(api["stop_grace_period"]) > float(env["SHUTDOWN_TIMEOUT_S"]), "docker stop's SIGKILL must come after the drain"
    assert api["read_only"] is True and "/tmp" in api["tmpfs"]


def test_auth_token_comes_from_the_environment(tmp_path: Path) -> None:
    config = compose_config(tmp_path, AUTH_TOKEN="token-from-env")
    assert services(config)["ml-inference-api"]["environment"]["AUTH_TOKEN"] == "token-from-env"


def test_dependencies_wait_for_health(compose: dict[str, Any]) -> None:
    stack = services(compose)
    assert stack["ml-inference-api"]["depends_on"] == {"redis": {"condition": "service_healthy"}}
    assert stack["grafana"]["depends_on"] == {"prometheus": {"condition": "service_healthy"}}
    assert stack["prometheus"]["depends_on"] == {"ml-inference-api": {"condition": "service_started"}}
    assert stack["redis"]["image"].startswith("redis:7") and stack["redis"]["image"].endswith("-alpine")
    assert stack["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    for name, service in stack.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        for dependency in service.get("depends_on", {}):
            assert dependency in stack, f"{name} depends on an unknown {dependency}"


def test_mounted_files_exist_and_are_read_only(compose: dict[str, Any]) -> None:
    stack = services(compose)
    named_volumes = set(compose.get("volumes", {}))
    for name, service in stack.items():
        for target, (source, mode) in mounts(service).items():
            if source.startswith("/"):
                assert Path(source).exists(), f"{name} mounts {source}, which does not exist"
                assert mode == "ro", f"{name} mounts {source} writable at {target}"
            else:
                assert source in named_volumes, f"{name} mounts an undeclared volume {source}"
    prometheus = mounts(stack["prometheus"])
    assert prometheus["/etc/prometheus/prometheus.yml"] == (str(PROMETHEUS_CONFIG), "ro")
    assert prometheus["/etc/prometheus/alerts.yml"] == (str(ALERTS), "ro")
    assert "--config.file=/etc/prometheus/prometheus.yml" in stack["prometheus"]["command"]
    grafana = mounts(stack["grafana"])
    assert grafana["/etc/grafana/provisioning/datasources"] == (str(DATASOURCES.parent), "ro")
    assert grafana["/etc/grafana/provisioning/dashboards"] == (str(DASHBOARD_PROVIDERS.parent), "ro")
    (provider,) = yaml.safe_load(DASHBOARD_PROVIDERS.read_text())["providers"]
    assert grafana[provider["options"]["path"]] == (str(DASHBOARD.parent), "ro"), "the provider reads the mounted dashboards"


# ---------------------------------------------------------------------------- Prometheus


def test_prometheus_config_checks() -> None:
    result = run_system_tool("promtool", "prometheus", "check", "config", str(PROMETHEUS_CONFIG))
    assert result.returncode == 0, report(result)
    assert "SUCCESS" in result.stdout + result.stderr, report(result)


def test_prometheus_scrapes_the_api_service(compose: dict[str, Any]) -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    (job,) = (j for j in config["scrape_configs"] if j["job_name"] == "ml-inference-api")
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = [t for static in job["static_configs"] for t in static["targets"]]
    assert targets == [f"ml-inference-api:{image_port()}"], "the compose service's name and the image's port"
    assert "ml-inference-api" in services(compose)
    assert config["rule_files"] == [ALERTS.name]


def alert_expressions() -> dict[str, str]:
    rules = [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]
    return {rule["alert"]: rule["expr"] for rule in rules}


def test_alert_rules_check_and_use_real_metrics() -> None:
    result = run_system_tool("promtool", "prometheus", "check", "rules", str(ALERTS))
    assert result.returncode == 0, report(result)
    known = registered_series()
    for name, expr in alert_expressions().items():
        assert promql_metric_names(expr) <= known, f"{name}: {promql_metric_names(expr) - known} not in engine/metrics.py"


# ---------------------------------------------------------------------------- Grafana


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def dashboard_expressions() -> dict[str, str]:
    return {
        f"panel_{panel['id']}_{target['refId']}": target["expr"] for panel in dashboard()["panels"] for target in panel.get("targets", [])
    }


def test_dashboard_expressions_parse(tmp_path: Path) -> None:
    check_promql(dashboard_expressions(), tmp_path)


def test_dashboard_charts_real_metrics() -> None:
    expressions = dashboard_expressions().values()
    named = set().union(*(promql_metric_names(e) for e in expressions))
    known = registered_series()
    assert named <= known, f"not in engine/metrics.py: {sorted(named - known)}"
    assert DASHBOARD_METRICS <= named, f"not charted: {sorted(DASHBOARD_METRICS - named)}"
    assert CACHE_HIT_RATE in expressions
    for q in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({q}, sum by (le, model_version) (rate(inference_latency_ms_bucket[5m])))" in expressions


def test_dashboard_uses_the_provisioned_datasource() -> None:
    (datasource,) = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    assert datasource["type"] == "prometheus" and datasource["url"] == "http://prometheus:9090"
    board = dashboard()
    assert board["uid"] and board["title"]
    panels = board["panels"]
    assert len({p["id"] for p in panels}) == len(panels), "panel ids are unique"
    for panel in panels:
        assert 0 <= panel["gridPos"]["x"] and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": datasource["uid"]}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == datasource["uid"], panel["title"]
