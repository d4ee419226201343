"""What an image holds, read from its Dockerfile: its dependency set and its task root's layout.

No container engine is needed: the last stage (and the stages it builds on) is read instruction by
instruction. ARG, ENV and WORKDIR are followed; COPY (from the context, honouring .dockerignore, or
``--from`` an earlier stage, which stands for the context's folder of the same name) gives the
task root's layout; the requirements of each ``pip install`` step are resolved (a copied local
folder such as ``"/tmp/src[cpu,lambda]"`` is traced back to the context files COPYed there); CMD is
the handler when the template gives none. A Zip function's plan is its CodeUri's
``requirements.txt``. ``emulator.image_env`` builds what a plan describes.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

logger = logging.getLogger(__name__)

LAMBDA_TASK_ROOT = "/var/task"
_LAMBDA_BASE = re.compile(r"(?:lambda/python|aws-lambda-python)(?::|$)")
_PYTHON_TAG = re.compile(r"python:(\d+)\.(\d+)")
_BASE_PACKAGES = ("awslambdaric", "boto3")
"""What the Lambda Python base images (and the managed python runtimes) provide outside the task root."""
_PINNED_BASE_PACKAGES = ("awslambdaric",)
"""Pinned to the emulator's own version: the runtime client the emulator is tested with."""
_PROSE = re.compile(r"(README|LICEN[CS]E|COPYING|CHANGELOG|CHANGES|NOTICE|AUTHORS)(\.\w+)?$", re.IGNORECASE)
DEV_ENV = "run with --use-dev-env to use the dev venv instead"

# pip options of the image's ``pip install``: passed on (they choose what is installed), dropped (they
# only say where and how), or naming a requirements/constraints file.
_PASSED_FLAGS = frozenset({"--no-deps", "--pre", "--prefer-binary", "--no-index", "--require-hashes"})
_PASSED_VALUED = frozenset(
    {"-i", "--index-url", "--extra-index-url", "-f", "--find-links", "--only-binary", "--no-binary", "--trusted-host"}
)
_DROPPED_FLAGS = frozenset(
    {
        "--no-cache-dir", "-U", "--upgrade", "-q", "--quiet", "-v", "--verbose", "--no-compile", "--compile", "--user",
        "--break-system-packages", "--no-warn-script-location", "--disable-pip-version-check", "--force-reinstall",
        "-I", "--ignore-installed", "--no-build-isolation", "--no-input", "--isolated", "--no-color", "--no-warn-conflicts",
        "--ignore-requires-python",
    }
)  # fmt: skip
_DROPPED_VALUED = frozenset(
    {
        "-t", "--target", "--prefix", "--root", "--platform", "--python-version", "--implementation", "--abi", "--cache-dir",
        "--root-user-action", "--progress-bar", "--upgrade-strategy", "--log", "--timeout", "--retries", "--src", "--report",
        "--exists-action",
    }
)  # fmt: skip
_FILE_VALUED = {"-r": "-r", "--requirement": "-r", "-c": "-c", "--constraint": "-c"}


class ImageEnvironmentError(Exception):
    """The image's environment cannot be rebuilt locally; the message is one actionable line."""


@dataclass(frozen=True)
class LocalFiles:
    """A path of the image that the Dockerfile filled from the build context: a folder to ``pip install``, or a file for ``-r``."""

    image_path: str
    files: tuple[tuple[str, Path], ...]
    """(path under ``image_path``, the context's file); ``("", file)`` when ``image_path`` is a file."""
    extras: str = ""
    """``[cpu,lambda]`` after a folder; empty for a file."""

    def digest(self) -> str:
        """The files' content, but for the prose of a project's metadata (README, LICENSE): it changes no dependency."""
        content = hashlib.sha256()
        for relative, path in self.files:
            if _PROSE.match(PurePosixPath(relative).name):
                continue
            content.update(f"{relative}\0{hashlib.sha256(path.read_bytes()).hexdigest()}\0".encode())
        return f"{self.image_path}{self.extras}@{content.hexdigest()}"


