"""emulator/sandbox.py (and its launcher, emulator/namespaces.py): each environment's private /tmp and read-only code folder."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from emulator.pool import WorkerPool
from emulator.template import FunctionSpec
from emulator.worker import EnvironmentOptions
from tests.conftest import REPO_ROOT
from tests.emulator.environment_harness import answer, function, invoke, require_namespaces, run_pool

HOLD_S = 0.5
"""Long enough for two concurrent invocations to overlap."""
NO_NAMESPACES_TIMEOUT_S = 60.0


async def _two_at_once(pool: WorkerPool) -> list[dict[str, Any]]:
    """Two overlapping invocations (so in two environments), writing "first" and "second"."""
    events = ({"name": name, "hold_s": HOLD_S} for name in ("first", "second"))
    invocations = await asyncio.gather(*(pool.invoke(json.dumps(event).encode()) for event in events))
    return [answer(invocation) for invocation in invocations]


def test_tmp_is_empty_at_each_cold_start_and_private_to_each_environment() -> None:
    require_namespaces()
    spec = function("temporary_folder", ephemeral_storage_mb=64)
    first, second = run_pool(spec, _two_at_once)
    assert first == {"folder": "/tmp", "before": [], "after": ["first"], "tmpdir": None, "size_mb": 64}
    assert second == {"folder": "/tmp", "before": [], "after": ["second"], "tmpdir": None, "size_mb": 64}
    assert not Path("/tmp/first").exists() and not Path("/tmp/second").exists()  # the host's /tmp is untouched
    # A new environment (after a restart) starts empty again; a warm one keeps what it wrote.
    cold, warm = invoke(spec, {"name": "third"}, {"name": "fourth"})
    assert answer(cold)["before"] == [] and answer(warm)["before"] == ["third"]


def test_the_code_folder_is_read_only_to_the_function() -> None:
    require_namespaces()
    (invocation,) = invoke(function("write_code_folder"), {"name": "written-by-a-function.txt"})
    assert answer(invocation) == {"written": False, "error": "Read-only file system"}
    assert not (REPO_ROOT / "written-by-a-function.txt").exists()


def test_a_task_root_under_tmp_stays_visible_and_read_only(tmp_path: Path) -> None:
    require_namespaces()
    root = tmp_path / "task"
    root.mkdir()
    shutil.copy(REPO_ROOT / "tests" / "emulator" / "handlers_environments.py", root)
    spec = FunctionSpec("UnderTmp", "handlers_environments.write_code_folder", REPO_ROOT)
    (invocation,) = invoke(spec, {"name": "written.txt"}, options=EnvironmentOptions(task_root=root))
    assert answer(invocation) == {"written": False, "error": "Read-only file system"}, invocation.log


def test_without_isolation_each_environment_gets_a_temporary_folder_of_its_own() -> None:
    first, second = run_pool(function("temporary_folder"), _two_at_once, options=EnvironmentOptions(isolate=False))
    assert first["folder"] != second["folder"] and first["folder"] == first["tmpdir"]
    assert Path(first["folder"]).parent == Path(tempfile.gettempdir())
    assert (first["before"], first["after"], second["before"], second["after"]) == ([], ["first"], [], ["second"])
    assert not Path(first["folder"]).exists() and not Path(second["folder"]).exists()  # deleted with their environments


# Run where user namespaces cannot be made (user.max_user_namespaces is 0 in a namespace of its own):
# the environments fall back to a TMPDIR each, and the emulator warns once.
_NO_NAMESPACES_DRIVER = """
import asyncio, json, logging, os
from emulator.pool import WorkerPool
from emulator.template import FunctionSpec
from tests.emulator.environment_harness import function
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
async def main():
    pool = WorkerPool(function("temporary_folder"), os.environ, max_concurrency=2, log_sink=lambda name, text: None)
    try:
        answers = []
        for name in ("first", "second"):
            invocation = await pool.invoke(json.dumps({"name": name}).encode())
            answers.append(json.loads(invocation.payload))
            await pool.recycle()
        print(json.dumps(answers))
    finally:
        await pool.close()
asyncio.run(main())
"""


def test_where_namespaces_are_refused_environments_get_a_tmpdir_each_and_one_warning() -> None:
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.fail("util-linux's unshare is needed to run the emulator where namespaces are refused (apt-get install util-linux)")
    script = 'echo 0 > /proc/sys/user/max_user_namespaces && exec "$0" -c "$1"'
    result = subprocess.run(
        [unshare, "--user", "--map-root-user", "sh", "-c", script, sys.executable, _NO_NAMESPACES_DRIVER],
        cwd=REPO_ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=NO_NAMESPACES_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    first, second = json.loads(result.stdout)
    assert first["tmpdir"] and first["folder"] == first["tmpdir"] and first["folder"] != second["folder"]
    assert first["before"] == [] and second["before"] == []
    warnings = [line for line in result.stderr.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1, result.stderr
    assert "share the host's /tmp" in warnings[0] and "code folder" in warnings[0] and "No space left on device" in warnings[0]


_LINKED_HANDLER = '''
import os
from pathlib import Path


def handler(event, context):
    """Reads the linked settings file, tries to write into the linked code folder and into the output folder."""
    answer = {"settings": Path("settings.yaml").read_text()}
    for key, folder in (("code", Path("app")), ("output", Path(os.environ["RESULTS_URI"].removeprefix("file://")))):
        try:
            (folder / "written.txt").write_text("x")
            answer[key] = "written"
        except OSError as exc:
            answer[key] = exc.strerror
    return answer
'''


def test_a_staged_task_root_under_tmp_links_files_and_folders_read_only_and_output_stays_writable(tmp_path: Path) -> None:
    """As a checkout under /tmp runs: the staged task root's links (a file, a folder) resolve inside the private /tmp,
    read-only, and the folder a ``file://`` variable names is writable."""
    require_namespaces()
    context, staged, output = tmp_path / "context", tmp_path / "staged", tmp_path / "context" / "results"
    (context / "app").mkdir(parents=True)
    (context / "app" / "main.py").write_text(_LINKED_HANDLER)
    (context / "settings.yaml").write_text("answer: 42\n")
    staged.mkdir()
    for name in ("app", "settings.yaml"):
        (staged / name).symlink_to(context / name)
    spec = FunctionSpec("Linked", "app.main.handler", context, environment={"RESULTS_URI": f"file://{output}/"})
    (invocation,) = invoke(spec, {}, options=EnvironmentOptions(task_root=staged))
    assert answer(invocation) == {"settings": "answer: 42\n", "code": "Read-only file system", "output": "written"}, invocation.log
    assert (output / "written.txt").read_text() == "x" and not (context / "app" / "written.txt").exists()
