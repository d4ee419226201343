"""Each image's tree runs: what a Dockerfile copies and installs, laid out in a folder, does what the image does.

There is no container engine here, so every stage of every Dockerfile is laid out by
``tests/infra/trees.py``: the COPY instructions (parsed, not listed here) copy into a folder
standing for the image's root, and the RUN steps are redone into fresh venvs. Then each image's
command runs from its folder, with nothing of this checkout or the dev venv on its path:

- the models stage (the same in all three Dockerfiles, built once): ``mlinfer build-models``;
- Dockerfile.lambda: the handlers under the real ``python -m awslambdaric``, fed events by the
  emulator's Runtime API (the server of ``mlinfer emulate --runtime-api-port``), as the Lambda base runs them;
- Dockerfile.cpu and Dockerfile.gpu: ``mlinfer serve`` up to /health and one prediction.

``make images`` builds the real images (tests/infra/images/).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
import yaml

from tests.conftest import MODELS_DIR
from tests.infra.conftest import DOCKERFILES, EVENTS_DIR, load_template
from tests.infra.runners import TOKEN, invoke, lambda_runtime, runtime_api, served, with_loopback
from tests.infra.test_dockerfiles import parse
from tests.infra.trees import StageTree, TreeBuilder, base_python, image_command
from tests.moto_server import CREDENTIALS_ENV, moto_server
from tests.network import free_port

# What no runtime image may carry: the model build and its libraries, the emulator, torch, test tools.
# (tqdm is not among them: tokenizers pulls it, through huggingface-hub.)
ABSENT = ["modelbuild", "emulator", "torch", "onnx", "sklearn", "skl2onnx", "safetensors", "pytest", "moto"]
# glibc of the Lambda Python base images: python3.11 is Amazon Linux 2, 3.12 on Amazon Linux 2023.
LAMBDA_GLIBC = {"3.11": 26, "3.12": 34, "3.13": 34, "3.14": 34}
MODELS_STAGE_FROM = "cpu"  # the models stage is the same in every Dockerfile: laid out once, from this one


def onnxruntime_gpu_hint(output: str) -> str:
    version = re.search(r"onnxruntime-gpu==([\w.]+)", output)
    pin = f"onnxruntime-gpu=={version.group(1)}" if version else "onnxruntime-gpu"
    return (
        f"pip cannot install {pin} here (its wheel comes from PyPI, files.pythonhosted.org). Make PyPI reachable,"
        f" or fetch the wheel where it is (`pip download --no-deps {pin} -d WHEELS`) and point pip at it"
        " (PIP_FIND_LINKS=WHEELS), then rerun."
    )


HINTS = {"onnxruntime-gpu": onnxruntime_gpu_hint}


def lay_out_models(workspace: Path) -> StageTree:
    """The models stage, laid out and run. Its /build/models starts as a copy of this checkout's
    models/ (built by `make test`'s set-up), as a layer cache would: ``mlinfer build-models`` there
    finds them up to date when the stage installed the same inputs, code and library versions, and
    builds them all (about 8 minutes) when not. ``make images`` builds them from nothing."""
    stages = {name: parse(path).stage("models") for name, path in DOCKERFILES.items()}
    reference = stages[MODELS_STAGE_FROM].steps()
    for name, stage in stages.items():
        assert stage.steps() == reference, f"the models stage of {DOCKERFILES[name].name} differs from {MODELS_STAGE_FROM}'s"
    dockerfile = parse(DOCKERFILES[MODELS_STAGE_FROM])
    return TreeBuilder(dockerfile, workspace, hints=HINTS).build(dockerfile.stage("models"), cached={"/build/models": MODELS_DIR})


def lay_out(name: str, models: Future[StageTree], workspace: Path) -> StageTree:
    """Every stage of the Dockerfile but models (laid out once, for all) and the image-only ones (uv's)."""
    dockerfile = parse(DOCKERFILES[name])
    builder = TreeBuilder(dockerfile, workspace, trees={"models": models}, hints=HINTS)
    for stage in dockerfile.stages[:-1]:
        if stage.name != "models" and stage.instructions:
            builder.build(stage)
    return builder.build(dockerfile.final)


@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Future[StageTree]]]:
    """Every image's tree, laid out side by side: the runtime stages install while the models
    build, and wait for them only where they copy them."""
    with ThreadPoolExecutor(max_workers=1 + len(DOCKERFILES), thread_name_prefix="image-tree") as pool:
        models = pool.submit(lay_out_models, tmp_path_factory.mktemp("models-stage"))
        laid_out = {name: pool.submit(lay_out, name, models, tmp_path_factory.mktemp(f"{name}-image")) for name in sorted(DOCKERFILES)}
        yield {"models": models, **laid_out}


