"""One execution environment: a process running ``emulator.bootstrap`` for one function.

It is started (the cold start: the handler module is imported and timed), then handles one
invocation at a time until it is killed. The function's environment is exactly what Lambda
would set, plus the few host variables a local process needs to run (PATH, HOME, locale, the
host's AWS credentials and endpoints, as ``sam local`` passes them).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emulator.template import FunctionSpec

STREAM_LIMIT = 16 * 1024 * 1024
"""Largest reply line: Lambda's 6 MB payload limit, JSON-escaped, with its log."""
INIT_TIMEOUT_S = 10.0
"""Lambda's init phase limit; a slower init is retried within the invocation's own timeout."""
_HOST_VARIABLES = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")
_EMULATOR_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class EnvironmentOptions:
    """How the emulator builds each execution environment of a function."""

    memory_limit: bool = True
    """Enforce the function's MemorySize (``Runtime.OutOfMemory``); ``--no-memory-limit`` turns it off."""
    isolate: bool = True
    """A private, empty /tmp and a read-only code folder, where the OS allows it."""
    python: str = sys.executable
    """The interpreter of the function: its image's dependency set (a venv), or the dev venv's (``--use-dev-env``)."""
    task_root: Path | None = None
    """The code folder as the image lays it out (only what the Dockerfile copies); None: the spec's code_root."""


DEFAULT_ENVIRONMENT = EnvironmentOptions()


class WorkerTimeout(Exception):
    """The environment did not answer in time; it has been killed."""

    def __init__(self, max_memory_mb: int) -> None:
        super().__init__(f"timed out, {max_memory_mb} MB used")
        self.max_memory_mb = max_memory_mb


class WorkerDied(Exception):
    """The environment's process exited while it was initialising or invoking."""


@dataclass(frozen=True)
class Reply:
    """What the environment answered: ``kind`` is "result", "error" or "init_error"."""

    kind: str
    payload: bytes
    log: str
    duration_ms: float = 0.0
    max_memory_mb: int = 0


def environment(spec: FunctionSpec, host: Mapping[str, str]) -> dict[str, str]:
    """The variables of the function's process: host essentials, Lambda's own, then the template's."""
    region = host.get("AWS_REGION") or host.get("AWS_DEFAULT_REGION") or "us-east-1"
    passed = {k: v for k, v in host.items() if k in _HOST_VARIABLES or k.startswith("AWS_")}
    python_path = [str(spec.code_root), str(_EMULATOR_ROOT), *filter(None, [host.get("PYTHONPATH")])]
    return {
        **passed,
        "PYTHONPATH": ":".join(dict.fromkeys(python_path)),
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "AWS_LAMBDA_FUNCTION_NAME": spec.name,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_mb),
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{spec.name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": f"$LATEST/{spec.name}/local",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "LAMBDA_TASK_ROOT": str(spec.code_root),
        "_HANDLER": spec.handler,
        "TZ": ":UTC",
        **spec.environment,
    }


class Worker:
    def __init__(self, process: asyncio.subprocess.Process, init_ms: float, init_log: str) -> None:
        self._process = process
        self.init_ms = init_ms
        self.init_log = init_log
        self.invocations = 0
        self._abandoned = False

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def alive(self) -> bool:
        return self._process.returncode is None and not self._abandoned

    def abandon(self) -> None:
        """Kill now, without waiting: the invocation was cancelled and its reply will never be read."""
        self._abandoned = True
        if self._process.returncode is None:
            self._process.kill()

    @classmethod
    async def start(cls, spec: FunctionSpec, host_environment: Mapping[str, str]) -> tuple[Worker | None, Reply]:
        """A started environment and its "ready" reply, or None and the "init_error" reply.

        The reply's ``duration_ms`` is the Init Duration: from process start (the runtime's own
        start-up) to the handler module imported.
        """
        started = time.perf_counter()
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "emulator.bootstrap",
            spec.handler,
            cwd=spec.code_root,
            env=environment(spec, host_environment),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=STREAM_LIMIT,
        )
        reply = await cls._read(process, INIT_TIMEOUT_S + spec.timeout_s)
        reply = dataclasses.replace(reply, duration_ms=(time.perf_counter() - started) * 1000.0)
        if reply.kind != "ready":
            await _kill(process)
            return None, reply
        return cls(process, reply.duration_ms, reply.log), reply

    async def invoke(self, request: dict[str, Any], timeout_s: float) -> Reply:
        assert self._process.stdin is not None
        self.invocations += 1
        self._process.stdin.write(json.dumps(request).encode() + b"\n")
        await self._process.stdin.drain()
        return await self._read(self._process, timeout_s)

    async def kill(self) -> None:
        await _kill(self._process)

    @staticmethod
    async def _read(process: asyncio.subprocess.Process, timeout_s: float) -> Reply:
        assert process.stdout is not None
        try:
            line = await asyncio.wait_for(process.stdout.readline(), timeout_s)
        except TimeoutError:
            peak = peak_memory_mb(process.pid)
            await _kill(process)
            raise WorkerTimeout(peak) from None
        if not line:
            code = await process.wait()
            raise WorkerDied(f"exit status {code}" if code >= 0 else f"signal: {-code}")
        message = json.loads(line)
        duration = message.get("init_ms", message.get("duration_ms", 0.0))
        return Reply(
            kind=message["kind"],
            payload=message.get("payload", "").encode(),
            log=message["log"],
            duration_ms=duration,
            max_memory_mb=message.get("max_memory_mb", 0),
        )


def peak_memory_mb(pid: int) -> int:
    """The process's peak resident memory (VmHWM), read before it is killed; 0 where unknown."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    return 0


async def _kill(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.kill()
    await process.wait()
