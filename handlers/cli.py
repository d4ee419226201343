"""``mlinfer``: the command line."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from engine.settings import Settings


def _serve(args: argparse.Namespace) -> int:
    from handlers.server import serve

    serve(Settings(), host=args.host, port=args.port, workers=args.workers)
    return 0


def _build_models(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from engine.modelbuild.build import build_models

    output = args.output if args.output is not None else Settings().model_registry_path.resolve().parent / "models"
    built = build_models(output, force=args.force, progress=not args.quiet)
    print(f"models {'built' if built else 'already up to date'} in {output}")
    return 0


def _emulate(args: argparse.Namespace) -> int:
    from emulator.commands import emulate

    return emulate(args)


def _invoke(args: argparse.Namespace) -> int:
    from emulator.commands import invoke

    return invoke(args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlinfer", description="ml-inference-system command line")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve the registry's models over HTTP")
    serve.add_argument("--host", help="address to bind (default: HOST, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default: PORT, 8000)")
    serve.add_argument("--workers", type=int, help="server processes (default: WORKERS, 1)")
    serve.set_defaults(run=_serve)

    build = commands.add_parser("build-models", help="build the default model versions (sentiment, iris)")
    build.add_argument("--output", type=Path, help="folder to write (default: models/ beside the registry)")
    build.add_argument("--force", action="store_true", help="rebuild even when up to date")
    build.add_argument("--quiet", action="store_true", help="no progress bars")
    build.set_defaults(run=_build_models)

    from emulator.commands import add_arguments

    emulate = commands.add_parser("emulate", help="run the template's Lambda functions locally (HTTP front, Invoke API)")
    emulate.set_defaults(run=_emulate)
    invoke = commands.add_parser("invoke", help="invoke one function of the template once, like sam local invoke")
    invoke.set_defaults(run=_invoke)
    add_arguments(emulate, invoke)

    args = parser.parse_args(argv)
    result: int = args.run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