@pytest.fixture(scope="module")
def models_tree(trees: dict[str, Future[StageTree]]) -> StageTree:
    return trees["models"].result()


@pytest.fixture(scope="module")
def lambda_tree(trees: dict[str, Future[StageTree]]) -> StageTree:
    return trees["lambda"].result()


@pytest.fixture(scope="module")
def cpu_tree(trees: dict[str, Future[StageTree]]) -> StageTree:
    return trees["cpu"].result()


@pytest.fixture(scope="module")
def gpu_tree(trees: dict[str, Future[StageTree]]) -> StageTree:
    return trees["gpu"].result()


def registry_model_files(tree: StageTree) -> list[Path]:
    """Every model file the image's registry names, where the image has it."""
    registry_path = Path(tree.runtime_env()["MODEL_REGISTRY_PATH"])
    registry = yaml.safe_load(registry_path.read_text())
    return [registry_path.parent / version["path"] for model in registry["models"].values() for version in model["versions"].values()]


def probe(python: Path, tree: StageTree, code: str, *args: str) -> Any:
    run = subprocess.run(
        [str(python), "-c", code, *args],
        cwd=tree.host(tree.workdir),
        env=tree.runtime_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


FIND = """
import importlib.util, importlib.metadata, json, sys
found = [m for m in sys.argv[1:] if importlib.util.find_spec(m)]
origins = {m: importlib.util.find_spec(m).origin for m in ("engine", "handlers", "onnxruntime")}
dists = sorted(d.metadata["Name"].lower() for d in importlib.metadata.distributions())
print(json.dumps({"found": found, "origins": origins, "dists": dists}))
"""


def assert_runtime_only(python: Path, tree: StageTree) -> dict[str, Any]:
    """The image's Python sees the image's code and none of the build's or tests' packages."""
    seen: dict[str, Any] = probe(python, tree, FIND, *ABSENT)
    assert seen["found"] == [], f"{tree.name}: the runtime can import {seen['found']}"
    for module, origin in seen["origins"].items():
        assert origin.startswith(str(tree.root)), f"{module} comes from {origin}, not from the image's tree {tree.root}"
    return seen


# ---- the models stage ----


def test_models_stage_builds_every_model_the_registry_names(models_tree: StageTree, lambda_tree: StageTree) -> None:
    built = models_tree.host("/build/models")
    assert (built / "manifest.json").is_file()
    files = registry_model_files(lambda_tree)
    assert files and all(path.is_file() for path in files), [str(p) for p in files if not p.is_file()]
    assert all(str(path).startswith(str(lambda_tree.root)) for path in files)


# ---- Dockerfile.lambda ----


def lambda_env(tree: StageTree, **overrides: str) -> dict[str, str]:
    """The image's ENV plus what the Lambda service sets (and no X-Ray daemon to send traces to)."""
    return tree.runtime_env(
        AUTH_TOKEN=TOKEN,
        POWERTOOLS_TRACE_DISABLED="true",
        POWERTOOLS_METRICS_NAMESPACE="MLInferenceTest",
        AWS_LAMBDA_FUNCTION_NAME="ml-inference",
        AWS_LAMBDA_FUNCTION_MEMORY_SIZE="2048",
        AWS_REGION="us-east-1",
        **overrides,
    )


def handler_command(tree: StageTree, function: str) -> list[str]:
    """The image's command for a template function: its ImageConfig.Command in place of the CMD."""
    command = image_command(tree)
    (handler,) = load_template()["Resources"][function]["Properties"]["ImageConfig"]["Command"]
    assert command[-2:] == ["awslambdaric", json.loads(parse(DOCKERFILES["lambda"]).final.args("CMD")[0])[0]]
    return [*command[:-1], handler]


def test_lambda_http_handler_answers_under_awslambdaric(lambda_tree: StageTree, tmp_path: Path) -> None:
    with (
        runtime_api("InferenceFunction", tmp_path / "emulator.log") as api,
        lambda_runtime(
            handler_command(lambda_tree, "InferenceFunction"),
            env=lambda_env(lambda_tree),
            cwd=lambda_tree.host(lambda_tree.workdir),
            log_path=tmp_path / "runtime.log",
            api=api,
        ) as runtime_log,
    ):
        for event in ("http_api_predict.json", "rest_api_predict.json"):
            response = invoke(api, (EVENTS_DIR / event).read_bytes())
            assert response["statusCode"] == 200, (event, response, runtime_log.read_text()[-4000:])
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


def test_lambda_batch_handler_answers_under_awslambdaric(lambda_tree: StageTree, tmp_path: Path, results_bucket: tuple[str, Any]) -> None:
    endpoint, s3 = results_bucket
    env = lambda_env(lambda_tree, AWS_ENDPOINT_URL=endpoint, BATCH_RESULTS_URI="s3://results/batch/", **CREDENTIALS_ENV)
    with (
        runtime_api("BatchFunction", tmp_path / "emulator.log") as api,
        lambda_runtime(
            handler_command(lambda_tree, "BatchFunction"),
            env=env,
            cwd=lambda_tree.host(lambda_tree.workdir),
            log_path=tmp_path / "runtime.log",
            api=api,
        ),
    ):
        assert invoke(api, (EVENTS_DIR / "sqs_batch.json").read_bytes()) == {"batchItemFailures": []}
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="results")["Contents"])
    assert keys == ["batch/review-1.json", "batch/review-2.json"]
    first = json.loads(s3.get_object(Bucket="results", Key="batch/review-1.json")["Body"].read())
    assert [r["prediction"] for r in first["results"]] == ["positive", "negative"]


