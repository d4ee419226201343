"""The image's dependency set in a cached venv, and its task root: a function sees what its image has, nothing more.

Fixture images are written into each test's folder: a Dockerfile laid out as Dockerfile.lambda
(a copied pyproject.toml installed with extras, code and a models stage copied into the task root)
whose dependency set is one tiny pure-Python package from PyPI. One test builds the real
Dockerfile.lambda's dependency set (in the user's cache, as the emulator does, so only its first
run downloads onnxruntime and the rest).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from emulator.image_env import ImageEnvironment, default_cache_dir, image_environment, stage_task_root, zip_environment
from emulator.image_plan import ImageEnvironmentError, LocalFiles, dockerfile_command, image_plan
from emulator.sandbox import linked_sources
from tests.conftest import REPO_ROOT, require_models

RUN_TIMEOUT_S = 60
BUILD_TIMEOUT_S = 300
BUILD_SCRIPT = """
import sys
from pathlib import Path
from emulator.image_env import image_environment
env = image_environment(Path(sys.argv[1]) / "Dockerfile", Path(sys.argv[1]), cache_dir=Path(sys.argv[2]), log=print)
print("python", env.python)
"""
REAL_BUILD_LOG = "real dependency set"

FIXTURE_DOCKERFILE = """\
# syntax=docker/dockerfile:1
ARG BASE_IMAGE=public.ecr.aws/lambda/python:3.12

FROM ${BASE_IMAGE} AS models
WORKDIR /src
COPY app/ app/
RUN pip install --no-cache-dir onnx \\
 && mlinfer build-models --quiet --output /build/models

FROM ${BASE_IMAGE}
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=models /build/models ${LAMBDA_TASK_ROOT}/models
COPY pyproject.toml README.md /tmp/src/
RUN pip install --no-cache-dir --target "${LAMBDA_TASK_ROOT}" "/tmp/src[lambda]" \\
 && rm -rf /tmp/src
COPY settings.yaml ${LAMBDA_TASK_ROOT}/
COPY app/ ${LAMBDA_TASK_ROOT}/app/
CMD ["app.main.handler"]
"""


def write_pyproject(context: Path, dependency: str) -> None:
    (context / "pyproject.toml").write_text(
        f"""[build-system]
requires = ["setuptools>=77"]
build-backend = "setuptools.build_meta"

[project]
name = "fixture-function"
version = "0.1.0"
readme = "README.md"
dependencies = []

[project.optional-dependencies]
lambda = ["{dependency}"]

[tool.setuptools.packages.find]
include = ["app*"]
"""
    )


def make_context(folder: Path, dependency: str = "idna") -> Path:
    """A build context laid out as the repository's: code, a test folder, a tool, built models."""
    folder.mkdir(parents=True)
    (folder / "Dockerfile").write_text(FIXTURE_DOCKERFILE)
    write_pyproject(folder, dependency)
    (folder / "README.md").write_text("The fixture function.\n")
    (folder / "settings.yaml").write_text("answer: 42\n")
    for package, body in (("app", "def handler(event, context):\n    return event\n"), ("tests", ""), ("tool", "")):
        (folder / package).mkdir()
        (folder / package / "__init__.py").write_text("")
        (folder / package / "main.py").write_text(body)
    (folder / "models").mkdir()
    (folder / "models" / "manifest.json").write_text("{}")
    return folder


def imports(env: ImageEnvironment, module: str) -> subprocess.CompletedProcess[str]:
    """``import module`` with the environment's interpreter, from its task root, with nothing else on its path."""
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    command = [str(env.python), "-c", f"import {module}"]
    return subprocess.run(command, cwd=env.task_root, env=clean, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False)


def assert_imports(env: ImageEnvironment, *modules: str) -> None:
    for module in modules:
        result = imports(env, module)
        assert result.returncode == 0, f"import {module}: {result.stderr}"


def assert_missing(env: ImageEnvironment, *modules: str) -> None:
    for module in modules:
        result = imports(env, module)
        assert result.returncode == 1 and f"No module named '{module.split('.')[0]}'" in result.stderr, (module, result.stderr)


