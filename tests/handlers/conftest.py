"""A real ``mlinfer serve`` process on an ephemeral 127.0.0.1 port, shared by the handler tests."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.network import SERVER_TOKEN, start_server, stop_server

TOKEN = SERVER_TOKEN


@dataclass(frozen=True)
class LiveServer:
    base_url: str
    token: str
    log_path: Path


@pytest.fixture(scope="session")
def live_server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    process, base_url = start_server(log_path)
    try:
        yield LiveServer(base_url=base_url, token=TOKEN, log_path=log_path)
    finally:
        stop_server(process)


@pytest.fixture()
def client(live_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server.base_url, timeout=30.0) as http:
        yield http
