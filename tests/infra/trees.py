"""A Dockerfile stage laid out as a folder: what it copies, where the image has it, and its RUN steps redone.

There is no container engine in ``make test``, so each stage gets a folder standing for its
filesystem root. COPY instructions copy exactly what they name (from the build context or from
an earlier stage's folder) to the same paths under that root; WORKDIR, ARG and ENV are followed.
RUN steps are redone with the host's tools, one known command at a time (pip, venv, mlinfer,
compileall, rm, mkdir); a command this module does not know fails the test, so a Dockerfile
change cannot silently go untested.

The base image's own Python is a fresh venv (no pip of its own: the dev venv's pip installs
into it through ``pip --python``); for the Lambda base it carries awslambdaric, as the AWS base
image does. Installs drop ``--no-cache-dir``, so pip's cache serves every rerun.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from emulator.image_plan import Dockerfile, Stage, expand
from tests.conftest import REPO_ROOT
from tests.infra.test_dockerfiles import sent_to_docker

INSTALL_TIMEOUT_S = 600
RUN_TIMEOUT_S = 600
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The base image's own folders: a path there names the host's (its Python, its tools).
SYSTEM_PREFIXES = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/etc", "/dev", "/proc", "/sys")
# What a base image brings that the Dockerfiles rely on: its environment, its WORKDIR, its
# entry point and the Python packages of its own Python.
LAMBDA_BASE = "public.ecr.aws/lambda/python"
BASE_ENV: dict[str, dict[str, str]] = {
    LAMBDA_BASE: {"LAMBDA_TASK_ROOT": "/var/task", "LAMBDA_RUNTIME_DIR": "/var/runtime"},
}
BASE_WORKDIR = {LAMBDA_BASE: "/var/task"}
BASE_PACKAGES = {LAMBDA_BASE: ["awslambdaric"]}
# The Lambda base's /lambda-entrypoint.sh: the runtime interface client, from the task root.
LAMBDA_ENTRYPOINT = ["python", "-m", "awslambdaric"]


def repository(image: str) -> str:
    return image.split("@")[0].rpartition(":")[0] if ":" in image.split("/")[-1] else image.split("@")[0]


@dataclass
class StageTree:
    """One stage's filesystem: ``root`` stands for ``/``."""

    name: str
    base: str
    root: Path
    args: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    cmd: list[str] = field(default_factory=list)
    user: str | None = None
    python: Path | None = None
    """The base image's own Python (a venv), created on first use."""
    log: list[str] = field(default_factory=list)

    def host(self, image_path: str) -> Path:
        """Where the image's absolute path lies in this folder."""
        return self.root / image_path.lstrip("/")

    def absolute(self, path: str) -> str:
        return path if path.startswith("/") else os.path.normpath(os.path.join(self.workdir, path))

    def values(self) -> dict[str, str]:
        return {**self.args, **self.env}

    def map_value(self, value: str) -> str:
        """An environment value or argument with the image's paths moved into the folder: every
        ``:``-separated absolute part, except the base image's system folders (``/usr/bin``)."""

        def one(part: str) -> str:
            path, bracket, extras = part.partition("[")
            if path.startswith("/") and len(path) > 1 and not any(path == p or path.startswith(p + "/") for p in SYSTEM_PREFIXES):
                return str(self.host(path)) + bracket + extras
            return part

        return ":".join(one(part) for part in value.split(":"))

    def runtime_env(self, **overrides: str) -> dict[str, str]:
        """What the image's processes see: the host's basics, the image's ENV (paths mapped), the overrides."""
        env = {name: os.environ[name] for name in ("HOME", "LANG", "TMPDIR") if name in os.environ}
        for name, value in self.env.items():
            if name == "PATH":
                value = value.replace(DEFAULT_PATH, os.environ.get("PATH", DEFAULT_PATH))
            env[name] = self.map_value(value)
        env.update(overrides)
        return env