@pytest.fixture(scope="module")
def fixture_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("image-env-cache")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, fixture_cache: Path) -> tuple[Path, ImageEnvironment, list[str]]:
    """The fixture image's environment, built once by two emulator processes started together: (its context, it,
    what both printed)."""
    context = make_context(tmp_path_factory.mktemp("image") / "context")
    command = [sys.executable, "-c", BUILD_SCRIPT, str(context), str(fixture_cache)]
    builders = [subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = []
    for builder in builders:
        try:
            outputs.append(builder.communicate(timeout=BUILD_TIMEOUT_S)[0])
        finally:
            builder.kill()
        assert builder.returncode == 0, outputs[-1]
    env = image_environment(context / "Dockerfile", context, cache_dir=fixture_cache, log=[].append)
    assert all(output.splitlines()[-1] == f"python {env.python}" for output in outputs), outputs
    return context, env, [line for output in outputs for line in output.splitlines()]


def test_two_emulators_build_the_venv_once(built: tuple[Path, ImageEnvironment, list[str]]) -> None:
    _, env, lines = built
    building = [line for line in lines if line.startswith("building the image's dependency set")]
    assert building == [f"building the image's dependency set ({env.dependency_hash[:12]}) ..."], lines
    assert len([line for line in lines if line.startswith("built the image's dependency set")]) == 1, lines


def test_the_venv_has_the_dependency_set_and_the_base_image_packages(built: tuple[Path, ImageEnvironment, list[str]]) -> None:
    _, env, _ = built
    assert_imports(env, "idna", "awslambdaric", "boto3", "app.main")


def test_a_module_outside_the_dependency_set_is_missing(built: tuple[Path, ImageEnvironment, list[str]]) -> None:
    """What the dev venv has and the image does not (test tools, the emulator's own code) fails to import, as on AWS."""
    _, env, _ = built
    assert_missing(env, "pytest", "moto", "yaml", "emulator", "tests", "tool")


def test_a_second_call_reuses_the_venv(built: tuple[Path, ImageEnvironment, list[str]], fixture_cache: Path) -> None:
    context, env, _ = built
    lines: list[str] = []
    started = time.perf_counter()
    again = image_environment(context / "Dockerfile", context, cache_dir=fixture_cache, log=lines.append)
    assert time.perf_counter() - started < 1.0
    assert again == env
    assert not [line for line in lines if "dependency set" in line], lines


def test_a_changed_dependency_set_gets_its_own_venv(
    built: tuple[Path, ImageEnvironment, list[str]], fixture_cache: Path, tmp_path: Path
) -> None:
    """pyproject.toml is hashed; the README beside it is not (it changes no dependency)."""
    _, env, _ = built
    context = make_context(tmp_path / "context", dependency="iniconfig")
    (context / "README.md").write_text("Another text.\n")
    changed = image_environment(context / "Dockerfile", context, cache_dir=tmp_path / "cache", log=[].append)
    assert changed.dependency_hash != env.dependency_hash and changed.python != env.python
    assert_imports(changed, "iniconfig")
    assert_missing(changed, "idna")
    write_pyproject(context, "idna")
    plan = image_plan(context / "Dockerfile", context)
    assert plan.dependency_hash("3.12.0") != plan.dependency_hash("3.11.0")
    lines: list[str] = []
    assert image_environment(context / "Dockerfile", context, cache_dir=fixture_cache, log=lines.append).python == env.python
    assert not [line for line in lines if "building" in line], lines


def test_the_task_root_holds_only_what_the_dockerfile_copies(built: tuple[Path, ImageEnvironment, list[str]]) -> None:
    context, env, _ = built
    assert sorted(os.listdir(env.task_root)) == ["app", "models", "settings.yaml"]
    assert linked_sources(env.task_root) == [context / "app", context / "models", context / "settings.yaml"]


def test_copies_into_one_folder_merge_as_docker_merges_them(tmp_path: Path) -> None:
    """A folder's content lands in the destination; a later COPY adds to it or replaces a file; .dockerignore applies."""
    context = tmp_path / "context"
    for name in ("lib/a.py", "lib/b.py", "extra/b.py", "extra/c.py", "top.txt", "local.env"):
        (context / name).parent.mkdir(parents=True, exist_ok=True)
        (context / name).write_text(name)
    (context / ".dockerignore").write_text("local.env\n")
    (context / "Dockerfile").write_text(
        "FROM public.ecr.aws/lambda/python:3.12\nCOPY lib/ pkg/\nCOPY extra/ ${LAMBDA_TASK_ROOT}/pkg/\nCOPY . ./\n"
    )
    task_root = stage_task_root(image_plan(context / "Dockerfile", context), tmp_path / "cache")
    assert sorted(os.listdir(task_root)) == sorted(["pkg", "lib", "extra", "top.txt", "Dockerfile", ".dockerignore"])
    assert {name: (task_root / "pkg" / name).read_text() for name in os.listdir(task_root / "pkg")} == {
        "a.py": "lib/a.py",
        "b.py": "extra/b.py",
        "c.py": "extra/c.py",
    }
    assert all(context in source.parents for source in linked_sources(task_root))


def test_the_python_version_warning_names_both_versions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``python3.12`` on PATH that is not 3.12 is not taken: the emulator's Python builds the venv, with one warning."""
    wrong = tmp_path / "bin" / "python3.12"
    wrong.parent.mkdir()
    wrong.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    wrong.chmod(0o755)
    monkeypatch.setenv("PATH", f"{wrong.parent}{os.pathsep}{os.environ['PATH']}")
    code = tmp_path / "code"
    code.mkdir()
    lines: list[str] = []
    for _ in range(2):
        env = zip_environment(code, cache_dir=tmp_path / "cache", log=lines.append, runtime="python3.12")
    own = f"{sys.version_info.major}.{sys.version_info.minor}"
    warnings = [line for line in lines if line.startswith("warning:")]
    assert len(warnings) == 1 and "Python 3.12" in warnings[0] and f"Python {own}" in warnings[0], lines
    assert env.task_root == code
    assert_imports(env, "awslambdaric", "boto3")
    assert_missing(env, "idna")


def test_a_zip_function_gets_its_requirements_txt(tmp_path: Path) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "requirements.txt").write_text("idna\n")
    own = f"python{sys.version_info.major}.{sys.version_info.minor}"
    lines: list[str] = []
    env = zip_environment(code, cache_dir=tmp_path / "cache", log=lines.append, runtime=own)
    assert env.task_root == code and not [line for line in lines if line.startswith("warning:")]
    assert_imports(env, "idna", "awslambdaric")
    assert_missing(env, "pytest")