Argument = str | LocalFiles


@dataclass(frozen=True)
class PipInstall:
    """One ``pip install`` of the image: options that choose what is installed, requirements, ``-r``/``-c`` files."""

    arguments: tuple[Argument, ...]

    def requirements(self) -> list[str]:
        """The arguments as written in the image (local folders by their image path and extras)."""
        return [a if isinstance(a, str) else f"{a.image_path}{a.extras}" for a in self.arguments]


@dataclass(frozen=True)
class ImagePlan:
    """What an image installs and copies, read from its Dockerfile (or a Zip function's CodeUri)."""

    base_packages: tuple[str, ...]
    installs: tuple[PipInstall, ...]
    task_root: tuple[tuple[str, Path], ...]
    """(path under the task root, the host path that stands for it), in COPY order."""
    python_version: str | None
    """The image's Python, "3.12"; None when the base image does not say."""
    context: Path
    source: str
    """The Dockerfile or CodeUri, for messages."""

    def dependency_hash(self, python_version: str) -> str:
        """The venv's cache key: the resolved requirements, the content of the files they name, the Python version."""
        installs = [[a if isinstance(a, str) else a.digest() for a in install.arguments] for install in self.installs]
        key = json.dumps({"python": python_version, "base": self.base_packages, "installs": installs}, sort_keys=True)
        return hashlib.sha256(key.encode()).hexdigest()


# ---- the Dockerfile ------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    line: int
    keyword: str
    """Upper case."""
    arguments: str
    """As written, continuation lines joined with one space."""


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        """The arguments of each of the stage's ``keyword`` instructions, in order."""
        return [i.arguments for i in self.instructions if i.keyword == keyword]

    def steps(self) -> list[tuple[str, str]]:
        """(keyword, arguments) of each instruction: the stage as written, whatever line it starts on."""
        return [(i.keyword, i.arguments) for i in self.instructions]


@dataclass(frozen=True)
class Dockerfile:
    """A Dockerfile's global ARG defaults and its stages, read without a container engine."""

    path: Path
    global_args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    def resolve(self, text: str) -> str:
        """``text`` with the global ARGs expanded (a FROM line's view)."""
        return expand(text, self.global_args)

    def chain(self) -> list[Stage]:
        """The last stage and the stages it is built on, the first one first."""
        by_name = {s.name.lower(): s for s in self.stages if s.name}
        chain = [self.final]
        while (parent := by_name.get(self.resolve(chain[0].base).lower())) is not None and parent not in chain:
            chain.insert(0, parent)
        return chain


@dataclass(frozen=True)
class _Copy:
    line: int
    image_path: str
    """Where the source lands; for a folder, the folder its content lands in."""
    host: Path | None
    """The context's file or folder; None for ``--from``."""
    from_stage: str | None = None


@dataclass
class _Image:
    """The last stage walked: its copies and pip installs in order, its environment and command."""

    dockerfile: Path
    context: Path
    base: str
    values: dict[str, str]
    workdir: str
    copies: list[_Copy] = field(default_factory=list)
    installs: list[PipInstall] = field(default_factory=list)
    stages: dict[str, Stage] = field(default_factory=dict)

    def where(self, line: int) -> str:
        return f"{self.dockerfile}:{line}"


def dockerfile_command(dockerfile: Path) -> list[str] | None:
    """The last stage's CMD (inherited from the stage it is built on): the exec form's list, the shell form's words."""
    command: list[str] | None = None
    for stage in parse_dockerfile(dockerfile).chain():
        for instruction in stage.instructions:
            if instruction.keyword == "CMD":
                command = _command_words(instruction.arguments)
    return command


