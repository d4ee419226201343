"""Code reload: a change of a function's code replaces its warm environments.

As ``sam local start-api`` restarts a function's containers when its code changes, the next
invocation after a change is a cold start with the new code. An image function's code is what
its Dockerfile copies into the task root (``engine/``, ``handlers/``, ... of its Docker context);
a Zip function's is its whole CodeUri folder. Never code: hidden folders (``.git``, ``.venv``,
...), caches (``__pycache__``), ``node_modules``, ``logs/``, build output and ``*.egg-info``,
compiled files, ``*.log``, editors' swap files, and the folders a function writes to through a
``file://`` URI in its environment (e.g. ``BATCH_RESULTS_URI``). Hidden and cache folders are not
even walked, so that a large ``.venv`` costs no inotify watches; a top-level folder created after
the start is not watched inside.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import watchfiles

from emulator.image_plan import ImageEnvironmentError, image_plan
from emulator.pool import Executor
from emulator.sandbox import output_folders
from emulator.template import FunctionSpec

logger = logging.getLogger(__name__)

IGNORED_DIRECTORIES = frozenset({"__pycache__", "node_modules", "logs", "build", "dist", "site-packages"})
"""Never code, whatever the project (besides every hidden folder and every ``*.egg-info``)."""
_IGNORED_FILES = re.compile(r"(\.py[cod]|\.log|\.sw[a-z]|~|\.tmp|\.DS_Store)$|^#.*#$|^\.#")
"""Compiled files, logs, and editors' swap, backup and lock files."""


def ignored(path: Path, root: Path, written: Iterable[Path] = ()) -> bool:
    """Whether a path is no code of the function whose code folder is ``root`` (a folder itself is none)."""
    if path.is_dir():
        return True
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        return True
    if any(not _code_folder(part) for part in parts[:-1]) or (parts and _IGNORED_FILES.search(parts[-1])):
        return True
    return any(path.is_relative_to(folder) for folder in written)


def _code_folder(name: str) -> bool:
    return not (name.startswith(".") or name in IGNORED_DIRECTORIES or name.endswith(".egg-info"))


def code_paths(spec: FunctionSpec) -> list[Path] | None:
    """The files and folders of an image function's code folder that its Dockerfile copies into the
    task root; None for the whole folder (a Zip function, or a Dockerfile that cannot be read)."""
    if spec.dockerfile is None or not spec.dockerfile.is_file():
        return None
    try:
        plan = image_plan(spec.dockerfile, spec.code_root)
    except (ImageEnvironmentError, OSError):
        return None
    return [host.resolve() for _relative, host in plan.task_root]


def _mine(path: Path, root: Path, scope: list[Path] | None, written: Sequence[Path]) -> bool:
    return not ignored(path, root, written) and (scope is None or any(path.is_relative_to(entry) for entry in scope))


def written_folders(executors: Mapping[str, Executor]) -> list[Path]:
    """The folders the functions' ``file://`` environment values name: their output, not their code."""
    return [folder for executor in executors.values() for folder in output_folders(executor.spec.environment)]


def _targets(root: Path, written: Sequence[Path]) -> list[Path]:
    """The sub-folders of ``root`` to watch recursively (the root itself is watched alone)."""
    if not root.is_dir():
        return []
    return sorted(
        entry
        for entry in root.iterdir()
        if entry.is_dir() and _code_folder(entry.name) and not any(entry.is_relative_to(f) for f in written)
    )


async def watch(roots: Sequence[Path], executors: Mapping[str, Executor]) -> None:
    """Recycle a function's environments whenever a file under its code folder changes; runs until cancelled.

    ``roots`` are the folders to watch (the functions' code folders); a change is given to every
    function whose code folder holds the changed file.
    """
    folders = list(dict.fromkeys(Path(root).resolve() for root in roots))
    written = written_folders(executors)
    recursive = [target for root in folders for target in _targets(root, written)]
    watching = [_changes(folders, False, written, executors)]
    if recursive:
        watching.append(_changes(recursive, True, written, executors))
    logger.debug("watching %s for code changes", ", ".join(map(str, folders)))
    await asyncio.gather(*watching)


async def _changes(paths: Sequence[Path], recursive: bool, written: Sequence[Path], executors: Mapping[str, Executor]) -> None:
    scopes = [(executor.spec.code_root.resolve(), code_paths(executor.spec)) for executor in executors.values()]

    def code(_change: watchfiles.Change, path: str) -> bool:
        return any(_mine(Path(path), root, scope, written) for root, scope in scopes)

    try:
        async for changes in watchfiles.awatch(*paths, watch_filter=code, recursive=recursive, debounce=300, step=50):
            await replace(sorted({Path(path) for _change, path in changes}), executors, written)
    except (OSError, RuntimeError) as exc:  # e.g. the inotify watch limit: the emulator runs on, without reload
        logger.warning("code reload is off for %s: %s", ", ".join(map(str, paths)), exc)


async def replace(changed: Sequence[Path], executors: Mapping[str, Executor], written: Sequence[Path] = ()) -> list[str]:
    """Recycle each function that has one of the changed files in its code; the names, in order."""
    replaced: list[str] = []
    for name, executor in executors.items():
        root = executor.spec.code_root.resolve()
        scope = code_paths(executor.spec)
        mine = [path for path in changed if _mine(path, root, scope, written)]
        if not mine:
            continue
        more = f" (and {len(mine) - 1} more)" if len(mine) > 1 else ""
        try:
            await executor.recycle()
        except Exception as exc:  # one function's failure leaves the others' reload on
            logger.warning("%s changed%s: replacing %s environments failed: %s", mine[0].relative_to(root), more, name, exc)
            continue
        replaced.append(name)
        logger.info("%s changed%s: %s environments replaced", mine[0].relative_to(root), more, name)
    return replaced
