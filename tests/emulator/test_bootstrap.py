"""emulator/bootstrap.py: what a function can import, and the per-invocation context it gets, in real environments."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

from emulator.pool import InvokeOptions
from emulator.python_runtime import function_arn
from emulator.template import FunctionSpec
from emulator.worker import EnvironmentOptions
from tests.conftest import REPO_ROOT
from tests.emulator.environment_harness import answer, function, invoke

NEW_TRACE_ID = re.compile(r"^Root=1-[0-9a-f]{8}-[0-9a-f]{24};Parent=[0-9a-f]{16};Sampled=0$")


def test_the_function_imports_only_from_its_task_root_and_its_interpreters_site_packages(tmp_path: Path) -> None:
    root = tmp_path / "task"
    root.mkdir()
    shutil.copy(REPO_ROOT / "tests" / "emulator" / "handlers_environments.py", root)
    spec = FunctionSpec("Imports", "handlers_environments.imports", REPO_ROOT)
    modules = ["emulator", "emulator.pool", "tests", "handlers", "engine", "python_runtime_missing", "awslambdaric", "yaml"]
    (invocation,) = invoke(spec, {"modules": modules}, options=EnvironmentOptions(task_root=root))
    found = answer(invocation)
    for name in ("emulator", "emulator.pool", "tests", "handlers", "engine"):
        assert found["modules"][name].startswith("ImportError: No module named"), (name, found)
    assert Path(found["modules"]["awslambdaric"]).is_relative_to(sys.prefix)  # the interpreter's site-packages
    assert Path(found["modules"]["yaml"]).is_relative_to(sys.prefix)
    assert found["sys_path"][0] == str(root)
    assert not any(Path(entry) in (REPO_ROOT, REPO_ROOT / "emulator") for entry in found["sys_path"]), found["sys_path"]
    assert found["executable"] == sys.executable


def test_with_the_repository_as_task_root_its_packages_are_the_functions_code() -> None:
    (invocation,) = invoke(function("imports"), {"modules": ["tests.emulator.handlers_environments", "engine"]})
    found = answer(invocation)["modules"]
    assert found["tests.emulator.handlers_environments"] == str(REPO_ROOT / "tests" / "emulator" / "handlers_environments.py")
    assert found["engine"] == str(REPO_ROOT / "engine" / "__init__.py")


def test_client_context_trace_id_and_invoked_arn_reach_the_handler() -> None:
    client_context = {"client": {"installation_id": "install-1"}, "custom": {"tenant": "a"}, "env": {"locale": "en"}}
    trace = "Root=1-67891233-abcdef012345678912345678;Parent=53995c3f42cd8ad8;Sampled=1"
    arn = function_arn("EnvContextView") + ":live"
    options = InvokeOptions(client_context=json.dumps(client_context), trace_id=trace, invoked_arn=arn)
    given, untraced = invoke(function("context_view"), {}, {}, invoke_options=options)
    seen = answer(given)
    assert seen["client_context"] == {"custom": {"tenant": "a"}, "env": {"locale": "en"}}
    assert seen["installation_id"] == "install-1"
    assert (seen["trace_id"], seen["invoked_function_arn"]) == (trace, arn)
    (default,) = invoke(function("context_view"), {})
    seen = answer(default)
    assert seen["client_context"] is None and NEW_TRACE_ID.match(seen["trace_id"]), seen["trace_id"]
    assert seen["invoked_function_arn"] == function_arn("EnvContextView")  # unqualified
    assert answer(untraced)["trace_id"] == trace  # set per invocation, from each request


def test_a_published_version_runs_with_its_version_everywhere() -> None:
    (invocation,) = invoke(function("context_view"), {}, invoke_options=InvokeOptions(version="1"))
    seen = answer(invocation)
    assert (seen["function_version"], seen["version_variable"]) == ("1", "1")
    assert re.fullmatch(r"\d{4}/\d{2}/\d{2}/\[1\][0-9a-f]{32}", seen["log_stream_name"]), seen["log_stream_name"]
    assert invocation.executed_version == "1"
    assert invocation.log.startswith(f"START RequestId: {invocation.request_id} Version: 1\n")