def base_python(tree: StageTree) -> Path:
    """The base image's Python, as a fresh venv (awslambdaric in it for the Lambda base)."""
    if tree.python is None:
        venv = tree.root.parent / f"{tree.root.name}-base-python"
        tree.python = make_venv(venv)
        packages = BASE_PACKAGES.get(repository(tree.base), [])
        if packages:
            pip_install(tree.python, packages, cwd=tree.root.parent, what=f"{tree.name}: the base image's {' '.join(packages)}")
    return tree.python


def make_venv(path: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120)
    return path / "bin" / "python"


def pip_install(python: Path, args: list[str], *, cwd: Path, what: str, hint: Callable[[str], str] | None = None) -> None:
    """``pip install`` into ``python``'s environment with the dev venv's pip (and pip's cache)."""
    # --no-compile: the trees' Pythons compile what they import; byte-compiling every installed file is time spent for nothing.
    run_pip("install", ["--no-compile", *args], cwd=cwd, what=what, hint=hint, python=python)


def run_pip(
    verb: str, args: list[str], *, cwd: Path, what: str, hint: Callable[[str], str] | None = None, python: Path | None = None
) -> None:
    """``pip <verb>`` with the dev venv's pip (and pip's cache), for ``python``'s environment when given;
    a failure fails the test with pip's output (and the hint's advice)."""
    target = ["--python", str(python)] if python is not None else []
    command = [sys.executable, "-m", "pip", *target, verb, "--quiet", "--disable-pip-version-check", *args]
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, check=False)
    if result.returncode != 0:
        output = f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        advice = hint(f"{what}\n{output}") if hint else ""
        pytest.fail(f"{what}: pip {verb} failed\n$ {shlex.join(command)}\n{output}\n{advice}")


def _link_or_copy(src: str, dst: str) -> str:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


def _copy(source: Path, destination: Path, *, context: Path | None) -> None:
    """Docker's COPY of one source. From the build context (copied, filtered by .dockerignore);
    from another stage's folder (hard links where possible: venvs are large, and nothing
    rewrites a file in place)."""

    def ignore(folder: str, names: list[str]) -> set[str]:
        if context is None:
            return set()
        relative = Path(folder).relative_to(context)
        return {name for name in names if not sent_to_docker((relative / name).as_posix())}

    if source.is_dir():
        copy = shutil.copy2 if context is not None else _link_or_copy
        shutil.copytree(source, destination, symlinks=True, dirs_exist_ok=True, ignore=ignore, copy_function=copy)
    else:
        destination.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copy2 if context is not None else _link_or_copy)(str(source), str(destination))