def test_lambda_tree_leaves_out_build_and_test_packages(lambda_tree: StageTree) -> None:
    seen = assert_runtime_only(base_python(lambda_tree), lambda_tree)
    assert seen["origins"]["engine"].startswith(str(lambda_tree.host("/var/task/engine")))


def test_lambda_runtime_set_has_wheels_for_the_lambda_base_image(tmp_path: Path) -> None:
    """Resolve the runtime stage's install as pip inside the image would: its Python, its glibc, wheels only."""
    dockerfile = parse(DOCKERFILES["lambda"])
    python_version = dockerfile.resolve(dockerfile.final.base).rpartition(":")[2].split("@")[0]
    glibc_minor = LAMBDA_GLIBC[python_version]
    (install,) = [cmd for cmd in dockerfile.final.args("RUN") if "pip install" in cmd]
    (source,) = re.findall(r'"(/[^"\[]+)\[cpu,lambda\]"', install)
    tree = TreeBuilder(dockerfile, tmp_path / "copied").build(dockerfile.final, run=False)  # the COPYs only
    platforms = [f"--platform=manylinux_2_{minor}_x86_64" for minor in range(17, glibc_minor + 1)]
    resolve = subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--disable-pip-version-check", "--ignore-installed",
            "--target", str(tmp_path / "target"), "--report", str(tmp_path / "report.json"),
            "--platform=manylinux2014_x86_64", *platforms, f"--python-version={python_version}", "--implementation=cp",
            "--only-binary=:all:", f"{tree.host(source)}[cpu,lambda]",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )  # fmt: skip
    errors = "\n".join(line for line in resolve.stderr.splitlines() if line.startswith("ERROR")) or resolve.stderr[-3000:]
    assert resolve.returncode == 0, f"no wheel set for Python {python_version} on glibc 2.{glibc_minor}:\n{errors}"
    report = json.loads((tmp_path / "report.json").read_text())
    installed = {re.sub(r"[-_.]+", "-", item["metadata"]["name"]).lower() for item in report["install"]}
    assert {"onnxruntime", "mangum", "aws-lambda-powertools", "tokenizers"} <= installed


