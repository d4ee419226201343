"""SAM CLI's conventions for a command's options: ``samconfig.toml``, and ``--parameter-overrides``' syntax.

``samconfig.toml`` holds one table per config environment (``--config-env``, "default") and
command, as ``sam`` writes it::

    version = 0.1
    [default.global.parameters]
    parameter_overrides = "Stage=local"
    [default.local_invoke.parameters]
    env_vars = "events/local-env.json"

A command reads ``global`` then its own tables (later ones win); the command line wins over all
of them. Relative paths in the file are relative to the file's folder.
"""

from __future__ import annotations

import logging
import re
import shlex
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_FILE = "samconfig.toml"
DEFAULT_ENV = "default"
GLOBAL_SECTION = "global"
_KEY_VALUE = re.compile(r"([A-Za-z0-9]+)=(.*)", re.DOTALL)
_CLOUDFORMATION_FORM = re.compile(r"ParameterKey=([A-Za-z0-9]+),ParameterValue=(.*)", re.DOTALL)
_EXAMPLES = "'Key=Value Other=Value' or 'ParameterKey=Key,ParameterValue=Value'"


class SamConfigError(ValueError):
    """The configuration file cannot be read as ``sam`` reads it; the message says where."""


class OverrideSyntaxError(ValueError):
    """A ``--parameter-overrides`` value in neither of SAM's forms."""


def parse_parameter_overrides(values: str | Iterable[str]) -> dict[str, str]:
    """``--parameter-overrides`` as SAM CLI reads it: each value holds space-separated
    ``Key=Value`` or ``ParameterKey=Key,ParameterValue=Value`` items; a value may be quoted
    ("Key='a b'") and a later item wins."""
    parsed: dict[str, str] = {}
    for value in [values] if isinstance(values, str) else values:
        try:
            items = shlex.split(value)
        except ValueError as exc:
            raise OverrideSyntaxError(f"--parameter-overrides {value!r}: {exc}") from None
        for item in items:
            match = _CLOUDFORMATION_FORM.fullmatch(item) or _KEY_VALUE.fullmatch(item)
            if match is None:
                raise OverrideSyntaxError(f"--parameter-overrides {item!r} is not a parameter value: write {_EXAMPLES}")
            parsed[match.group(1)] = match.group(2)
    return parsed


def find(explicit: Path | None, template: Path | None) -> Path | None:
    """The configuration file to read: ``--config-file`` (which must exist), else ``samconfig.toml``
    beside the template (the current folder without one), when it exists."""
    if explicit is not None:
        if not explicit.is_file():
            raise SamConfigError(f"--config-file {explicit}: no such file")
        return explicit
    candidate = (template.parent if template is not None else Path(".")) / DEFAULT_FILE
    return candidate if candidate.is_file() else None


def read(path: Path, env: str, sections: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Each of ``sections``' ``parameters`` table in config environment ``env``, ``global`` first.

    A config environment the file lacks is an error when it was asked for by name (not "default").
    """
    try:
        document = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise SamConfigError(f"{path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SamConfigError(f"{path} is not TOML: {exc}") from None
    tables = document.get(env)
    if tables is None:
        if env != DEFAULT_ENV:
            named = [name for name, value in document.items() if isinstance(value, dict)]
            raise SamConfigError(f"{path} has no config environment {env!r} (it has: {', '.join(named) or 'none'})")
        return {}
    if not isinstance(tables, dict):
        raise SamConfigError(f"{path}: {env} is not a table")
    found: dict[str, dict[str, Any]] = {}
    for section in (GLOBAL_SECTION, *sections):
        parameters = (tables.get(section) or {}).get("parameters") or {}
        if not isinstance(parameters, dict):
            raise SamConfigError(f"{path}: [{env}.{section}.parameters] is not a table")
        found[section] = dict(parameters)
    logger.debug("read %s [%s] %s", path, env, ", ".join(found))
    return found


def relative_to(path: Path, value: Any) -> Path:
    """A path option of the file: relative paths are relative to the file's folder."""
    given = Path(str(value))
    return given if given.is_absolute() else path.parent / given


def merged(tables: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The tables' options, a later table's value winning."""
    options: dict[str, Any] = {}
    for table in tables.values():
        options.update(table)
    return options