class TreeBuilder:
    """Lays out the stages of one Dockerfile; ``trees`` may hold stages built elsewhere (``models``)."""

    def __init__(
        self,
        dockerfile: Dockerfile,
        workspace: Path,
        *,
        context: Path = REPO_ROOT,
        trees: Mapping[str, StageTree | Future[StageTree]] | None = None,
        hints: Mapping[str, Callable[[str], str]] | None = None,
    ) -> None:
        self.dockerfile = dockerfile
        self.workspace = workspace
        self.context = context
        self.trees: dict[str, StageTree | Future[StageTree]] = dict(trees or {})
        self.hints = dict(hints or {})

    def build(self, stage: Stage, *, run: bool = True, cached: Mapping[str, Path] | None = None) -> StageTree:
        """The stage's folder; ``run=False`` copies only, without redoing any RUN step.

        ``cached`` (image path -> local folder) is copied in first, as a layer cache would hold a
        step's output: a step that checks its output (``mlinfer build-models`` compares the build
        key of its inputs, code and library versions) then skips work that is up to date."""
        key = stage.name or "final"
        base = self.dockerfile.resolve(stage.base)
        tree = StageTree(name=key, base=base, root=self.workspace / key)
        tree.root.mkdir(parents=True)
        for image_path, folder in (cached or {}).items():
            shutil.copytree(folder, tree.host(image_path), ignore=shutil.ignore_patterns(".*"))
        tree.env = {"PATH": DEFAULT_PATH, **BASE_ENV.get(repository(base), {})}
        tree.args = {}
        tree.workdir = BASE_WORKDIR.get(repository(base), "/")
        tree.host(tree.workdir).mkdir(parents=True, exist_ok=True)
        if repository(base) == LAMBDA_BASE:
            tree.cmd = list(LAMBDA_ENTRYPOINT)
        for step in stage.instructions:
            instruction, arguments = step.keyword, step.arguments
            started = time.monotonic()
            getattr(self, f"_{instruction.lower()}", self._unknown)(tree, instruction, arguments, run)
            elapsed = time.monotonic() - started
            if elapsed > 1.0:
                print(f"[{self.workspace.name}/{key}] {elapsed:6.1f}s  {instruction} {arguments}"[:200])
        if stage.name:
            self.trees[stage.name] = tree
        return tree

    def tree(self, name: str) -> StageTree:
        """An earlier stage's folder; one laid out by another thread is waited for."""
        tree = self.trees[name]
        return tree.result(timeout=RUN_TIMEOUT_S + INSTALL_TIMEOUT_S) if isinstance(tree, Future) else tree

    # ---- instructions ----

    def _unknown(self, tree: StageTree, instruction: str, arguments: str, run: bool) -> None:
        pytest.fail(f"{tree.name}: the image-tree test does not know the instruction {instruction} {arguments}")

    def _arg(self, tree: StageTree, instruction: str, arguments: str, run: bool) -> None:
        name, _, default = arguments.partition("=")
        tree.args[name] = default or self.dockerfile.global_args.get(name, "")

    def _env(self, tree: StageTree, instruction: str, arguments: str, run: bool) -> None:
        for pair in shlex.split(arguments):
            name, _, value = pair.partition("=")
            tree.env[name] = expand(value, tree.values())

    def _workdir(self, tree: StageTree, instruction: str, arguments: str, run: bool) -> None:
        tree.workdir = tree.absolute(expand(arguments, tree.values()))
        tree.host(tree.workdir).mkdir(parents=True, exist_ok=True)

    def _copy(self, tree: StageTree, instruction: str, arguments: str, run: bool) -> None:
        words = shlex.split(expand(arguments, tree.values()))
        options = [w for w in words if w.startswith("--")]
        sources, destination = [w for w in words if not w.startswith("--")][:-1], words[-1]
        origin = next((o.removeprefix("--from=") for o in options if o.startswith("--from=")), None)
        if origin is not None and origin not in self.trees:
            # A stage that is only an external image (uv's): nothing of it is laid out; its
            # tool's commands are redone with the host's equivalents.
            tree.log.append(f"COPY {arguments}: from the image of stage {origin!r}, not laid out")
            return
        for source in sources:
            if origin is None:
                path = self.context / source
            else:
                path = self.tree(origin).host(source)
            assert path.exists(), f"{tree.name}: COPY {arguments}: {path} does not exist"
            target_path = tree.absolute(destination)
            if destination.endswith("/") and not (source.endswith("/") or path.is_dir()):
                target_path = os.path.join(target_path, path.name)
            _copy(path, tree.host(target_path), context=self.context if origin is None else None)

    def _cmd(self, tree: StageTree, instruction: str, arguments: str, run: bool) -> None:
        command = json.loads(arguments)
        tree.cmd = (list(LAMBDA_ENTRYPOINT) if repository(tree.base) == LAMBDA_BASE else []) + command

    def _user(self, tree: StageTree, instruction: str, arguments: str, run: bool) -> None:
        tree.user = arguments

    def _expose(self, tree: StageTree, instruction: str, arguments: str, run: bool) -> None:
        pass

    def _run(self, tree: StageTree, instruction: str, arguments: str, run: bool) -> None:
        if not run:
            return
        for command in expand(arguments, tree.values()).split("&&"):
            self._run_one(tree, shlex.split(command))

    # ---- RUN commands ----

    def _run_one(self, tree: StageTree, words: list[str]) -> None:
        text = shlex.join(words)
        tree.log.append(f"RUN {text}")
        program = words[0]
        if program == "uv" and words[1:3] == ["pip", "install"]:
            target, rest = self._uv_target(tree, words[3:])
            self._pip(tree, target, rest, text)
        elif program == "uv" and words[1] == "venv":
            make_venv(tree.host(words[2]))
        elif program.endswith("pip") and words[1] == "download":
            self._pip_download(tree, words[2:], text)
        elif program.endswith("pip") and words[1] == "install":
            python = base_python(tree) if program == "pip" else tree.host(program).with_name("python")
            self._pip(tree, python, words[2:], text)
        elif program == "python" and words[1:3] == ["-m", "venv"]:
            make_venv(tree.host(words[3]))
        elif program == "python" and words[1:3] == ["-m", "compileall"]:
            self._execute(tree, [str(base_python(tree)), *[tree.map_value(w) for w in words[1:]]], text)
        elif program == "mlinfer":
            script = base_python(tree).with_name("mlinfer")
            self._execute(tree, [str(base_python(tree)), str(script), *[tree.map_value(w) for w in words[1:]]], text)
        elif program == "rm" and words[1] in ("-rf", "-fr"):
            for path in words[2:]:
                shutil.rmtree(tree.host(tree.absolute(path)), ignore_errors=True)
        elif program == "mkdir" and words[1] == "-p":
            for path in words[2:]:
                tree.host(tree.absolute(path)).mkdir(parents=True, exist_ok=True)
        elif program == "useradd":
            tree.log.append("  (no user accounts in a folder: the image's USER is not switched to here)")
        else:
            pytest.fail(f"{tree.name}: the image-tree test has no equivalent for RUN {text}")

    def _uv_target(self, tree: StageTree, words: list[str]) -> tuple[Path, list[str]]:
        rest: list[str] = []
        target: Path | None = None
        iterator = iter(words)
        for word in iterator:
            if word == "--python":
                target = tree.host(next(iterator))
            else:
                rest.append(word)
        assert target is not None, f"{tree.name}: uv pip install without --python"
        return target, rest

    def _pip(self, tree: StageTree, python: Path, words: list[str], text: str) -> None:
        args: list[str] = []
        iterator = iter(words)
        for word in iterator:
            if word == "--no-cache-dir":
                continue
            if word == "--target":
                args += [word, str(tree.host(next(iterator)))]
            else:
                args.append(tree.map_value(word))
        started = time.monotonic()
        hint = next((h for package, h in self.hints.items() if package in text), None)
        pip_install(python, args, cwd=tree.root, what=f"{tree.name}: RUN {text}", hint=hint)
        print(f"[{self.workspace.name}/{tree.name}] {time.monotonic() - started:6.1f}s    {text}"[:200])

    def _pip_download(self, tree: StageTree, words: list[str], text: str) -> None:
        """``pip download`` with the dev venv's pip (and cache), into the folder's ``--dest``."""
        args = [tree.map_value(w) for w in words if w != "--no-cache-dir"]
        run_pip("download", args, cwd=tree.root, what=f"{tree.name}: RUN {text}")

    def _execute(self, tree: StageTree, command: list[str], text: str) -> None:
        started = time.monotonic()
        result = subprocess.run(
            command,
            cwd=tree.host(tree.workdir),
            env=tree.runtime_env(),
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
            check=False,
        )
        assert result.returncode == 0, f"{tree.name}: RUN {text} failed\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        print(f"[{self.workspace.name}/{tree.name}] {time.monotonic() - started:6.1f}s    {text}"[:200])


def image_command(tree: StageTree) -> list[str]:
    """The image's ENTRYPOINT + CMD as a host command: ``python`` is the base image's Python; a
    console script found on the image's PATH runs with the python of its own venv (a venv that
    was copied between stages keeps its folder's ``bin/python``, not its shebang's)."""
    program, *args = tree.cmd
    if program == "python":
        return [str(base_python(tree)), *args]
    for folder in tree.runtime_env()["PATH"].split(":"):
        script, python = Path(folder) / program, Path(folder) / "python"
        if script.is_file() and python.exists() and script.read_bytes().startswith(b"#!"):
            return [str(python), str(script), *args]
    pytest.fail(f"{tree.name}: {program} of CMD {tree.cmd} is not a console script on the image's PATH {tree.env.get('PATH')}")