# ---- Dockerfile.cpu and Dockerfile.gpu ----


def serve_and_predict(tree: StageTree, tmp_path: Path) -> tuple[dict[str, Any], str]:
    port = free_port()
    command = with_loopback(image_command(tree), port)
    env = tree.runtime_env(AUTH_TOKEN=TOKEN, HOST="127.0.0.1", PORT=str(port), LOG_LEVEL="INFO")
    with served(command, env=env, cwd=tree.host(tree.workdir), log_path=tmp_path / "server.log", port=port) as server:
        health = server.health()
        status, body = server.predict(["I love this!"])
        assert status == 200, body
        assert body["results"][0]["prediction"] == "positive", body
        assert httpx.get(f"{server.base_url}/health", timeout=10).status_code == 200
    return health, (tmp_path / "server.log").read_text(errors="replace")


def test_cpu_image_serves(cpu_tree: StageTree, tmp_path: Path) -> None:
    seen = assert_runtime_only(Path(image_command(cpu_tree)[0]), cpu_tree)
    assert "onnxruntime" in seen["dists"] and "onnxruntime-gpu" not in seen["dists"]
    health, _ = serve_and_predict(cpu_tree, tmp_path)
    assert health["providers"] == ["CPUExecutionProvider"], health


def test_the_cli_of_a_serving_image_runs_and_names_the_missing_tools(cpu_tree: StageTree) -> None:
    """The image carries neither the model build nor the emulator: `mlinfer` still runs, and their
    subcommands say how to get them instead of failing on an import."""
    command = image_command(cpu_tree)
    mlinfer = command[: command.index("serve")]  # the image's own way to start `mlinfer`

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*mlinfer, *args], cwd=cpu_tree.host(cpu_tree.workdir), env=cpu_tree.runtime_env(), capture_output=True, text=True, timeout=60
        )

    assert run("serve", "--help").returncode == 0
    for args, extra in ((["build-models", "--output", "/nonexistent"], "[build]"), (["emulate"], "[emulator]")):
        result = run(*args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert "not installed here" in result.stderr and extra in result.stderr and "Traceback" not in result.stderr, result.stderr


def gpu_present() -> bool:
    return Path("/dev/nvidia0").exists() or Path("/proc/driver/nvidia/gpus").is_dir()


def test_gpu_image_serves_falling_back_to_cpu_without_a_gpu(gpu_tree: StageTree, tmp_path: Path) -> None:
    seen = assert_runtime_only(Path(image_command(gpu_tree)[0]), gpu_tree)
    # onnxruntime-gpu alone provides the `onnxruntime` module: the CPU build must not be beside it.
    assert "onnxruntime-gpu" in seen["dists"] and "onnxruntime" not in seen["dists"], seen["dists"]
    assert "EXECUTION_PROVIDERS" in gpu_tree.env and "CUDAExecutionProvider" in gpu_tree.env["EXECUTION_PROVIDERS"]
    health, log = serve_and_predict(gpu_tree, tmp_path)
    if gpu_present():
        assert "CUDAExecutionProvider" in health["providers"], (health, log[-4000:])
    else:
        # What ONNX Runtime does without a GPU: the CUDA provider's library does not load (no CUDA
        # libraries: "Failed to create CUDAExecutionProvider" in the log) and the sessions run on CPU.
        assert health["providers"] == ["CPUExecutionProvider"], (health, log[-4000:])
        assert "CUDAExecutionProvider" in log, log[-4000:]
        # The fallback is named, not silent: in /health, and in the log.
        assert "sentiment_analysis:v1" in health["gpu_fallback"], health
        assert "CPU fallback" in log, log[-4000:]