def image_plan(dockerfile: Path, context: Path) -> ImagePlan:
    """What the Dockerfile's last stage installs and copies into the task root, resolved to the context's files."""
    if not dockerfile.is_file():
        raise ImageEnvironmentError(f"{dockerfile}: no such Dockerfile (Metadata.Dockerfile in the function's DockerContext)")
    image = _walk(dockerfile, context.resolve())
    lambda_base = bool(_LAMBDA_BASE.search(image.base))
    version = _PYTHON_TAG.search(image.base)
    return ImagePlan(
        base_packages=_base_packages() if lambda_base else (),
        installs=tuple(image.installs),
        task_root=tuple(_task_root_entries(image)),
        python_version=f"{version.group(1)}.{version.group(2)}" if version else None,
        context=image.context,
        source=str(dockerfile),
    )


def zip_plan(code_root: Path, *, runtime: str | None = None) -> ImagePlan:
    """A Zip function's dependency set: ``requirements.txt`` in CodeUri if present, plus the managed runtime's packages."""
    requirements = code_root / "requirements.txt"
    installs = (PipInstall(("-r", LocalFiles("requirements.txt", (("", requirements),)))),) if requirements.is_file() else ()
    version = re.fullmatch(r"python(\d+\.\d+)", runtime or "")
    return ImagePlan(_base_packages(), installs, (), version.group(1) if version else None, code_root, str(code_root))


def _base_packages() -> tuple[str, ...]:
    packages = []
    for name in _BASE_PACKAGES:
        try:
            pinned = name in _PINNED_BASE_PACKAGES
            packages.append(f"{name}=={importlib.metadata.version(name)}" if pinned else name)
        except importlib.metadata.PackageNotFoundError:
            packages.append(name)
    return tuple(packages)


