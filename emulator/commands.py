"""What ``mlinfer emulate`` and ``mlinfer invoke`` do, given their parsed arguments."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path

from emulator.pool import invoke_once
from emulator.server import EmulatorConfig, serve
from emulator.template import FunctionSpec, load_functions


def _stderr_sink(function: str, text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()


def _functions(args: argparse.Namespace) -> dict[str, FunctionSpec]:
    overrides = dict(item.split("=", 1) for item in args.parameter_overrides or [])
    return load_functions(args.template, args.env_vars, overrides)


def emulate(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = EmulatorConfig(
        host=args.host,
        port=args.port,
        lambda_port=args.lambda_port,
        max_concurrency=args.max_concurrency,
        runtime_api_port=args.runtime_api_port,
        runtime_api_function=args.runtime_api_function,
    )
    asyncio.run(serve(_functions(args), config, os.environ, _stderr_sink))
    return 0


def invoke(args: argparse.Namespace) -> int:
    """Prints the function's log to stderr, the response to stdout, then the REPORT line."""
    functions = _functions(args)
    if args.function not in functions:
        print(f"no function {args.function!r} in {args.template} (functions: {', '.join(functions)})", file=sys.stderr)
        return 2
    payload = sys.stdin.buffer.read() if str(args.event) == "-" else Path(args.event).read_bytes() if args.event else b"{}"
    json.loads(payload)  # an invalid event fails here, as sam local invoke does
    invocation = asyncio.run(invoke_once(functions[args.function], payload, os.environ, lambda _name, _text: None))
    body, _, report = invocation.log.rpartition("REPORT RequestId:")
    sys.stderr.write(body)
    sys.stderr.flush()
    print(invocation.payload.decode())
    sys.stdout.flush()
    sys.stderr.write("REPORT RequestId:" + report)
    return 1 if invocation.function_error else 0


def add_arguments(emulate_parser: argparse.ArgumentParser, invoke_parser: argparse.ArgumentParser) -> None:
    for parser in (emulate_parser, invoke_parser):
        parser.add_argument("--template", "-t", type=Path, default=Path("template.yaml"), help="SAM template (default: template.yaml)")
        parser.add_argument("--env-vars", "-n", type=Path, help='JSON overrides: {"Parameters": {...}, "<Function>": {...}}')
        parser.add_argument("--parameter-overrides", nargs="*", metavar="KEY=VALUE", help="template parameter values")
    emulate_parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    emulate_parser.add_argument("--port", "-p", type=int, default=3000, help="HTTP front, like sam local start-api (default: 3000)")
    emulate_parser.add_argument("--lambda-port", type=int, default=3001, help="Invoke API, like sam local start-lambda (default: 3001)")
    emulate_parser.add_argument("--max-concurrency", type=int, default=10, help="environments per function before 429 (default: 10)")
    emulate_parser.add_argument("--runtime-api-port", type=int, help="serve a function through the Lambda Runtime API on this port")
    emulate_parser.add_argument("--runtime-api-function", help="the function the Runtime API serves (default: the first)")
    invoke_parser.add_argument("function", help="logical id of the function in the template")
    invoke_parser.add_argument("--event", "-e", help="event JSON file, '-' for stdin (default: {})")
