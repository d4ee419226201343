"""What ``mlinfer emulate`` and ``mlinfer invoke`` do, given their parsed arguments.

Each option comes from the command line, else from samconfig.toml (``global``, then
``local_start_lambda`` and ``local_start_api`` for emulate, ``local_invoke`` for invoke; as in
``sam``, a ``port`` under ``local_start_lambda`` is the Invoke API's), else its default. A mistake
in what was asked (the template, an event file, a parameter, the configuration, the image's
environment) is one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import logging
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from emulator import samconfig
from emulator.image_env import ImageEnvironment, image_environment, zip_environment
from emulator.image_plan import ImageEnvironmentError
from emulator.intrinsics import ParameterError
from emulator.pool import Invocation, WorkerPool
from emulator.samconfig import OverrideSyntaxError, SamConfigError
from emulator.server import EmulatorConfig, serve
from emulator.template import EnvVarsError, FunctionSpec, TemplateError, load_functions
from emulator.worker import EnvironmentOptions

logger = logging.getLogger(__name__)

EXIT_MISTAKE = 2
"""The exit status of a command that could not run as asked (argparse's, too)."""
DEFAULT_TEMPLATES = (Path("template.yaml"), Path("template.yml"))
EMULATE_SECTIONS = ("local_start_lambda", "local_start_api")
INVOKE_SECTIONS = ("local_invoke",)
_DEFAULTS = EmulatorConfig()


class CommandError(ValueError):
    """An option or a file of the command is wrong; the message is one line that says which."""


_MISTAKES = (CommandError, TemplateError, EnvVarsError, ParameterError, OverrideSyntaxError, SamConfigError, ImageEnvironmentError)


# ---- options: the command line, samconfig.toml, defaults ----------------------------------------


def _path(value: Any, config: Path) -> Path:
    return samconfig.relative_to(config, value)


def _event_path(value: Any, config: Path) -> str:
    return "-" if value == "-" else str(samconfig.relative_to(config, value))


def _overrides(value: Any, _config: Path) -> list[str]:
    return [value] if isinstance(value, str) else [str(item) for item in value]


def _flag(value: Any, _config: Path) -> bool:
    if not isinstance(value, bool):
        raise CommandError(f"{value!r} is not true or false")
    return value


def _integer(value: Any, _config: Path) -> int:
    return int(value)


def _number(value: Any, _config: Path) -> float:
    return float(value)


def _text(value: Any, _config: Path) -> str:
    return str(value)


@dataclass(frozen=True)
class Option:
    """One option of a command: its default, and how samconfig.toml's value (TOML, paths relative to the file) becomes it."""

    default: Any
    from_config: Callable[[Any, Path], Any]
    keys: tuple[str, ...] = ()
    """samconfig.toml's names for it, when they differ from the option's."""


COMMON_OPTIONS = {
    "template": Option(None, _path, ("template_file", "template")),
    "env_vars": Option(None, _path),
    "parameter_overrides": Option((), _overrides),
    "log_file": Option(None, _path),
    "no_memory_limit": Option(False, _flag),
    "use_dev_env": Option(False, _flag),
}
EMULATE_OPTIONS = {
    **COMMON_OPTIONS,
    "host": Option(_DEFAULTS.host, _text),
    "port": Option(_DEFAULTS.port, _integer),
    "lambda_port": Option(_DEFAULTS.lambda_port, _integer),
    "max_concurrency": Option(_DEFAULTS.max_concurrency, _integer),
    "runtime_api_port": Option(None, _integer),
    "runtime_api_function": Option(None, _text),
    "runtime_api_launch": Option(False, _flag),
    "warm_containers": Option(_DEFAULTS.warm_containers, _text),
    "no_reload": Option(not _DEFAULTS.reload, _flag, ("no_reload", "no_watch")),
    "event_retry_delays": Option(None, _text),
    "shutdown_timeout": Option(_DEFAULTS.shutdown_timeout_s, _number),
}
INVOKE_OPTIONS = {**COMMON_OPTIONS, "event": Option(None, _event_path)}


def resolve(args: argparse.Namespace, options: Mapping[str, Option], sections: tuple[str, ...]) -> argparse.Namespace:
    """``args`` with every option set: the command line's value, else samconfig.toml's, else the default."""
    explicit = getattr(args, "template", None)
    config_path = samconfig.find(getattr(args, "config_file", None), explicit)
    configured: dict[str, Any] = {}
    env = getattr(args, "config_env", None)
    if config_path is None and env not in (None, samconfig.DEFAULT_ENV):
        raise CommandError(f"--config-env {env}: there is no {samconfig.DEFAULT_FILE} beside the template (--config-file names one)")
    if config_path is not None:
        tables = samconfig.read(config_path, env or samconfig.DEFAULT_ENV, sections)
        if "local_start_lambda" in tables and "port" in tables["local_start_lambda"]:
            tables["local_start_lambda"]["lambda_port"] = tables["local_start_lambda"].pop("port")
        configured = samconfig.merged(tables)
        _warn_unknown(config_path, tables, options)
    resolved = argparse.Namespace(**vars(args))
    for name, option in options.items():
        value = getattr(args, name, None)
        if value is None and config_path is not None:
            key = next((key for key in option.keys or (name,) if key in configured), None)
            if key is not None:
                try:
                    value = option.from_config(configured[key], config_path)
                except (TypeError, ValueError) as exc:
                    raise CommandError(f"{config_path}: {key} = {configured[key]!r}: {exc}") from None
        setattr(resolved, name, option.default if value is None else value)
    if resolved.template is None:
        resolved.template = next((path for path in DEFAULT_TEMPLATES if path.is_file()), DEFAULT_TEMPLATES[0])
    return resolved


def _warn_unknown(path: Path, tables: Mapping[str, Mapping[str, Any]], options: Mapping[str, Option]) -> None:
    known = {key for name, option in options.items() for key in (name, *option.keys)}
    for section, table in tables.items():
        # The global table holds every sam command's options (stack_name, region, ...): only a command's own are checked.
        unknown = [key for key in table if key not in known] if section != samconfig.GLOBAL_SECTION else []
        if unknown:
            logger.warning("%s: [%s.parameters] %s: not options of mlinfer, ignored", path, section, ", ".join(unknown))


# ---- what each command runs --------------------------------------------------------------------


class _LogStream:
    """The functions' log stream: stderr, or appended to ``--log-file`` (sam's ``--log-file``)."""

    def __init__(self, path: Path | None) -> None:
        try:
            self._file: IO[str] | None = path.open("a", encoding="utf-8") if path is not None else None
        except OSError as exc:
            raise CommandError(f"--log-file {path}: {exc.strerror}") from None

    def __call__(self, function: str, text: str) -> None:
        stream = self._file or sys.stderr
        stream.write(text)
        stream.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def _functions(options: argparse.Namespace) -> dict[str, FunctionSpec]:
    overrides = samconfig.parse_parameter_overrides(options.parameter_overrides)
    return load_functions(options.template, options.env_vars, overrides)


def environments(functions: Mapping[str, FunctionSpec], *, dev_env: bool, memory_limit: bool) -> dict[str, EnvironmentOptions]:
    """Each function's environment: its image's dependency set and task root (built once per
    Dockerfile and context, or per Zip CodeUri), or with ``dev_env`` this interpreter and the code as it is."""
    if dev_env:
        shared = EnvironmentOptions(memory_limit=memory_limit)
        return dict.fromkeys(functions, shared)
    built: dict[tuple[Path | None, Path, str | None], ImageEnvironment] = {}
    chosen: dict[str, EnvironmentOptions] = {}
    for name, spec in functions.items():
        key = (spec.dockerfile, spec.code_root, spec.runtime)
        if key not in built:
            if spec.dockerfile is not None:
                built[key] = image_environment(spec.dockerfile, spec.code_root, log=logger.info)
            else:
                built[key] = zip_environment(spec.code_root, log=logger.info, runtime=spec.runtime)
        image = built[key]
        chosen[name] = EnvironmentOptions(memory_limit=memory_limit, python=str(image.python), task_root=image.task_root)
    return chosen


def _retry_delays(text: str | None) -> tuple[float, ...]:
    if text is None:
        return _DEFAULTS.event_retry_delays_s
    try:
        delays = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise CommandError(f"--event-retry-delays {text!r}: write the seconds before each retry, comma-separated (60,120)") from None
    if any(delay < 0 for delay in delays):
        raise CommandError(f"--event-retry-delays {text!r}: a delay cannot be negative")
    return delays


def emulator_config(options: argparse.Namespace, functions: Mapping[str, FunctionSpec]) -> EmulatorConfig:
    warm = str(options.warm_containers).upper()
    if warm not in ("EAGER", "LAZY"):
        raise CommandError(f"--warm-containers {options.warm_containers!r}: EAGER or LAZY")
    function = options.runtime_api_function
    if function is not None and function not in functions:
        raise CommandError(f"--runtime-api-function {function!r} is not a function of {options.template} ({', '.join(functions)})")
    if options.runtime_api_port is None and (function is not None or options.runtime_api_launch):
        raise CommandError("--runtime-api-function and --runtime-api-launch need --runtime-api-port")
    return EmulatorConfig(
        host=options.host,
        port=options.port,
        lambda_port=options.lambda_port,
        max_concurrency=options.max_concurrency,
        runtime_api_port=options.runtime_api_port,
        runtime_api_function=function,
        runtime_api_launch=options.runtime_api_launch,
        warm_containers="EAGER" if warm == "EAGER" else "LAZY",
        reload=not options.no_reload,
        event_retry_delays_s=_retry_delays(options.event_retry_delays),
        shutdown_timeout_s=options.shutdown_timeout,
    )


def emulate(args: argparse.Namespace) -> int:
    """``mlinfer emulate``: the HTTP front, the Invoke API and optionally a Runtime API, until stopped."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        options = resolve(args, EMULATE_OPTIONS, EMULATE_SECTIONS)
        functions = _functions(options)
        config = emulator_config(options, functions)
        chosen = environments(functions, dev_env=options.use_dev_env, memory_limit=not options.no_memory_limit)
        log = _LogStream(options.log_file)
    except _MISTAKES as exc:
        return _mistake("emulate", exc)
    try:
        asyncio.run(serve(functions, config, os.environ, log, environments=chosen))
    except OSError as exc:
        if exc.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
            raise
        ports = ", ".join(str(port) for port in (config.port, config.lambda_port, config.runtime_api_port) if port is not None)
        return _mistake("emulate", CommandError(f"cannot serve on {config.host} (ports {ports}): {exc.strerror}"))
    except KeyboardInterrupt:
        return 130
    finally:
        log.close()
    return 0


def invoke(args: argparse.Namespace) -> int:
    """``mlinfer invoke``, as ``sam local invoke``: the function's log on stderr (or ``--log-file``), then the response on stdout.

    Exit status 1 for a function error, 2 for a mistake in the command.
    """
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        options = resolve(args, INVOKE_OPTIONS, INVOKE_SECTIONS)
        functions = _functions(options)
        spec = functions.get(options.function)
        if spec is None:
            raise CommandError(f"no function {options.function!r} in {options.template} (functions: {', '.join(functions) or 'none'})")
        payload = read_event(options.event)
        chosen = environments({spec.name: spec}, dev_env=options.use_dev_env, memory_limit=not options.no_memory_limit)
        log = _LogStream(options.log_file)
    except _MISTAKES as exc:
        return _mistake("invoke", exc)
    try:
        invocation = asyncio.run(_invoke_once(spec, payload, chosen[spec.name], log))
    except KeyboardInterrupt:
        return 130
    finally:
        log.close()
    sys.stdout.write(invocation.payload.decode() + "\n")
    sys.stdout.flush()
    return 1 if invocation.function_error else 0


async def _invoke_once(spec: FunctionSpec, payload: bytes, environment: EnvironmentOptions, log: _LogStream) -> Invocation:
    """One invocation in a fresh environment: always a cold start."""
    pool = WorkerPool(spec, os.environ, max_concurrency=1, log_sink=log, options=environment)
    try:
        return await pool.invoke(payload)
    finally:
        await pool.close()


def read_event(path: str | None) -> bytes:
    """The event: a JSON file, stdin for "-", ``{}`` for none (as ``sam local invoke``); ``CommandError`` when it is not JSON."""
    if path is None:
        return b"{}"
    where = "the event on stdin" if path == "-" else f"event file {path}"
    try:
        payload = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except FileNotFoundError:
        raise CommandError(f"{where}: no such file") from None
    except OSError as exc:
        raise CommandError(f"{where}: {exc.strerror}") from None
    try:
        json.loads(payload)
    except UnicodeDecodeError:
        raise CommandError(f"{where} is not JSON: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise CommandError(f"{where} is not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    return payload


def _mistake(command: str, error: Exception) -> int:
    message = " ".join(str(error).split())
    print(f"mlinfer {command}: {message}", file=sys.stderr)
    return EXIT_MISTAKE
