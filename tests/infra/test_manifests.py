"""infra/: Kubernetes manifests against the API schemas; Knative / Cloud Run services by their required fields; the
capacity figures (HPA target, containerConcurrency) against the server's batcher settings."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from engine.settings import Settings
from tests.infra.conftest import DOCKERFILES, INFRA_DIR, load_yaml_documents, report, run_tool
from tests.infra.test_compose import check_promql, promql_metric_names, registered_series
from tests.infra.test_dockerfiles import parse

K8S_DIR = INFRA_DIR / "k8s"
KUBERNETES_MANIFESTS = ["deployment.yaml", "service.yaml", "ingress.yaml", "hpa.yaml", "redis.yaml"]
ADAPTER_VALUES = K8S_DIR / "prometheus-adapter-values.yaml"
APP_NAME = "ml-inference-api"  # the seed's name: `kubectl scale deployment ml-inference-api`
IN_FLIGHT_METRIC = "inference_in_flight_requests"
KNATIVE_SERVICES = {"knative": INFRA_DIR / "knative" / "service.yaml", "cloudrun": INFRA_DIR / "cloudrun" / "service.yaml"}


@pytest.mark.parametrize("name", KUBERNETES_MANIFESTS)
def test_kubernetes_manifest_validates_strictly(name: str) -> None:
    path = K8S_DIR / name
    result = run_tool("kubernetes-validate", "--strict", str(path))
    assert result.returncode == 0, report(result)
    output = result.stdout + result.stderr
    assert "Couldn't find schema" not in output and "WARN" not in output, report(result)
    assert output.count(" passed for resource ") == len(load_yaml_documents(path)), report(result)


def test_kustomization_lists_every_manifest() -> None:
    (kustomization,) = load_yaml_documents(K8S_DIR / "kustomization.yaml")
    assert kustomization["kind"] == "Kustomization"
    assert sorted(kustomization["resources"]) == sorted(KUBERNETES_MANIFESTS)


def container(service: dict[str, Any]) -> dict[str, Any]:
    (only,) = service["spec"]["template"]["spec"]["containers"]
    found: dict[str, Any] = only
    return found


def env_of(c: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


@pytest.mark.parametrize("name", sorted(KNATIVE_SERVICES))
def test_knative_service_has_the_required_fields(name: str) -> None:
    (service,) = load_yaml_documents(KNATIVE_SERVICES[name])
    assert (service["apiVersion"], service["kind"]) == ("serving.knative.dev/v1", "Service")
    assert service["metadata"]["name"]
    spec = service["spec"]["template"]["spec"]
    assert isinstance(spec["containerConcurrency"], int) and spec["containerConcurrency"] > 0
    c = container(service)
    assert c["image"]
    assert [p["containerPort"] for p in c["ports"]] == [8080]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    env = env_of(c)
    assert env["EXECUTION_PROVIDERS"].split(",")[0] == "CUDAExecutionProvider"
    assert "secretKeyRef" in env["AUTH_TOKEN"], "the token comes from a secret"
    probe: dict[str, Any] = c.get("readinessProbe") or c["startupProbe"]
    assert probe["httpGet"]["path"] == "/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert spec["containerConcurrency"] == batcher_capacity(c), "containerConcurrency = INSTANCES x BATCH_SIZE"


def test_knative_service_autoscales_on_concurrency() -> None:
    (service,) = load_yaml_documents(KNATIVE_SERVICES["knative"])
    annotations = service["spec"]["template"]["metadata"]["annotations"]
    assert annotations["autoscaling.knative.dev/metric"] == "concurrency"
    for key in ("class", "target", "min-scale", "max-scale"):
        assert f"autoscaling.knative.dev/{key}" in annotations
    concurrency = service["spec"]["template"]["spec"]["containerConcurrency"]
    target = int(annotations["autoscaling.knative.dev/target"]) * int(annotations["autoscaling.knative.dev/target-utilization-percentage"])
    assert 0.6 <= target / 100 / concurrency <= 0.8, "scale out at ~70% of containerConcurrency"
    assert 1 <= int(annotations["autoscaling.knative.dev/min-scale"]) <= int(annotations["autoscaling.knative.dev/max-scale"])
    assert container(service)["readinessProbe"]["httpGet"]["path"] == "/health/ready"


def test_cloud_run_service_asks_for_an_l4() -> None:
    (service,) = load_yaml_documents(KNATIVE_SERVICES["cloudrun"])
    template = service["spec"]["template"]
    assert template["spec"]["nodeSelector"]["run.googleapis.com/accelerator"] == "nvidia-l4"
    assert template["metadata"]["annotations"]["run.googleapis.com/cpu-throttling"] == "false"
    limits = container(service)["resources"]["limits"]
    assert int(limits["cpu"]) >= 4 and limits["memory"].endswith("Gi") and int(limits["memory"][:-2]) >= 16
    assert service["metadata"]["labels"]["cloud.googleapis.com/location"]
    annotations = template["metadata"]["annotations"]
    assert 0 <= int(annotations["autoscaling.knative.dev/minScale"]) <= int(annotations["autoscaling.knative.dev/maxScale"])
    c = container(service)
    assert c["startupProbe"]["httpGet"] == {"path": "/health/ready", "port": 8080}
    assert c["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": 8080}
    # Cloud Run sends SIGKILL 10 s after SIGTERM: the drain must end before.
    assert float(env_of(c).get("SHUTDOWN_TIMEOUT_S", default("shutdown_timeout_s"))) < 10


@pytest.mark.parametrize(("manifest", "dockerfile"), [(K8S_DIR / "deployment.yaml", "cpu"), (KNATIVE_SERVICES["knative"], "gpu")])
def test_manifest_port_is_the_images(manifest: Path, dockerfile: str) -> None:
    image = parse(DOCKERFILES[dockerfile]).final
    (cmd,) = image.args("CMD")
    port = int(json.loads(cmd)[json.loads(cmd).index("--port") + 1])
    grpc_port = int(image_env(image)["GRPC_PORT"])
    assert image.args("EXPOSE") == [f"{port} {grpc_port}"]
    resource = next(d for d in load_yaml_documents(manifest) if d["kind"] in {"Deployment", "Service"})
    ports = [p["containerPort"] for p in container(resource)["ports"]]
    # Knative and Cloud Run route one port: HTTP only there, with the image's gRPC server turned off.
    assert ports == ([port, grpc_port] if resource["kind"] == "Deployment" else [port])


@pytest.mark.parametrize("name", sorted(KNATIVE_SERVICES))
def test_single_port_services_turn_the_images_grpc_server_off(name: str) -> None:
    (service,) = load_yaml_documents(KNATIVE_SERVICES[name])
    assert env_of(container(service))["GRPC_PORT"] == ""
    assert Settings.from_values({"grpc_port": ""}).grpc_port is None


def image_env(image: Any) -> dict[str, str]:
    """The final stage's ENV, as NAME -> value (``ENV A=1 B=2``)."""
    return dict(pair.split("=", 1) for arguments in image.args("ENV") for pair in arguments.split())


