"""The infrastructure linters (in their own venv, `make tools`) and readers for the files they check."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO_ROOT

TOOLS_BIN = REPO_ROOT / ".venv-tools" / "bin"
TEMPLATE = REPO_ROOT / "template.yaml"
EVENTS_DIR = REPO_ROOT / "events"
INFRA_DIR = REPO_ROOT / "infra"
DOCKERFILES = {
    "lambda": REPO_ROOT / "Dockerfile.lambda",
    "gpu": REPO_ROOT / "Dockerfile.gpu",
    "cpu": INFRA_DIR / "docker" / "Dockerfile.cpu",
}


def tool(name: str) -> Path:
    path = TOOLS_BIN / name
    if not path.is_file():
        pytest.fail(f"{path} is missing: run `make tools` (`make test` does) to install the infrastructure linters in .venv-tools")
    return path


def system_tool(name: str, apt_package: str) -> str:
    """A checker that comes from a Debian package on PATH (not from .venv-tools); fail, naming the package, when missing."""
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"`{name}` is not on PATH: install it with `sudo apt-get install -y {apt_package}` (`make tools` does, as root)")
    return found


def tool_env() -> dict[str, str]:
    """No AWS credentials, profile or region from the caller: the linters must work offline without them."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    env.update(
        SAM_CLI_TELEMETRY="0",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    )
    return env


def run_tool(name: str, *args: str, timeout: float = 180.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tool(name)), *args], cwd=REPO_ROOT, env=tool_env(), capture_output=True, text=True, timeout=timeout, check=False
    )


def report(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


class _CloudFormationLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short forms (!Ref, !Sub, !If, ...) read as their long forms."""


def _intrinsic(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if tag_suffix == "Ref" else f"Fn::{tag_suffix}"
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if tag_suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {name: value}


_CloudFormationLoader.add_multi_constructor("!", _intrinsic)


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.load(path.read_text(), Loader=_CloudFormationLoader)
    return loaded


def load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