def test_missing_models_say_how_to_build_them(tmp_path: Path) -> None:
    context = make_context(tmp_path / "context")
    (context / "models" / "manifest.json").unlink()
    (context / "models").rmdir()
    with pytest.raises(ImageEnvironmentError) as raised:
        image_environment(context / "Dockerfile", context, cache_dir=tmp_path / "cache")
    assert str(raised.value) == "models/ is not built: run `make models` (or `mlinfer build-models`)"


def test_a_failed_install_gives_pips_error_and_the_way_out(tmp_path: Path) -> None:
    context = make_context(tmp_path / "context", dependency="idna==0.0.0.1")
    with pytest.raises(ImageEnvironmentError) as raised:
        image_environment(context / "Dockerfile", context, cache_dir=tmp_path / "cache", log=[].append)
    message = str(raised.value)
    assert "\n" not in message and "ERROR:" in message and "idna==0.0.0.1" in message and "--use-dev-env" in message, message
    assert not list((tmp_path / "cache" / "venvs").glob("*/bin")), "a failed build is removed"


def test_the_real_dockerfile_is_read_without_building(tmp_path: Path) -> None:
    require_models()
    plan = image_plan(REPO_ROOT / "Dockerfile.lambda", REPO_ROOT)
    (install,) = plan.installs
    assert install.requirements() == ["/tmp/src[cpu,lambda]"]
    (source,) = install.arguments
    assert isinstance(source, LocalFiles) and source.extras == "[cpu,lambda]"
    assert dict(source.files) == {"pyproject.toml": REPO_ROOT / "pyproject.toml", "README.md": REPO_ROOT / "README.md"}
    assert [package.partition("==")[0] for package in plan.base_packages] == ["awslambdaric", "boto3"]
    assert plan.python_version == "3.12"
    task_root = stage_task_root(plan, tmp_path)
    assert sorted(os.listdir(task_root)) == ["engine", "handlers", "model_registry.yaml", "models"]
    assert dockerfile_command(REPO_ROOT / "Dockerfile.lambda") == ["handlers.lambda_http.handler"]


def test_the_real_dependency_set_runs_the_handlers_imports_and_nothing_else() -> None:
    """The real image's set, built into the user's cache as ``mlinfer emulate`` does (cold: a minute or more)."""
    require_models()
    lines: list[str] = []
    started = time.perf_counter()
    env = image_environment(REPO_ROOT / "Dockerfile.lambda", REPO_ROOT, cache_dir=default_cache_dir(), log=lines.append)
    elapsed = time.perf_counter() - started
    print(f"{REAL_BUILD_LOG}: {elapsed:.1f} s ({'built' if any('building' in line for line in lines) else 'cached'})")
    # The HTTP handler's module builds the engine at import, as its cold start does: every import of the image's code works.
    assert_imports(env, "onnxruntime, mangum, aws_lambda_powertools, awslambdaric, boto3", "handlers.lambda_http")
    assert_missing(env, "moto", "pytest", "emulator", "tests", "modelbuild", "sklearn", "onnx")