def test_deployment_and_service_serve_grpc_on_the_images_port() -> None:
    grpc_port = image_env(parse(DOCKERFILES["cpu"]).final)["GRPC_PORT"]
    c = container(k8s("deployment.yaml", "Deployment"))
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"http": 8080, "grpc": int(grpc_port)}
    assert env_of(c)["GRPC_PORT"] == grpc_port
    (grpc,) = (p for p in k8s("service.yaml", "Service")["spec"]["ports"] if p["name"] == "grpc")
    assert grpc["targetPort"] == "grpc" and grpc["appProtocol"] == "kubernetes.io/h2c", "gRPC is HTTP/2 without TLS"


# ---------------------------------------------------------------------------- capacity and lifecycle


def default(field: str) -> Any:
    return Settings.model_fields[field].default


def cpus(quantity: str) -> float:
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def batcher_capacity(c: dict[str, Any]) -> int:
    """Single-text requests the server's batcher holds at once: INSTANCES concurrent batches (0: one per CPU of the
    limit, engine/cpus.py) x BATCH_SIZE inputs each."""
    env = env_of(c)
    instances = int(env.get("INSTANCES", default("instances")))
    if instances == 0:
        instances = max(1, math.ceil(cpus(c["resources"]["limits"]["cpu"])))
    return instances * int(env.get("BATCH_SIZE", default("batch_size")))


def k8s(name: str, kind: str) -> dict[str, Any]:
    (found,) = (d for d in load_yaml_documents(K8S_DIR / name) if d["kind"] == kind)
    return found


