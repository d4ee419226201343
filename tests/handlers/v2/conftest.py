"""One real ``mlinfer serve`` process for the Open Inference Protocol tests, REST and gRPC alike.

It serves the repository's registry with a token, on a free HTTP port and a free ``GRPC_PORT``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import MODELS_DIR, require_models
from tests.network import SERVER_TOKEN, free_port, start_server, stop_server

MODEL_FILES = tuple(MODELS_DIR / name / "model.onnx" for name in ("sentiment_v1", "sentiment_v2", "iris_v1", "embedding_v1"))


@dataclass(frozen=True)
class V2Server:
    http_url: str
    """``http://127.0.0.1:<port>``."""
    grpc_address: str
    """``127.0.0.1:<port>`` (GRPC_PORT of the process)."""
    token: str
    log_path: Path

    @property
    def http_address(self) -> str:
        """``127.0.0.1:<port>``, as ``tritonclient.http`` takes it."""
        return self.http_url.removeprefix("http://")

    @property
    def headers(self) -> dict[str, str]:
        return {"X-Token": self.token}


@pytest.fixture(scope="session")
def v2_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[V2Server]:
    require_models(*MODEL_FILES)
    log_path = tmp_path_factory.mktemp("v2-server") / "server.log"
    grpc_port = free_port()
    # start_server polls /health/ready until it answers 200, for at most STARTUP_TIMEOUT_S.
    # LOG_LEVEL=INFO: the access log shows every reply, so a test can find any 500 in it.
    process, base_url = start_server(log_path, ready_path="/health/ready", GRPC_PORT=str(grpc_port), LOG_LEVEL="INFO")
    try:
        yield V2Server(http_url=base_url, grpc_address=f"127.0.0.1:{grpc_port}", token=SERVER_TOKEN, log_path=log_path)
    finally:
        stop_server(process)
