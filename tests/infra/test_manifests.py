"""infra/: Kubernetes manifests against the API schemas; Knative / Cloud Run services by their required fields."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.infra.conftest import DOCKERFILES, INFRA_DIR, load_yaml_documents, report, run_tool
from tests.infra.test_dockerfiles import parse

K8S_DIR = INFRA_DIR / "k8s"
KUBERNETES_MANIFESTS = ["deployment.yaml", "service.yaml", "hpa.yaml", "redis.yaml"]
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
    assert probe["httpGet"]["path"] == "/health"


def test_knative_service_autoscales_on_concurrency() -> None:
    (service,) = load_yaml_documents(KNATIVE_SERVICES["knative"])
    annotations = service["spec"]["template"]["metadata"]["annotations"]
    assert annotations["autoscaling.knative.dev/metric"] == "concurrency"
    for key in ("class", "target", "min-scale", "max-scale"):
        assert f"autoscaling.knative.dev/{key}" in annotations
    assert int(annotations["autoscaling.knative.dev/target"]) <= service["spec"]["template"]["spec"]["containerConcurrency"]
    assert container(service)["readinessProbe"]["httpGet"]["path"] == "/health"


def test_cloud_run_service_asks_for_an_l4() -> None:
    (service,) = load_yaml_documents(KNATIVE_SERVICES["cloudrun"])
    template = service["spec"]["template"]
    assert template["spec"]["nodeSelector"]["run.googleapis.com/accelerator"] == "nvidia-l4"
    assert template["metadata"]["annotations"]["run.googleapis.com/cpu-throttling"] == "false"
    limits = container(service)["resources"]["limits"]
    assert int(limits["cpu"]) >= 4 and limits["memory"].endswith("Gi") and int(limits["memory"][:-2]) >= 16
    assert service["metadata"]["labels"]["cloud.googleapis.com/location"]


@pytest.mark.parametrize(("manifest", "dockerfile"), [(K8S_DIR / "deployment.yaml", "cpu"), (KNATIVE_SERVICES["knative"], "gpu")])
def test_manifest_port_is_the_images(manifest: Path, dockerfile: str) -> None:
    image = parse(DOCKERFILES[dockerfile]).final
    (cmd,) = image.args("CMD")
    port = int(json.loads(cmd)[json.loads(cmd).index("--port") + 1])
    assert image.args("EXPOSE") == [str(port)]
    resource = next(d for d in load_yaml_documents(manifest) if d["kind"] in {"Deployment", "Service"})
    assert [p["containerPort"] for p in container(resource)["ports"]] == [port]