def test_kubernetes_keeps_the_seed_names() -> None:
    deployment, service = k8s("deployment.yaml", "Deployment"), k8s("service.yaml", "Service")
    assert deployment["metadata"]["name"] == service["metadata"]["name"] == APP_NAME
    assert k8s("ingress.yaml", "Ingress")["metadata"]["name"] == k8s("hpa.yaml", "HorizontalPodAutoscaler")["metadata"]["name"] == APP_NAME
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items(), "the Service selects the Deployment's pods"


def test_deployment_probes_and_graceful_shutdown() -> None:
    deployment = k8s("deployment.yaml", "Deployment")
    c = container(deployment)
    assert c["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert c["startupProbe"]["httpGet"]["path"] in {"/health/ready", "/health/live"}
    env = env_of(c)
    assert env["CACHE_BACKEND"] == "tiered" and env["REDIS_HOST"] == k8s("redis.yaml", "Service")["metadata"]["name"]
    command = c["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep" and len(command) == 2
    pre_stop_s = float(command[1])
    assert 1 <= pre_stop_s <= 10, "a few seconds for the endpoints to drop the pod before SIGTERM"
    drain_s = float(env.get("SHUTDOWN_TIMEOUT_S", default("shutdown_timeout_s")))
    grace_s = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace_s > pre_stop_s + drain_s, "the kubelet's SIGKILL comes after preStop and the server's drain"


def test_ingress_routes_to_the_service() -> None:
    ingress, service = k8s("ingress.yaml", "Ingress"), k8s("service.yaml", "Service")
    port_names = {p["name"] for p in service["spec"]["ports"]}
    paths = [path for rule in ingress["spec"]["rules"] for path in rule["http"]["paths"]]
    assert {p["path"] for p in paths} >= {"/api", "/health"}
    assert "/metrics" not in {p["path"] for p in paths} and "/" not in {p["path"] for p in paths}, "/metrics stays in the cluster"
    for path in paths:
        backend = path["backend"]["service"]
        assert backend["name"] == service["metadata"]["name"] and backend["port"]["name"] in port_names


def test_hpa_scales_on_cpu_and_in_flight_requests() -> None:
    hpa, deployment = k8s("hpa.yaml", "HorizontalPodAutoscaler"), k8s("deployment.yaml", "Deployment")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment["metadata"]["name"]}
    by_type = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert by_type["Resource"]["resource"]["name"] == "cpu"
    pods = by_type["Pods"]["pods"]
    assert pods["metric"]["name"] == IN_FLIGHT_METRIC
    assert pods["target"]["type"] == "AverageValue"
    share = float(pods["target"]["averageValue"]) / batcher_capacity(container(deployment))
    assert 0.6 <= share <= 0.8, f"scale out at ~70% of the batcher's capacity, not {share:.0%}"


def adapter_rules() -> list[dict[str, Any]]:
    (values,) = load_yaml_documents(ADAPTER_VALUES)
    assert values["rules"]["default"] is False
    rules: list[dict[str, Any]] = values["rules"]["custom"]
    return rules


def test_prometheus_adapter_serves_the_hpa_metric(tmp_path: Path) -> None:
    (rule,) = adapter_rules()
    assert rule["name"]["as"] == IN_FLIGHT_METRIC
    assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
    assert promql_metric_names(rule["seriesQuery"]) == {IN_FLIGHT_METRIC} and IN_FLIGHT_METRIC in registered_series()
    # The adapter's templates, filled as it would for `kubectl get --raw .../pods/*/inference_in_flight_requests`.
    metrics_query = (
        rule["metricsQuery"]
        .replace("<<.Series>>", IN_FLIGHT_METRIC)
        .replace("<<.LabelMatchers>>", 'namespace="default",pod=~"ml-inference-api-.*"')
        .replace("<<.GroupBy>>", "pod")
    )
    assert "<<" not in metrics_query, metrics_query
    check_promql({"series_query": rule["seriesQuery"], "metrics_query": metrics_query}, tmp_path)


def test_every_deployment_runs_in_production_with_the_token_from_a_secret() -> None:
    # ENVIRONMENT=production refuses the development default token: a missing secret fails the
    # rollout instead of serving the public API with `secret-token`.
    services = {name: container(load_yaml_documents(path)[0]) for name, path in KNATIVE_SERVICES.items()}
    services["kubernetes"] = container(k8s("deployment.yaml", "Deployment"))
    for name, c in services.items():
        env = env_of(c)
        assert env["ENVIRONMENT"] == "production", name
        assert "secretKeyRef" in env["AUTH_TOKEN"], name