def parse_dockerfile(dockerfile: Path) -> Dockerfile:
    """The global ARG defaults and the stages; continuation lines joined, comments dropped."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for instruction in _instructions(dockerfile.read_text()):
        if instruction.keyword == "FROM":
            words = [w for w in instruction.arguments.split() if not w.startswith("--platform")]
            stages.append(Stage(base=words[0], name=words[2] if len(words) >= 3 and words[1].upper() == "AS" else None))
        elif not stages:
            if instruction.keyword == "ARG":
                name, _, default = instruction.arguments.partition("=")
                global_args[name.strip()] = _unquote(default.strip())
        else:
            stages[-1].instructions.append(instruction)
    if not stages:
        raise ImageEnvironmentError(f"{dockerfile}: no FROM instruction")
    return Dockerfile(dockerfile, global_args, stages)


def _instructions(text: str) -> Iterator[Instruction]:
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line.startswith("#") or (not pending and not line):
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        keyword, _, arguments = (pending + line).strip().partition(" ")
        pending = ""
        yield Instruction(start, keyword.upper(), arguments.strip())
    if pending.strip():
        keyword, _, arguments = pending.strip().partition(" ")
        yield Instruction(start, keyword.upper(), arguments.strip())


def _walk(dockerfile: Path, context: Path) -> _Image:
    parsed = parse_dockerfile(dockerfile)
    global_args = parsed.global_args
    chain = parsed.chain()
    base = parsed.resolve(chain[0].base)
    lambda_base = bool(_LAMBDA_BASE.search(base))
    values = {"LAMBDA_TASK_ROOT": LAMBDA_TASK_ROOT, "LAMBDA_RUNTIME_DIR": "/var/runtime"} if lambda_base else {}
    image = _Image(dockerfile, context, base, values, LAMBDA_TASK_ROOT if lambda_base else "/")
    image.stages = {s.name.lower(): s for s in parsed.stages if s.name}
    ignore = DockerIgnore.read(context)
    for stage in chain:
        for instruction in stage.instructions:
            _apply(image, instruction, global_args, ignore)
    return image


def _apply(image: _Image, instruction: Instruction, global_args: Mapping[str, str], ignore: DockerIgnore) -> None:
    keyword, arguments = instruction.keyword, instruction.arguments
    if keyword == "ARG":
        name, equals, default = arguments.partition("=")
        value = expand(_unquote(default.strip()), image.values) if equals else global_args.get(name.strip(), "")
        image.values.setdefault(name.strip(), value)
    elif keyword == "ENV":
        image.values.update(_env_pairs(arguments, image.values))
    elif keyword == "WORKDIR":
        image.workdir = _absolute(expand(arguments, image.values), image.workdir)
    elif keyword in ("COPY", "ADD"):
        image.copies += _copies(image, instruction, ignore)
    elif keyword == "RUN":
        if "<<" in arguments:
            raise ImageEnvironmentError(f"{image.where(instruction.line)}: a RUN heredoc is not understood; {DEV_ENV}")
        image.installs += _pip_installs(image, instruction, ignore)


def _copies(image: _Image, instruction: Instruction, ignore: DockerIgnore) -> list[_Copy]:
    words = json.loads(instruction.arguments) if instruction.arguments.startswith("[") else instruction.arguments.split()
    flags = [w for w in words if w.startswith("--")]
    paths = [expand(w, image.values) for w in words if not w.startswith("--")]
    if len(paths) < 2:
        raise ImageEnvironmentError(f"{image.where(instruction.line)}: {instruction.keyword} needs a source and a destination")
    *sources, destination = paths
    into_folder = destination.endswith("/") or len(sources) > 1
    destination = _absolute(destination, image.workdir)
    from_stage = next((f.partition("=")[2] for f in flags if f.startswith("--from=")), None)
    if from_stage is not None:
        return [
            _Copy(instruction.line, _join(destination, PurePosixPath(s).name) if into_folder else destination, None, from_stage)
            for s in sources
        ]
    copies = []
    for source in sources:
        if re.match(r"[a-z]+://", source):
            raise ImageEnvironmentError(f"{image.where(instruction.line)}: {instruction.keyword} of a URL is not understood; {DEV_ENV}")
        matches = (
            sorted(image.context.glob(source.lstrip("/"))) if any(c in source for c in "*?[") else [image.context / source.lstrip("/")]
        )
        found = [m for m in matches if m.exists() and ignore.sent(m.relative_to(image.context).as_posix())]
        if not found:
            raise ImageEnvironmentError(f"{image.where(instruction.line)}: COPY {source}: not in the build context {image.context}")
        for host in found:
            target = destination if host.is_dir() or not (into_folder or len(found) > 1) else _join(destination, host.name)
            copies.append(_Copy(instruction.line, target, host.resolve()))
    return copies


def _pip_installs(image: _Image, instruction: Instruction, ignore: DockerIgnore) -> list[PipInstall]:
    arguments = instruction.arguments
    commands: list[list[str]] = []
    if arguments.startswith("["):
        commands.append([str(word) for word in json.loads(arguments)])
    else:
        lexer = shlex.shlex(re.sub(r"^(--\S+\s+)+", "", arguments), posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        current: list[str] = []
        for token in lexer:
            if token and all(c in "&|;()<>" for c in token):
                commands.append(current)
                current = []
            else:
                current.append(token)
        commands.append(current)
    installs = []
    for words in commands:
        while words and re.fullmatch(r"\w+=.*", words[0]):
            words = words[1:]
        rest = _after_pip_install(words)
        if rest is not None:
            installs.append(_pip_install(image, instruction, [expand(w, image.values) for w in rest], ignore))
    return installs


def _after_pip_install(words: list[str]) -> list[str] | None:
    """The arguments after ``pip install`` / ``python -m pip install``; None for another command."""
    if len(words) >= 2 and re.fullmatch(r"pip[\d.]*", PurePosixPath(words[0]).name) and words[1] == "install":
        return words[2:]
    if len(words) >= 4 and re.fullmatch(r"python[\d.]*", PurePosixPath(words[0]).name) and words[1:4] == ["-m", "pip", "install"]:
        return words[4:]
    return None


def _pip_install(image: _Image, instruction: Instruction, words: list[str], ignore: DockerIgnore) -> PipInstall:
    arguments: list[Argument] = []
    index = 0
    while index < len(words):
        word = words[index]
        option, equals, attached = word.partition("=") if word.startswith("--") else (word, "", "")
        takes_value = option in _PASSED_VALUED or option in _DROPPED_VALUED or option in _FILE_VALUED or option in ("-e", "--editable")
        value = attached if equals else (words[index + 1] if takes_value and index + 1 < len(words) else "")
        index += 1 if equals or not takes_value else 2
        if option in _PASSED_FLAGS:
            arguments.append(option)
        elif option in _PASSED_VALUED:
            arguments += [option, value]
        elif option in _FILE_VALUED:
            arguments += [_FILE_VALUED[option], _local(image, instruction, value, ignore, folder=False)]
        elif option in ("-e", "--editable"):
            arguments.append(_requirement(image, instruction, value, ignore))
        elif option in _DROPPED_FLAGS or option in _DROPPED_VALUED:
            continue
        elif word.startswith("-"):
            raise ImageEnvironmentError(f"{image.where(instruction.line)}: pip option {option} is not understood; {DEV_ENV}")
        else:
            arguments.append(_requirement(image, instruction, word, ignore))
    return PipInstall(tuple(arguments))


def _requirement(image: _Image, instruction: Instruction, spec: str, ignore: DockerIgnore) -> Argument:
    """A local path (what the image copied there) or a requirement spec as written."""
    if "://" in spec or not (spec.startswith((".", "/", "~")) or "/" in spec.partition("[")[0]):
        return spec
    path, bracket, extras = spec.partition("[")
    local = _local(image, instruction, path, ignore, folder=True)
    return LocalFiles(local.image_path, local.files, bracket + extras)


def _local(image: _Image, instruction: Instruction, path: str, ignore: DockerIgnore, *, folder: bool) -> LocalFiles:
    """The context files that the stage's COPYs (so far) put at an image path."""
    image_path = _absolute(path, image.workdir)
    files: dict[str, Path] = {}
    for copy in image.copies:
        if copy.host is None:
            if _under(copy.image_path, image_path) or _under(image_path, copy.image_path):
                raise ImageEnvironmentError(f"{image.where(instruction.line)}: {path} comes from stage {copy.from_stage}; {DEV_ENV}")
            continue
        for relative, host in _files_of(copy, image.context, ignore):
            landed = _join(copy.image_path, relative) if relative else copy.image_path
            if _under(landed, image_path):
                files[str(PurePosixPath(landed).relative_to(image_path)) if landed != image_path else ""] = host
    if not files or (not folder and "" not in files):
        raise ImageEnvironmentError(
            f"{image.where(instruction.line)}: {path} is not copied from the build context before this RUN; {DEV_ENV}"
        )
    return LocalFiles(image_path, tuple(sorted(files.items())))


