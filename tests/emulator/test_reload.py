"""Code reload: a real worker pool whose code folder changes under watchfiles."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path

import pytest

from emulator.pool import Executor, WorkerPool
from emulator.reload import ignored, watch, written_folders
from emulator.template import FunctionSpec

CHANGE_TIMEOUT_S = 15.0
HANDLER = "VERSION = {version}\n\n\ndef handler(event, context):\n    return {{'version': VERSION, 'pid': __import__('os').getpid()}}\n"


def test_what_is_no_code(tmp_path: Path) -> None:
    written = [tmp_path / "results"]
    for path in ("__pycache__/app.cpython-311.pyc", ".git/index", ".venv/lib/x.py", "app.pyc", "logs/a.txt", "run.log", "results/1.json"):
        assert ignored(tmp_path / path, tmp_path, written), path
    for path in ("app.py", "pkg/module.py", "model_registry.yaml", ".env", "models/v1/model.onnx"):
        assert not ignored(tmp_path / path, tmp_path, written), path
    assert ignored(Path("/elsewhere/app.py"), tmp_path)
    assert ignored(tmp_path, tmp_path)  # a folder itself is never a change of code


def test_the_folders_a_function_writes_to_are_its_output() -> None:
    spec = FunctionSpec("F", "m.h", Path("."), environment={"OUT": "file:///var/out/", "OTHER": "s3://b/p/", "EMPTY": "file://"})
    pool: Executor = WorkerPool(spec, {}, max_concurrency=1, log_sink=lambda _f, _t: None)
    assert written_folders({"F": pool}) == [Path("/var/out")]


async def _invoke(pool: WorkerPool) -> tuple[dict[str, int], bool]:
    invocation = await pool.invoke(b"{}")
    assert not invocation.function_error, invocation.payload
    return json.loads(invocation.payload), invocation.init_ms is not None


async def _until_logged(caplog: pytest.LogCaptureFixture, text: str, touch: Path, content: str) -> None:
    """Write ``content`` until the watcher reports it (it may not be watching yet when first written)."""
    deadline = asyncio.get_running_loop().time() + CHANGE_TIMEOUT_S
    while not any(text in record.getMessage() for record in caplog.records):
        assert asyncio.get_running_loop().time() < deadline, f"no {text!r} within {CHANGE_TIMEOUT_S} s: {caplog.text}"
        touch.write_text(content)
        await asyncio.sleep(1.0)


def test_a_changed_file_replaces_the_warm_environments(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="emulator.reload")
    (tmp_path / "pkg").mkdir()
    module = tmp_path / "pkg" / "reloaded.py"
    module.write_text(HANDLER.format(version=1))
    spec = FunctionSpec("Reloaded", "pkg.reloaded.handler", tmp_path, timeout_s=3.0)

    async def scenario() -> None:
        pool = WorkerPool(spec, os.environ, max_concurrency=1, log_sink=lambda _f, _t: None)
        watching = asyncio.create_task(watch([tmp_path], {"Reloaded": pool}))
        try:
            first, cold = await _invoke(pool)
            again, cold_again = await _invoke(pool)
            assert (first["version"], cold, again["pid"], cold_again) == (1, True, first["pid"], False)
            # Compiled files are no change of code: the environment stays warm.
            (tmp_path / "pkg" / "__pycache__").mkdir(exist_ok=True)
            (tmp_path / "pkg" / "__pycache__" / "reloaded.cpython-311.pyc").write_bytes(b"x")
            (tmp_path / "emulator.log").write_text("a log line\n")
            await asyncio.sleep(1.0)
            assert "environments replaced" not in caplog.text
            assert (await _invoke(pool))[0]["pid"] == first["pid"]
            await _until_logged(caplog, "pkg/reloaded.py changed: Reloaded environments replaced", module, HANDLER.format(version=2))
            changed, cold_after = await _invoke(pool)
            assert (changed["version"], cold_after) == (2, True) and changed["pid"] != first["pid"]
        finally:
            watching.cancel()
            await asyncio.gather(watching, return_exceptions=True)
            await pool.close()
        assert watching.cancelled() or watching.exception() is None

    asyncio.run(asyncio.wait_for(scenario(), 60))
    replaced = [record for record in caplog.records if "environments replaced" in record.getMessage()]
    assert all(record.levelno == logging.INFO for record in replaced)


def test_an_image_functions_code_is_what_its_dockerfile_copies() -> None:
    from emulator.reload import code_paths, replace
    from emulator.template import load_functions
    from tests.conftest import REPO_ROOT

    spec = load_functions(REPO_ROOT / "template.yaml")["InferenceFunction"]
    scope = code_paths(spec)
    assert scope is not None and REPO_ROOT / "handlers" in scope and REPO_ROOT / "model_registry.yaml" in scope
    assert code_paths(FunctionSpec("Zip", "m.h", REPO_ROOT)) is None  # a Zip function: its whole CodeUri
    pool: Executor = WorkerPool(spec, {}, max_concurrency=1, log_sink=lambda _f, _t: None)
    assert asyncio.run(replace([REPO_ROOT / "modelbuild" / "build.py", REPO_ROOT / "tests" / "conftest.py"], {"F": pool})) == []
    assert asyncio.run(replace([REPO_ROOT / "handlers" / "app.py"], {"F": pool})) == ["F"]
