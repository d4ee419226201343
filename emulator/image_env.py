"""A function's Python environment as its image has it: the image's dependency set in a venv, and its task root.

Lambda runs an image function with what its Dockerfile installs and copies, and nothing else. The
emulator reads the Dockerfile's last stage (no container engine is needed) and rebuilds that:

- the requirements of its ``pip install`` steps (a copied local folder such as ``"/tmp/src[cpu,lambda]"``
  is traced back to the context files COPYed there), plus what the Lambda base image ships
  (awslambdaric, boto3), are installed into a venv without system site-packages. The venv is cached
  under ``$XDG_CACHE_HOME/ml-inference-system/emulator`` by a hash of the requirements, of the copied
  dependency files' content and of the Python version, so only a change of the dependency set rebuilds it;
- what the stage COPYs into ``${LAMBDA_TASK_ROOT}`` is linked into a staged folder laid out as
  ``/var/task``; a ``COPY --from=<stage>`` stands for the context's folder of the same name (``models/``).

A function run with that interpreter from that folder imports exactly what the image would: a
dependency missing from the image fails locally as it does on AWS, and the dev venv's packages,
``tests/`` and ``emulator/`` are not there. Zip functions get the same from ``requirements.txt`` in
their CodeUri, as ``sam build`` installs it.

``emulator.image_plan`` reads the Dockerfile; this module builds what it read. The venv is built
with a ``python<X.Y>`` found on PATH for the image's Python version, else with the
emulator's own interpreter (with one warning): the base image itself is not run.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from emulator.image_plan import (
    DEV_ENV,
    DockerIgnore,
    ImageEnvironmentError,
    ImagePlan,
    PipInstall,
    context_relative,
    image_plan,
    is_inside,
    zip_plan,
)

logger = logging.getLogger(__name__)

_MARKER = ".image-env.json"
_PIP_ENV_DROPPED = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PIP_TARGET", "PIP_PREFIX", "PIP_USER", "PIP_REQUIRE_VIRTUALENV")
_PROBE = "import os, sys, platform; print(platform.python_version(), os.path.realpath(getattr(sys, '_base_executable', sys.executable)))"
PIP_TIMEOUT_S = 1200.0
"""One ``pip install`` step; the image's full dependency set takes a minute or two from pip's cache."""
LOCK_TIMEOUT_S = PIP_TIMEOUT_S * 2 + 120.0
"""How long an emulator waits for another one that builds the same venv."""
VENV_TIMEOUT_S = 180.0
PROBE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class ImageEnvironment:
    """Where a function runs as in its image."""

    python: Path
    """The venv's interpreter: the image's dependency set and nothing else."""
    task_root: Path
    """A staged folder laid out as ``${LAMBDA_TASK_ROOT}`` in the image (only what the Dockerfile copies)."""
    dependency_hash: str
    """sha256 of the requirements, the copied dependency files and the Python version: the venv's cache key."""


def default_cache_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """``$XDG_CACHE_HOME/ml-inference-system/emulator``, ``~/.cache/...`` by default."""
    base = Path(environ["XDG_CACHE_HOME"]) if environ.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "ml-inference-system" / "emulator"


def image_environment(
    dockerfile: Path, context: Path, *, cache_dir: Path | None = None, log: Callable[[str], None] = logger.info
) -> ImageEnvironment:
    """The image's dependency set (a cached venv, built on first use) and its staged task root."""
    plan = image_plan(dockerfile, context)
    return _environment(plan, cache_dir or default_cache_dir(), log)


def zip_environment(
    code_root: Path, *, cache_dir: Path | None = None, log: Callable[[str], None] = logger.info, runtime: str | None = None
) -> ImageEnvironment:
    """A Zip function's: ``requirements.txt`` in its CodeUri when present (as ``sam build`` installs it), else only
    what the managed runtime ships; ``runtime`` ("python3.12") names the Python version. The task root is ``code_root``."""
    plan = zip_plan(code_root, runtime=runtime)
    cache = cache_dir or default_cache_dir()
    interpreter = _interpreter(plan.python_version, cache, log)
    venv = _venv(plan, interpreter, cache, log)
    return ImageEnvironment(python=venv, task_root=code_root, dependency_hash=plan.dependency_hash(interpreter.version))


