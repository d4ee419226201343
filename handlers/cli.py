"""``mlinfer``: the command line.

``serve`` is what the images run. ``build-models`` (the ``build`` extra) and ``emulate`` /
``invoke`` (the emulator) are tools: each imports its package only when it runs, so an image
that carries neither still runs ``mlinfer serve``, and a missing tool says how to install it.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path
from types import ModuleType

from engine.settings import Settings

_TOOL_HINTS = {
    "modelbuild": "the model build is not installed here: pip install 'ml-inference-system[build]' from a checkout (make models does)",
    "emulator": "the emulator is not installed here: pip install 'ml-inference-system[emulator]' from a checkout (make emulate does)",
}


class MissingTool(Exception):
    """A subcommand's package is not installed; the message says how to get it."""


def _tool(package: str, module: str) -> ModuleType:
    try:
        return importlib.import_module(f"{package}.{module}")
    except ModuleNotFoundError as exc:
        # Only the tool's own package (or a library only it needs) missing is a hint; other errors surface as they are.
        if exc.name is None or exc.name.split(".")[0] in ("engine", "handlers"):
            raise
        raise MissingTool(f"{_TOOL_HINTS[package]} ({exc})") from exc


def _serve(args: argparse.Namespace) -> int:
    from handlers.server import serve

    return serve(Settings(), host=args.host, port=args.port, workers=args.workers)


def _build_models(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    build = _tool("modelbuild", "build")
    output = args.output if args.output is not None else Settings().model_registry_path.resolve().parent / "models"
    built = build.build_models(output, force=args.force, progress=not args.quiet, data_dir=args.data_dir)
    print(f"models {'built' if built else 'already up to date'} in {output}")
    return 0


def _emulate(args: argparse.Namespace) -> int:
    result: int = _tool("emulator", "commands").emulate(args)
    return result


def _invoke(args: argparse.Namespace) -> int:
    result: int = _tool("emulator", "commands").invoke(args)
    return result


def _emulator_arguments(emulate: argparse.ArgumentParser, invoke: argparse.ArgumentParser) -> None:
    """The options of ``sam local start-api``/``start-lambda`` and ``sam local invoke`` that apply here, and the emulator's own.

    An option left unset is taken from samconfig.toml, else its default (so these defaults are None here).
    """
    for parser, sections in ((emulate, "local_start_api and local_start_lambda"), (invoke, "local_invoke")):
        parser.epilog = f"Unset options come from samconfig.toml beside the template (global, then {sections}), else their defaults."
        parser.add_argument("--template", "--template-file", "-t", type=Path, help="SAM template (default: template.yaml)")
        parser.add_argument("--env-vars", "-n", type=Path, help='JSON overrides: {"Parameters": {...}, "<Function>": {...}}')
        parser.add_argument(
            "--parameter-overrides",
            nargs="+",
            action="extend",
            metavar="OVERRIDE",
            help="template parameter values, as sam takes them: 'Key=Value Other=Value' or 'ParameterKey=Key,ParameterValue=Value'",
        )
        parser.add_argument("--config-file", type=Path, help="samconfig.toml to read (default: the one beside the template, if any)")
        parser.add_argument("--config-env", help="the config environment of samconfig.toml (default: default)")
        parser.add_argument("--log-file", "-l", type=Path, help="append the functions' logs to this file instead of stderr")
        parser.add_argument("--no-memory-limit", action="store_true", default=None, help="do not enforce MemorySize")
        parser.add_argument(
            "--use-dev-env",
            action="store_true",
            default=None,
            help="run functions with this interpreter and the code as it is, not the image's dependency set and task root",
        )
    emulate.add_argument("--host", help="address to bind (default: 127.0.0.1)")
    emulate.add_argument("--port", "-p", type=int, help="HTTP front, like sam local start-api (default: 3000)")
    emulate.add_argument("--lambda-port", type=int, help="Invoke API, like sam local start-lambda (default: 3001)")
    emulate.add_argument("--max-concurrency", type=int, help="environments per function before 429 (default: 10)")
    emulate.add_argument("--runtime-api-port", type=int, help="serve a function through the Lambda Runtime API on this port")
    emulate.add_argument("--runtime-api-function", help="the function the Runtime API serves (default: the first)")
    emulate.add_argument(
        "--runtime-api-launch", action="store_true", default=None, help="start the runtime too (python -m awslambdaric), as the RIE does"
    )
    emulate.add_argument(
        "--warm-containers",
        type=str.upper,
        choices=("EAGER", "LAZY"),
        help="EAGER: start one environment per function now; LAZY: at its first invocation (default: LAZY)",
    )
    emulate.add_argument(
        "--no-reload", "--no-watch", action="store_true", default=None, help="keep warm environments when a source file changes"
    )
    emulate.add_argument(
        "--event-retry-delays", metavar="SECONDS,SECONDS", help="waits before the retries of a failed Event invocation (default: 60,120)"
    )
    emulate.add_argument("--shutdown-timeout", type=float, metavar="SECONDS", help="stop within this on SIGTERM or SIGINT (default: 5)")
    invoke.add_argument("function", help="logical id of the function in the template")
    invoke.add_argument("--event", "-e", help="event JSON file, '-' for stdin (default: {})")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="mlinfer", description="ml-inference-system command line")
    commands = root.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve the registry's models over HTTP")
    serve.add_argument("--host", help="address to bind (default: HOST, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default: PORT, 8000)")
    serve.add_argument("--workers", type=int, help="server processes (default: WORKERS, else one per CPU)")
    serve.set_defaults(run=_serve)

    build = commands.add_parser("build-models", help="build the default models (needs the build extra)")
    build.add_argument("--output", type=Path, help="folder to write (default: models/ beside the registry)")
    build.add_argument("--force", action="store_true", help="rebuild even when up to date")
    build.add_argument("--quiet", action="store_true", help="no progress bars")
    build.add_argument("--data-dir", type=Path, help="folder of the downloaded source archives (default: model-data/ in the Python prefix)")
    build.set_defaults(run=_build_models)

    emulate = commands.add_parser("emulate", help="run the template's Lambda functions locally (HTTP front, Invoke API)")
    emulate.set_defaults(run=_emulate)
    invoke = commands.add_parser("invoke", help="invoke one function of the template once, like sam local invoke")
    invoke.set_defaults(run=_invoke)
    _emulator_arguments(emulate, invoke)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        result: int = args.run(args)
    except MissingTool as exc:
        print(f"mlinfer {args.command}: {exc}", file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    sys.exit(main())
