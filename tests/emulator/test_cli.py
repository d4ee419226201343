"""``mlinfer invoke``, like ``sam local invoke``: the response on stdout, the log and REPORT on stderr."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT
from tests.emulator.conftest import TEST_TEMPLATE


def _invoke(function: str, event: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "handlers.cli", "invoke", function, "-e", str(event), "--template", str(TEST_TEMPLATE)]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False)


def test_invoke_prints_the_response_then_the_report(tmp_path: Path) -> None:
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"hello": "world"}))
    result = _invoke("Echo", event)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"hello": "world"}
    assert "START RequestId: " in result.stderr and "echo: request " in result.stderr
    report = result.stderr.strip().splitlines()[-1]
    assert report.startswith("REPORT RequestId: ") and "Init Duration: " in report and "Memory Size: 256 MB" in report


def test_invoke_of_a_failing_function_exits_1(tmp_path: Path) -> None:
    event = tmp_path / "event.json"
    event.write_text("{}")
    result = _invoke("Fail", event)
    assert result.returncode == 1
    assert json.loads(result.stdout)["errorType"] == "ValueError"