def _environment(plan: ImagePlan, cache: Path, log: Callable[[str], None]) -> ImageEnvironment:
    task_root = stage_task_root(plan, cache)
    interpreter = _interpreter(plan.python_version, cache, log)
    venv = _venv(plan, interpreter, cache, log)
    return ImageEnvironment(python=venv, task_root=task_root, dependency_hash=plan.dependency_hash(interpreter.version))


# ---- the task root -------------------------------------------------------------------------


def stage_task_root(plan: ImagePlan, cache_dir: Path) -> Path:
    """A folder laid out as the image's task root: symlinks to what the Dockerfile copies there, nothing else."""
    layout = json.dumps([str(plan.context), [[relative, str(host)] for relative, host in plan.task_root]])
    folder = cache_dir / "task-roots" / hashlib.sha256(layout.encode()).hexdigest()[:16]
    if folder.is_dir():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=folder.parent))
    staging.chmod(0o755)
    ignore = DockerIgnore.read(plan.context)
    for relative, host in plan.task_root:
        _place(staging, relative, host, plan.context, ignore)
    try:
        staging.rename(folder)
    except OSError:  # another emulator staged the same layout first
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _place(root: Path, relative: str, host: Path, context: Path, ignore: DockerIgnore) -> None:
    """COPY semantics with links: a folder's content merges into the destination; a later file replaces an earlier one."""
    destination = root / relative if relative else root
    for parent in reversed([p for p in destination.parents if is_inside(p, root)]):
        if parent.is_symlink():
            _explode(parent)
        parent.mkdir(exist_ok=True)
    if host.is_dir() and destination.is_symlink() and destination.is_dir():
        _explode(destination)
    if host.is_dir() and destination.is_dir() and not destination.is_symlink():
        for child in sorted(host.iterdir()):
            if ignore.sent(context_relative(child, context)):
                _place(root, f"{relative}/{child.name}" if relative else child.name, child, context, ignore)
        return
    if destination.is_dir() and not destination.is_symlink():
        shutil.rmtree(destination)
    elif destination.is_symlink() or destination.exists():
        destination.unlink()
    destination.symlink_to(host)


def _explode(link: Path) -> None:
    """A link to a folder made a folder of links to its entries, so that another COPY can add to it."""
    target = link.resolve()
    link.unlink()
    link.mkdir()
    for child in sorted(target.iterdir()):
        (link / child.name).symlink_to(child)


# ---- the venv ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Interpreter:
    path: str
    version: str
    """"3.11.7" and where its installation lives: the venv links to it."""


_warned: set[tuple[str, str, Path]] = set()


def _interpreter(wanted: str | None, cache_dir: Path, log: Callable[[str], None]) -> _Interpreter:
    """``python<wanted>`` from PATH when it runs that version, else the emulator's own Python (one warning)."""
    base = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    own = _Interpreter(sys.executable, f"{platform.python_version()} {base}")
    if wanted is None or _minor(own.version) == wanted:
        return own
    found = shutil.which(f"python{wanted}")
    version = _probe(found) if found else None
    if found and version and _minor(version) == wanted:
        return _Interpreter(found, version)
    if (wanted, own.version, cache_dir) not in _warned:  # once per emulator, not once per function
        _warned.add((wanted, own.version, cache_dir))
        log(
            f"warning: the image runs Python {wanted} but this machine has no python{wanted} on PATH, so its dependency set"
            f" is built with Python {_minor(own.version)} ({sys.executable}); put python{wanted} on PATH to match the image"
        )
    return own


