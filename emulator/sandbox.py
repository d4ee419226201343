"""Each execution environment's /tmp and code folder, as private as the OS allows.

Lambda gives every environment its own empty /tmp (EphemeralStorage, 512 MB by default) and a
read-only code folder (/var/task). Here, where user and mount namespaces work (a probe, once per
emulator process, says whether), each environment's process runs in namespaces of its own,
set up by ``emulator/namespaces.py``: a tmpfs of ``ephemeral_storage_mb`` on /tmp, fresh at each
cold start and gone when the environment stops, and the task root remounted read-only. The
process keeps the host's uid and gid (the current user is mapped to itself).

Where they do not work (a kernel, container or policy that forbids them), or with
``EnvironmentOptions.isolate`` off, the environment gets ``TMPDIR``, ``TMP`` and ``TEMP`` pointing at
a fresh, empty folder of its own, deleted when it stops; /tmp itself is the host's, shared, and
the code folder is writable. One warning per emulator process says so, and why.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

LAUNCHER = Path(__file__).resolve().with_name("namespaces.py")
PROBE_TIMEOUT_S = 10.0
_TMP_VARIABLES = ("TMPDIR", "TMP", "TEMP")


@dataclass(frozen=True)
class Support:
    """Whether environments can have namespaces of their own here; ``reason`` says why not."""

    namespaces: bool
    reason: str = ""


_lock = threading.Lock()
_support: Support | None = None


def launcher_command() -> list[str]:
    """The launcher, run by the emulator's own interpreter: isolated (``-I``) and without site (``-S``), for a fast start."""
    return [sys.executable, "-I", "-S", str(LAUNCHER)]


def probe() -> Support:
    """Whether user and mount namespaces work here: tried once per process, in a child, then cached."""
    global _support
    with _lock:
        if _support is None:
            _support = _try_namespaces()
            if not _support.namespaces:
                logger.warning(
                    "Execution environments share the host's /tmp (each gets a TMPDIR of its own) and can write to their code folder: "
                    "user and mount namespaces are not available here (%s)",
                    _support.reason,
                )
        return _support


def _try_namespaces() -> Support:
    try:
        result = subprocess.run([*launcher_command(), "--probe"], capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Support(False, str(exc))
    if result.returncode != 0:
        return Support(False, result.stderr.strip() or f"exit status {result.returncode}")
    return Support(True)


class Sandbox:
    """One environment's isolation: the command that starts it, the variables it needs, and the cleanup."""

    def __init__(
        self, name: str, *, task_root: Path, tmp_mb: int, keep: Sequence[Path], isolate: bool, environment: Mapping[str, str] | None = None
    ) -> None:
        """The task root is read-only, and so is what a staged task root links to (the build context's files);
        the folders the function's ``file://`` variables name stay writable (and are created)."""
        self.namespaces = isolate and probe().namespaces
        self._task_root = task_root
        self._read_only = list(dict.fromkeys([task_root, *linked_sources(task_root)]))
        self._writable = output_folders(environment or {})
        for folder in self._writable:
            folder.mkdir(parents=True, exist_ok=True)
        self._tmp_mb = tmp_mb
        self._keep = [task_root, *keep]
        self._tmpdir: Path | None = None if self.namespaces else Path(tempfile.mkdtemp(prefix=f"lambda-{name}-tmp-"))

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv``, run inside the environment's namespaces where it has them."""
        if not self.namespaces:
            return list(argv)
        options = ["--tmp-mb", str(self._tmp_mb)]
        for path in self._read_only:
            options += ["--read-only", str(path)]
        for path in self._writable:
            options += ["--writable", str(path)]
        for path in self._keep:
            options += ["--keep", str(path)]
        return [*launcher_command(), *options, "--", *argv]

    def environment(self) -> dict[str, str]:
        """The temporary-folder variables of the environment: its own folder without namespaces; none with (its /tmp is private)."""
        if self._tmpdir is None:
            return {}
        return dict.fromkeys(_TMP_VARIABLES, str(self._tmpdir))

    def close(self) -> None:
        """The environment has stopped: its temporary folder goes (a namespace's tmpfs went with its process)."""
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None


async def open_sandbox(
    name: str,
    *,
    task_root: Path,
    python: Path,
    tmp_mb: int,
    isolate: bool,
    environment: Mapping[str, str] | None = None,
    keep: Sequence[Path] = (),
) -> Sandbox:
    """An environment's sandbox, for a process run by ``python``: its interpreter's folders stay visible in the
    private /tmp (besides ``keep``); the one-time namespace probe runs off the event loop (it blocks for a few ms)."""
    if isolate:
        await asyncio.to_thread(probe)
    kept = [*keep, python.parent.parent, python.resolve().parent.parent]
    return Sandbox(name, task_root=task_root, tmp_mb=tmp_mb, keep=kept, isolate=isolate, environment=environment)


def linked_sources(task_root: Path) -> list[Path]:
    """The host files and folders a staged task root links to: what a sandbox keeps visible, and read-only, with it.

    Each link's own target and, when that is a link too (a checkout's ``models`` linked elsewhere), where it resolves."""
    sources = set()
    for folder, names, files in os.walk(task_root):
        for name in [*names, *files]:
            link = Path(folder) / name
            if link.is_symlink():
                sources.add(Path(os.path.normpath(link.parent / os.readlink(link))))
                sources.add(link.resolve())
    return sorted(sources)


FILE_URI = "file://"


def output_folders(environment: Mapping[str, str]) -> list[Path]:
    """The folders a function's ``file://`` variables name (e.g. ``BATCH_RESULTS_URI``): its output, not its code."""
    return [Path(value[len(FILE_URI) :]).resolve() for value in environment.values() if value.startswith(FILE_URI + "/")]