def _files_of(copy: _Copy, context: Path, ignore: DockerIgnore) -> Iterator[tuple[str, Path]]:
    assert copy.host is not None
    if not copy.host.is_dir():
        yield "", copy.host
        return
    for folder, names, files in os.walk(copy.host):
        here = Path(folder)
        names[:] = sorted(n for n in names if ignore.may_send_under(context_relative(here / n, context)))
        for name in sorted(files):
            if ignore.sent(context_relative(here / name, context)):
                yield (here / name).relative_to(copy.host).as_posix(), here / name


def _task_root_entries(image: _Image) -> Iterator[tuple[str, Path]]:
    task_root = image.values.get("LAMBDA_TASK_ROOT") or image.workdir
    for copy in image.copies:
        if not _under(copy.image_path, task_root):
            continue
        relative = "" if copy.image_path == task_root else str(PurePosixPath(copy.image_path).relative_to(task_root))
        if copy.host is not None:
            yield relative, copy.host
            continue
        if not relative:
            raise ImageEnvironmentError(
                f"{image.where(copy.line)}: a COPY --from={copy.from_stage} into the task root itself has no local stand-in; {DEV_ENV}"
            )
        stand_in = image.context / relative
        if not stand_in.exists():
            raise ImageEnvironmentError(f"{relative}/ is not built: {_build_hint(image, copy, relative)}")
        yield relative, stand_in.resolve()