@functools.cache
def _probe(python: str) -> str | None:
    """What the interpreter says it is ("3.12.1 /usr/bin/python3.12"); None when it does not run (a pyenv shim of another version)."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        answer = subprocess.run([python, "-c", _PROBE], capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, check=False)
        if answer.returncode == 0:
            return answer.stdout.strip()
    return None


def _minor(version: str) -> str:
    return ".".join(version.split()[0].split(".")[:2]) if version else ""


def _venv(plan: ImagePlan, interpreter: _Interpreter, cache_dir: Path, log: Callable[[str], None]) -> Path:
    """The cached venv of the plan's dependency set, built under a lock at its final path (a venv's scripts name it)."""
    digest = plan.dependency_hash(interpreter.version)
    folder = cache_dir / "venvs" / digest[:16]
    python = folder / "bin" / "python"
    if (folder / _MARKER).is_file():
        return python
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _locked(folder.with_suffix(".lock"), digest, log):
        if (folder / _MARKER).is_file():  # built by another emulator meanwhile
            return python
        started = time.perf_counter()
        log(f"building the image's dependency set ({digest[:12]}) ...")
        shutil.rmtree(folder, ignore_errors=True)  # a build that was cut short
        try:
            _build(plan, interpreter, folder, cache_dir)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        elapsed = time.perf_counter() - started
        marker: dict[str, object] = {"hash": digest, "python": interpreter.version, "source": plan.source, "built_s": round(elapsed, 1)}
        marker["installs"] = [plan.base_packages, *(install.requirements() for install in plan.installs)]
        _write_atomically(folder / _MARKER, json.dumps(marker, indent=1))
        log(f"built the image's dependency set ({digest[:12]}) in {elapsed:.1f} s: {folder}")
    return python


@contextlib.contextmanager
def _locked(path: Path, digest: str, log: Callable[[str], None]) -> Iterator[None]:
    with path.open("a") as handle:
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        waiting = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waiting:
                    log(f"waiting for another emulator that builds the image's dependency set ({digest[:12]}) ...")
                    waiting = True
                if time.monotonic() > deadline:
                    raise ImageEnvironmentError(f"{path} stayed locked for {LOCK_TIMEOUT_S:.0f} s; {DEV_ENV}") from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build(plan: ImagePlan, interpreter: _Interpreter, folder: Path, cache_dir: Path) -> None:
    own_pip = _pip_has_python_option()
    venv = [interpreter.path, "-m", "venv", *(["--without-pip"] if own_pip else []), str(folder)]
    _run(venv, "python -m venv failed", timeout_s=VENV_TIMEOUT_S)
    python = folder / "bin" / "python"
    # The emulator's own pip, pointed at the venv: a venv without pip is made in a fraction of a second.
    pip = [sys.executable, "-m", "pip", "--python", str(python)] if own_pip else [str(python), "-m", "pip"]
    with tempfile.TemporaryDirectory(prefix=".sources-", dir=cache_dir) as scratch:
        steps = [_materialize(install, Path(scratch) / str(number)) for number, install in enumerate(plan.installs)]
        base = list(plan.base_packages)
        if base and steps and not {"--no-deps", "--no-index"} & set(steps[0]):
            steps[0] = base + steps[0]  # one resolution instead of two: the base image's packages with the first install's
        elif base:
            steps.insert(0, base)
        for arguments in steps:
            command = [*pip, "install", "--disable-pip-version-check", "-q", *arguments]
            _run(command, f"pip could not install the image's dependency set ({plan.source})", timeout_s=PIP_TIMEOUT_S, cwd=plan.context)


def _pip_has_python_option() -> bool:
    """Whether the emulator's own pip can install into another interpreter (``pip --python``, pip 22.3 and later)."""
    if importlib.util.find_spec("pip") is None:
        return False
    major, minor, *_ = (int(part) if part.isdigit() else 0 for part in importlib.metadata.version("pip").split(".") + ["0"])
    return (major, minor) >= (22, 3)


def _materialize(install: PipInstall, scratch: Path) -> list[str]:
    """The install's arguments with each local folder copied out of the context (pip writes its build files there)."""
    arguments = []
    for number, argument in enumerate(install.arguments):
        if isinstance(argument, str):
            arguments.append(argument)
        elif argument.files and argument.files[0][0] == "":
            arguments.append(str(argument.files[0][1]))
        else:
            folder = scratch / str(number)
            for relative, host in argument.files:
                (folder / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(host, folder / relative)
            arguments.append(f"{folder}{argument.extras}")
    return arguments


def _run(command: list[str], what: str, *, timeout_s: float, cwd: Path | None = None) -> None:
    env = {k: v for k, v in os.environ.items() if k not in _PIP_ENV_DROPPED}
    try:
        result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise ImageEnvironmentError(f"{what}: no answer in {timeout_s:.0f} s; {DEV_ENV}") from None
    if result.returncode != 0:
        raise ImageEnvironmentError(f"{what}: {_last_error(result.stdout + result.stderr)}; {DEV_ENV}")


def _last_error(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR")]
    return (errors or lines or ["(no output)"])[-1]


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(text)
    os.replace(temporary, path)
