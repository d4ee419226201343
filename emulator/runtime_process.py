"""The runtime process of a function served through the Runtime API: how it runs, and the one the emulator runs itself.

``RuntimeLaunch`` is what the function's runtime runs with: ``<python> -m awslambdaric <handler>``
in the task root, with the function's environment and ``AWS_LAMBDA_RUNTIME_API``. With it, the
user can start the runtime (``write_environment_file`` and ``RuntimeLaunch.shell_command``), or
the emulator runs it (``LaunchedRuntime``), as the Runtime Interface Emulator does: in the
function's sandbox, its output read as it writes, its memory watched.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import shlex
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from emulator import limits, sandbox
from emulator.function_errors import exit_reason
from emulator.memory import MemoryWatch

KILL_WAIT_S = 5.0
"""How long a killed runtime's exit is waited for."""


@dataclass(frozen=True)
class RuntimeLaunch:
    """How the function's runtime process runs: its command, working directory and environment."""

    command: tuple[str, ...]
    cwd: Path
    environment: Mapping[str, str]
    """The function's environment (``emulator.worker.environment``) with ``AWS_LAMBDA_RUNTIME_API``."""
    memory_limit_mb: int | None
    """The function's MemorySize when enforced; None: watched, not enforced."""
    isolate: bool = False
    """A launched runtime gets a private /tmp of ``tmp_mb`` and a read-only ``cwd`` where the OS allows (``emulator.sandbox``)."""
    tmp_mb: int = limits.TMP_DEFAULT_MB.value

    def shell_command(self, environment_file: Path) -> str:
        """A POSIX shell command that runs the runtime with exactly the environment in ``environment_file``."""
        inner = f"set -a && . {shlex.quote(str(environment_file))} && exec {shlex.join(self.command)}"
        return f"cd {shlex.quote(str(self.cwd))} && env -i sh -c {shlex.quote(inner)}"


def write_environment_file(path: Path, environment: Mapping[str, str]) -> None:
    """``KEY='value'`` lines, shell-quoted, readable by the user only (it may hold AWS credentials)."""
    text = "".join(f"{key}={shlex.quote(value)}\n" for key, value in sorted(environment.items()))
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)


class LaunchedRuntime:
    """The runtime process the emulator runs itself; its stdout and stderr are one pipe, read as it writes."""

    def __init__(self, name: str, launch: RuntimeLaunch, on_output: Callable[[str], None], on_exit: Callable[[str, bool], None]) -> None:
        self._name = name
        self._launch = launch
        self._on_output = on_output
        self._on_exit = on_exit
        self._process: asyncio.subprocess.Process | None = None
        self._sandbox: sandbox.Sandbox | None = None
        self._watch: MemoryWatch | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._pipe: int | None = None
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._started = 0.0
        self._first_poll: float | None = None
        self._init_reported = False

    @property
    def command(self) -> tuple[str, ...]:
        return self._launch.command

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def start(self, *, warm: bool = False) -> None:
        """Start the process; ``warm``: its init is not any invocation's (no Init Duration reported)."""
        launch = self._launch
        box = await sandbox.open_sandbox(
            self._name,
            task_root=launch.cwd,
            python=Path(launch.command[0]),
            tmp_mb=launch.tmp_mb,
            isolate=launch.isolate,
            environment=launch.environment,
        )
        read_end, write_end = os.pipe()
        try:
            self._process = await asyncio.create_subprocess_exec(
                *box.command(launch.command),
                cwd=launch.cwd,
                env={**launch.environment, **box.environment()},
                stdin=asyncio.subprocess.DEVNULL,
                stdout=write_end,
                stderr=write_end,
                start_new_session=True,
            )
        except BaseException:
            os.close(read_end)
            box.close()
            raise
        finally:
            os.close(write_end)
        self._sandbox = box
        self._started, self._first_poll, self._init_reported = time.perf_counter(), None, warm
        os.set_blocking(read_end, False)
        self._pipe = read_end
        asyncio.get_running_loop().add_reader(read_end, self.drain)
        self._watch = MemoryWatch(self._process.pid, self._launch.memory_limit_mb)
        self._tasks = [asyncio.create_task(self._watch.run()), asyncio.create_task(self._wait(self._process))]

    def polled(self) -> None:
        """A poll arrived: the first one since the start ends the runtime's init."""
        if self._first_poll is None:
            self._first_poll = time.perf_counter()

    def take_init_ms(self) -> float | None:
        """The Init Duration, once per start: for the first invocation the runtime is handed."""
        if self._init_reported or self._first_poll is None:
            return None
        self._init_reported = True
        return (self._first_poll - self._started) * 1000.0

    def peak_mb(self) -> int:
        return self._watch.peak_mb() if self._watch is not None else 0

    def drain(self) -> None:
        """Read what the runtime wrote so far: called as output arrives, and before an answer is taken,
        so that everything printed before a /response belongs to that invocation."""
        while self._pipe is not None:
            try:
                chunk = os.read(self._pipe, 65536)
            except BlockingIOError:
                return
            if not chunk:
                asyncio.get_running_loop().remove_reader(self._pipe)
                os.close(self._pipe)
                self._pipe = None
                chunk = b""
            text = self._decoder.decode(chunk, final=self._pipe is None)
            if text:
                self._on_output(text)

    def kill_now(self) -> None:
        """SIGKILL to the runtime and whatever it started (its own session), without waiting for the exit."""
        if self._process is not None and self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)

    async def kill(self) -> None:
        self.kill_now()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), KILL_WAIT_S)

    async def _wait(self, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
        self.drain()
        if self._pipe is not None:  # a child of the runtime still holds the pipe: stop reading it
            asyncio.get_running_loop().remove_reader(self._pipe)
            os.close(self._pipe)
            self._pipe = None
        out_of_memory = False
        if self._watch is not None:
            self._watch.stop()
            out_of_memory = self._watch.exceeded
        if self._sandbox is not None:
            self._sandbox.close()
            self._sandbox = None
        self._on_exit(exit_reason(code), out_of_memory)