def _build_hint(image: _Image, copy: _Copy, relative: str) -> str:
    stage = image.stages.get((copy.from_stage or "").lower())
    runs = " ".join(i.arguments for i in stage.instructions if i.keyword == "RUN") if stage else ""
    if "build-models" in runs:
        return "run `make models` (or `mlinfer build-models`)"
    return f"the image takes it from {copy.from_stage}; build it into {image.context / relative}"


# ---- small helpers -------------------------------------------------------------------------


@dataclass(frozen=True)
class DockerIgnore:
    """The context's .dockerignore: the last matching rule decides; a folder's rule covers what is under it."""

    rules: tuple[tuple[bool, str], ...]

    @classmethod
    def read(cls, context: Path) -> DockerIgnore:
        path = context / ".dockerignore"
        rules = []
        for line in path.read_text().splitlines() if path.is_file() else []:
            line = line.strip()
            if line and not line.startswith("#"):
                include = line.startswith("!")
                rules.append((include, line.lstrip("!").strip().strip("/")))
        return cls(tuple(rules))

    def sent(self, relative: str) -> bool:
        parts = relative.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        sent = True
        for include, pattern in self.rules:
            flat = pattern.replace("**/", "")
            if pattern == "**" or any(fnmatch.fnmatchcase(p, pattern) or fnmatch.fnmatchcase(p, flat) for p in prefixes):
                sent = include
        return sent

    def may_send_under(self, relative: str) -> bool:
        """Whether anything under the folder can be sent: it is, or an exception rule reaches into it."""
        return self.sent(relative) or any(include and (p.startswith(relative + "/") or p.startswith("*")) for include, p in self.rules)


def expand(text: str, values: Mapping[str, str]) -> str:
    """Docker's ``$NAME``, ``${NAME}``, ``${NAME:-default}`` and ``${NAME:+alternative}``."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(4)
        value = values.get(name, "")
        if match.group(2) == ":-":
            return value or match.group(3)
        if match.group(2) == ":+":
            return match.group(3) if value else ""
        return value

    return re.sub(r"\$\{(\w+)(?:(:[-+])([^}]*))?\}|\$(\w+)", one, text)


def _env_pairs(arguments: str, values: Mapping[str, str]) -> dict[str, str]:
    words = shlex.split(arguments)
    if words and "=" not in words[0]:  # the legacy ``ENV NAME value`` form
        return {words[0]: expand(" ".join(words[1:]), values)}
    pairs: dict[str, str] = {}
    for word in words:
        name, _, value = word.partition("=")
        pairs[name] = expand(value, {**values, **pairs})
    return pairs


def _command_words(arguments: str) -> list[str]:
    if arguments.startswith("["):
        with contextlib.suppress(json.JSONDecodeError):
            return [str(word) for word in json.loads(arguments)]
    return shlex.split(arguments)


def _unquote(value: str) -> str:
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'" else value


def _absolute(path: str, workdir: str) -> str:
    joined = path if path.startswith("/") else f"{workdir.rstrip('/')}/{path}"
    return os.path.normpath(joined) if joined != "/" else "/"


def _join(folder: str, name: str) -> str:
    return _absolute(name, folder)


def _under(path: str, folder: str) -> bool:
    return path == folder or folder == "/" or path.startswith(folder.rstrip("/") + "/")


def is_inside(path: Path, root: Path) -> bool:
    return path != root and root in path.parents


def context_relative(path: Path, context: Path) -> str:
    try:
        return path.relative_to(context).as_posix()
    except ValueError:
        return path.name
