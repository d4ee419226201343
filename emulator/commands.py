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
