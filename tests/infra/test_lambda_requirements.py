"""The Lambda image's dependency set is complete: a fresh venv with only ``.[cpu,lambda]`` answers events.

There is no Docker engine here, so this installs what Dockerfile.lambda installs (the same
sources, the same extras, non-editable) into a new venv and invokes both handlers from it, in
a process that cannot see this repository's checkout or the dev venv.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.conftest import REGISTRY_PATH, REPO_ROOT, require_models
from tests.infra.conftest import DOCKERFILES, EVENTS_DIR
from tests.infra.test_dockerfiles import parse
from tests.moto_server import CREDENTIALS_ENV, moto_server

INSTALL_TIMEOUT_S = 300
# What the image must not carry: the model build's libraries, torch, test tools.
ABSENT = ["torch", "onnx", "sklearn", "skl2onnx", "safetensors", "pytest", "moto"]
# glibc of the Lambda Python base images: python3.11 is Amazon Linux 2, 3.12 on Amazon Linux 2023.
LAMBDA_GLIBC = {"3.11": 26, "3.12": 34, "3.13": 34, "3.14": 34}

INVOKE = """
import importlib, json, sys
module = importlib.import_module(sys.argv[1])

class Context:
    function_name = "ml-inference"
    function_version = "$LATEST"
    memory_limit_in_mb = 2048
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:ml-inference"
    aws_request_id = "c0ffee00-0000-4000-8000-000000000000"
    def get_remaining_time_in_millis(self):
        return 30000

responses = [module.handler(json.load(open(path)), Context()) for path in sys.argv[3:]]
json.dump({"module_file": module.__file__, "responses": responses}, open(sys.argv[2], "w"))
"""


def copy_sources(destination: Path) -> Path:
    """What Dockerfile.lambda copies into the image to install."""
    destination.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, destination / name)
    for package in ("engine", "handlers"):
        shutil.copytree(REPO_ROOT / package, destination / package, ignore=shutil.ignore_patterns("__pycache__"))
    return destination


@pytest.fixture(scope="module")
def runtime_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv holding `pip install <sources>[cpu,lambda]`, the sources being what the image copies."""
    root = tmp_path_factory.mktemp("lambda-runtime")
    source = copy_sources(root / "src")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", f"{source}[cpu,lambda]"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
        check=False,
    )
    assert install.returncode == 0, f"pip install failed:\n{install.stdout}\n{install.stderr}"
    return python


def isolated_env(**overrides: str) -> dict[str, str]:
    """Only what a Lambda execution environment would set, plus the test's overrides."""
    env = {name: os.environ[name] for name in ("PATH", "HOME", "LANG", "TMPDIR") if name in os.environ}
    env.update(
        MODEL_REGISTRY_PATH=str(REGISTRY_PATH),  # the repository's registry and built models
        AUTH_TOKEN="secret-token",  # the token in events/*.json
        SHADOW_MODE="inline",
        ENABLE_METRICS="false",
        POWERTOOLS_TRACE_DISABLED="true",
        POWERTOOLS_METRICS_NAMESPACE="MLInferenceTest",
        AWS_LAMBDA_FUNCTION_NAME="ml-inference",
    )
    env.update(overrides)
    return env


def invoke(python: Path, module: str, events: list[str], workdir: Path, **env: str) -> dict[str, Any]:
    results = workdir / f"{module}.json"
    run = subprocess.run(
        [str(python), "-I", "-c", INVOKE, module, str(results), *(str(EVENTS_DIR / name) for name in events)],
        cwd=workdir,
        env=isolated_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, f"{module} failed:\n{run.stdout[-4000:]}\n{run.stderr[-4000:]}"
    loaded: dict[str, Any] = json.loads(results.read_text())
    assert loaded["module_file"].startswith(str(python.parents[1])), f"{module} was imported from {loaded['module_file']}"
    return loaded


def test_http_handler_answers_from_the_runtime_set(runtime_venv: Path, tmp_path: Path) -> None:
    require_models()
    loaded = invoke(runtime_venv, "handlers.lambda_http", ["http_api_predict.json", "rest_api_predict.json"], tmp_path)
    for response in loaded["responses"]:
        assert response["statusCode"] == 200, response
        body = json.loads(response["body"])
        assert body["model_version"] == "v1"
        assert body["results"][0]["prediction"] == "positive", body


@pytest.fixture
def results_bucket() -> Iterator[tuple[str, Any]]:
    with moto_server() as endpoint:
        s3 = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint,
            region_name=CREDENTIALS_ENV["AWS_DEFAULT_REGION"],
            aws_access_key_id=CREDENTIALS_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS_ENV["AWS_SECRET_ACCESS_KEY"],
        )
        s3.create_bucket(Bucket="results")
        yield endpoint, s3


def test_batch_handler_answers_from_the_runtime_set(runtime_venv: Path, tmp_path: Path, results_bucket: tuple[str, Any]) -> None:
    require_models()
    endpoint, s3 = results_bucket
    loaded = invoke(
        runtime_venv,
        "handlers.lambda_sqs",
        ["sqs_batch.json"],
        tmp_path,
        AWS_ENDPOINT_URL=endpoint,
        BATCH_RESULTS_URI="s3://results/batch/",
        **CREDENTIALS_ENV,
    )
    assert loaded["responses"] == [{"batchItemFailures": []}]
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="results")["Contents"])
    assert keys == ["batch/review-1.json", "batch/review-2.json"]
    first = json.loads(s3.get_object(Bucket="results", Key="batch/review-1.json")["Body"].read())
    assert [r["prediction"] for r in first["results"]] == ["positive", "negative"]


def test_runtime_set_leaves_out_build_and_test_packages(runtime_venv: Path) -> None:
    probe = "import importlib.util, json, sys; print(json.dumps([m for m in sys.argv[1:] if importlib.util.find_spec(m)]))"
    run = subprocess.run(
        [str(runtime_venv), "-I", "-c", probe, *ABSENT], env=isolated_env(), capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(run.stdout) == []


def test_runtime_set_has_wheels_for_the_lambda_base_image(tmp_path: Path) -> None:
    """Resolve `.[cpu,lambda]` as pip inside the image would: its Python, its glibc, wheels only."""
    dockerfile = parse(DOCKERFILES["lambda"])
    python_version = dockerfile.resolve(dockerfile.final.base).rpartition(":")[2].split("@")[0]
    glibc_minor = LAMBDA_GLIBC[python_version]
    platforms = [f"--platform=manylinux_2_{minor}_x86_64" for minor in range(17, glibc_minor + 1)]
    resolve = subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--disable-pip-version-check", "--ignore-installed",
            "--target", str(tmp_path / "target"), "--report", str(tmp_path / "report.json"),
            "--platform=manylinux2014_x86_64", *platforms, f"--python-version={python_version}", "--implementation=cp",
            "--only-binary=:all:", f"{copy_sources(tmp_path / 'src')}[cpu,lambda]",
        ],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
        check=False,
    )  # fmt: skip
    errors = "\n".join(line for line in resolve.stderr.splitlines() if line.startswith("ERROR")) or resolve.stderr[-3000:]
    assert resolve.returncode == 0, f"no wheel set for Python {python_version} on glibc 2.{glibc_minor}:\n{errors}"
    report = json.loads((tmp_path / "report.json").read_text())
    installed = {re.sub(r"[-_.]+", "-", item["metadata"]["name"]).lower() for item in report["install"]}
    assert {"onnxruntime", "mangum", "aws-lambda-powertools", "tokenizers"} <= installed
