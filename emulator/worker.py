"""One execution environment: a process running the bootstrap for one version of one function.

It is started (the cold start: the handler module is imported and timed), then handles one
invocation at a time until it is killed. Its process:

- is ``<options.python> <emulator>/bootstrap.py <handler>``, run by file path in the task root,
  so that the function's interpreter and imports are its own (see ``emulator.bootstrap``);
- runs in its sandbox (``emulator.sandbox``): a private /tmp and a read-only code folder where
  the OS allows it, a TMPDIR of its own otherwise;
- has exactly the environment Lambda would set, plus the few host variables a local process
  needs to run (PATH, HOME, locale, the host's AWS credentials and endpoints, as ``sam local``
  passes them);
- has its memory watched while it initialises and invokes (``emulator.memory``): over the
  function's MemorySize it is killed (``WorkerOutOfMemory``);
- writes its output to a file the emulator made and reads after each phase, so that what a
  function printed before it was killed (timeout, out of memory, crash) is still its log;
- leads a process group of its own: killing the environment kills whatever it started.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from emulator import limits, sandbox
from emulator.function_errors import exit_reason
from emulator.memory import MemoryWatch
from emulator.template import IMAGE_TASK_ROOT, FunctionSpec

BOOTSTRAP = Path(__file__).resolve().with_name("bootstrap.py")
HEADER_LIMIT = 64 * 1024
"""Longest reply header line; the payload follows it, with its length in the header."""
MAX_PAYLOAD_BYTES = limits.SYNC_RESPONSE_BYTES.value
"""A larger response is read and dropped: the invocation fails with Function.ResponseSizeTooLarge."""
INIT_TIMEOUT_S = float(limits.INIT_TIMEOUT_S.value)
"""Lambda's init phase limit; a slower init is retried within the invocation's own timeout."""
_HOST_VARIABLES = ("PATH", "HOME", "LANG", "LC_ALL", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")
_CHUNK = 1024 * 1024
"""How Lambda (Go's ``os/exec``) names the signal that ended a runtime."""


@dataclass(frozen=True)
class EnvironmentOptions:
    """How the emulator builds each execution environment of a function."""

    memory_limit: bool = True
    """Enforce the function's MemorySize (``Runtime.OutOfMemory``); ``--no-memory-limit`` turns it off."""
    isolate: bool = True
    """A private, empty /tmp and a read-only code folder, where the OS allows it; off: a TMPDIR of its own only."""
    python: str = sys.executable
    """The interpreter of the function: its image's dependency set (a venv), or the dev venv's (``--use-dev-env``)."""
    task_root: Path | None = None
    """The code folder as the image lays it out (only what the Dockerfile copies); None: the spec's code_root."""


DEFAULT_ENVIRONMENT = EnvironmentOptions()


class WorkerLost(Exception):
    """The environment's process is gone (and reaped); ``log`` is what it printed in the phase it was in."""

    def __init__(self, reason: str, log: str, max_memory_mb: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.log = log
        self.max_memory_mb = max_memory_mb


class WorkerTimeout(WorkerLost):
    """The environment did not answer in time; it has been killed."""


class WorkerOutOfMemory(WorkerLost):
    """The environment exceeded the function's MemorySize; it has been killed."""


class WorkerDied(WorkerLost):
    """The environment's process exited while it was initialising or invoking; ``reason`` as Lambda words it."""


@dataclass(frozen=True)
class Reply:
    """What the environment answered: ``kind`` is "ready", "init_error", "result" or "error"."""

    kind: str
    payload: bytes
    log: str
    duration_ms: float = 0.0
    max_memory_mb: int = 0
    too_large: bool = False
    """The response was over ``MAX_PAYLOAD_BYTES``; ``payload`` is empty then."""


def task_root(spec: FunctionSpec, options: EnvironmentOptions = DEFAULT_ENVIRONMENT) -> Path:
    """The function's code folder: ``LAMBDA_TASK_ROOT``, the working directory, first on ``sys.path``."""
    return options.task_root or spec.code_root


def log_stream_name(version: str) -> str:
    """A new environment's log stream, named as Lambda names them: ``2026/12/01/[$LATEST]<32 hex digits>``."""
    return f"{datetime.now(UTC):%Y/%m/%d}/[{version}]{uuid.uuid4().hex}"


def environment(
    spec: FunctionSpec,
    host: Mapping[str, str],
    options: EnvironmentOptions = DEFAULT_ENVIRONMENT,
    *,
    version: str = "$LATEST",
) -> dict[str, str]:
    """The variables of one new environment of the function: host essentials, Lambda's own, then the template's.

    The interpreter's folder leads PATH (a ``python`` the function starts is its own); neither the
    host's PYTHONPATH nor its TMPDIR is passed: the task root is the function's only path, and
    its temporary folder is its sandbox's.
    """
    region = host.get("AWS_REGION") or host.get("AWS_DEFAULT_REGION") or "us-east-1"
    passed = {k: v for k, v in host.items() if k in _HOST_VARIABLES or k.startswith("AWS_")}
    root = str(task_root(spec, options))
    path = ":".join(dict.fromkeys([str(Path(options.python).parent), *filter(None, host.get("PATH", "").split(":"))]))
    return {
        **passed,
        "PATH": path,
        "PYTHONPATH": root,
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "AWS_LAMBDA_FUNCTION_NAME": spec.name,
        "AWS_LAMBDA_FUNCTION_VERSION": version,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_mb),
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{spec.name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": log_stream_name(version),
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "LAMBDA_TASK_ROOT": root,
        "_HANDLER": spec.handler,
        "TZ": ":UTC",
        **{key: _in_task_root(value, root) for key, value in spec.environment.items()},
    }


def _in_task_root(value: str, root: str) -> str:
    """A variable naming ``/var/task`` (``MODEL_REGISTRY_PATH=/var/task/model_registry.yaml``) names the local task root."""
    if value == IMAGE_TASK_ROOT or value.startswith(IMAGE_TASK_ROOT + "/"):
        return root + value[len(IMAGE_TASK_ROOT) :]
    return value


class Worker:
    def __init__(
        self,
        process: asyncio.subprocess.Process,
        capture: IO[bytes],
        box: sandbox.Sandbox,
        *,
        memory_limit_mb: int | None,
        version: str,
        generation: int,
    ) -> None:
        self._process = process
        self._capture = capture
        self._sandbox = box
        self._memory_limit_mb = memory_limit_mb
        self.version = version
        self.generation = generation
        """The pool's generation when it started: an older one is retired after its invocation."""
        self.init_ms = 0.0
        self.init_log = ""
        self.invocations = 0

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def namespaces(self) -> bool:
        """Whether the environment has a private /tmp and a read-only code folder (else a TMPDIR of its own)."""
        return self._sandbox.namespaces

    @property
    def alive(self) -> bool:
        return self._process.returncode is None

    @classmethod
    async def start(
        cls,
        spec: FunctionSpec,
        host_environment: Mapping[str, str],
        options: EnvironmentOptions = DEFAULT_ENVIRONMENT,
        *,
        version: str = "$LATEST",
        generation: int = 0,
        on_spawn: Callable[[Worker], None] | None = None,
    ) -> tuple[Worker | None, Reply]:
        """A started environment and its "ready" reply, or None and the "init_error" reply.

        ``on_spawn`` gets the worker as soon as its process runs, before its init: whoever stops
        every environment (the pool's ``close``) then reaches one still initialising.

        The reply's ``duration_ms`` is the Init Duration: from process start (the sandbox's set-up
        and the runtime's own start-up) to the handler module imported. Raises ``WorkerLost``
        when the process timed out, ran out of memory or died during init.
        """
        root = task_root(spec, options)
        box = await sandbox.open_sandbox(
            spec.name,
            task_root=root,
            python=Path(options.python),
            tmp_mb=spec.ephemeral_storage_mb,
            isolate=options.isolate,
            environment=spec.environment,
            keep=[BOOTSTRAP.parent],
        )
        capture = tempfile.TemporaryFile()
        started = time.perf_counter()
        try:
            process = await asyncio.create_subprocess_exec(
                *box.command([options.python, str(BOOTSTRAP), spec.handler]),
                cwd=root,
                env={**environment(spec, host_environment, options, version=version), **box.environment()},
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=capture,
                start_new_session=True,
                limit=HEADER_LIMIT,
            )
        except (OSError, asyncio.CancelledError) as exc:  # cancelled: asyncio has killed and reaped the process it was starting
            box.close()
            capture.close()
            if isinstance(exc, OSError):
                raise WorkerDied(f"{options.python}: {exc.strerror or exc}", "", 0) from exc
            raise
        limit = spec.memory_mb if options.memory_limit else None
        worker = cls(process, capture, box, memory_limit_mb=limit, version=version, generation=generation)
        if on_spawn is not None:
            on_spawn(worker)
        try:
            reply = await worker._exchange(INIT_TIMEOUT_S + spec.timeout_s)
        except asyncio.CancelledError:  # e.g. the emulator stops during a warm-up or a cold start
            await worker.kill()
            raise
        reply = dataclasses.replace(reply, duration_ms=(time.perf_counter() - started) * 1000.0)
        if reply.kind != "ready":
            await worker.kill()
            return None, reply
        worker.init_ms, worker.init_log = reply.duration_ms, reply.log
        return worker, reply

    async def invoke(self, request: dict[str, Any], timeout_s: float) -> Reply:
        """One invocation; raises ``WorkerLost`` (the process is then gone) on a timeout, out of memory or a crash."""
        assert self._process.stdin is not None
        self.invocations += 1
        try:
            self._process.stdin.write(json.dumps(request).encode() + b"\n")
            await self._process.stdin.drain()
        except ConnectionError:  # it died while idle
            code = await self._process.wait()
            log = self._drain()
            await self.kill()
            raise WorkerDied(exit_reason(code), log, 0) from None
        return await self._exchange(timeout_s)

    def kill_now(self) -> None:
        """SIGKILL to the environment's process group, without waiting: whoever awaits its init or invocation sees it exit."""
        if self._process.returncode is None:
            _kill_group(self._process.pid)

    async def kill(self) -> None:
        """SIGKILL to the environment's process group, then wait for its exit (a killed process exits, whatever it was doing)."""
        self.kill_now()
        await self._process.wait()
        self._close()

    def _close(self) -> None:
        self._sandbox.close()
        self._capture.close()

    async def _exchange(self, timeout_s: float) -> Reply:
        """The next reply, with the phase's log and peak memory, the memory watched meanwhile."""
        watch = MemoryWatch(self.pid, self._memory_limit_mb)
        watching = asyncio.create_task(watch.run())
        try:
            try:
                received = await asyncio.wait_for(self._receive(), timeout_s)
            finally:
                watch.stop()
                await watching
        except TimeoutError:
            log = self._drain()
            await self.kill()
            raise WorkerTimeout(f"timed out after {timeout_s:.2f} s", log, watch.peak_mb()) from None
        if watch.exceeded:  # killed while it ran, or its peak was over the limit when it answered
            log = self._drain()
            await self.kill()
            raise WorkerOutOfMemory(exit_reason(-signal.SIGKILL), log, watch.peak_mb())
        if received is None:
            code = await self._process.wait()
            log = self._drain()
            await self.kill()
            raise WorkerDied(exit_reason(code), log, watch.peak_mb())
        header, payload, too_large = received
        return Reply(
            kind=header["kind"],
            payload=payload,
            log=self._drain(),
            duration_ms=header.get("init_ms", header.get("duration_ms", 0.0)),
            max_memory_mb=watch.peak_mb(),
            too_large=too_large,
        )

    async def _receive(self) -> tuple[dict[str, Any], bytes, bool] | None:
        """A header and its payload (dropped past ``MAX_PAYLOAD_BYTES``); None when the process ended first."""
        stdout = self._process.stdout
        assert stdout is not None
        try:
            line = await stdout.readline()
            if not line:
                return None
            header: dict[str, Any] = json.loads(line)
            size = int(header["payload_bytes"])
            if size <= MAX_PAYLOAD_BYTES:
                return header, await stdout.readexactly(size), False
            while size > 0:
                size -= len(await stdout.readexactly(min(size, _CHUNK)))
            return header, b"", True
        except asyncio.IncompleteReadError:
            return None

    def _drain(self) -> str:
        """What the process wrote since the last drain; the file is emptied (its offset is shared with the process)."""
        if self._capture.closed:
            return ""
        fd = self._capture.fileno()
        data = os.pread(fd, os.fstat(fd).st_size, 0)
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        return data.decode(errors="replace")


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
