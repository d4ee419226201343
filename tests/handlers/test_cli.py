"""The ``mlinfer`` command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT


def _mlinfer(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "handlers.cli", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False
    )


def test_help_lists_the_commands() -> None:
    result = _mlinfer("--help")
    assert result.returncode == 0
    assert "serve" in result.stdout and "build-models" in result.stdout


def test_build_models_skips_an_up_to_date_build(models_dir: Path) -> None:
    result = _mlinfer("build-models", "--quiet", "--output", str(models_dir))
    assert result.returncode == 0, result.stderr
    assert "already up to date" in result.stdout


def test_unknown_command_fails() -> None:
    result = _mlinfer("frobnicate")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr
