"""The OpenAPI contract, fuzzed: schemathesis ``--checks all`` (from .venv-tools, `make tools`) over
every operation of a real ``mlinfer serve``, with a fixed seed, with and without the tokens.

No 500, every status and header documented, every body as its schema says, schema-valid
requests accepted and invalid ones refused. ``bench/fuzz.py`` runs the same over 2,000+ cases.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.fuzz import AUTH_HEADERS, SCHEMATHESIS, TOKENS, schemathesis
from tests.network import start_server, stop_server

SEED = 20261201
MAX_EXAMPLES = 25
RUN_TIMEOUT_S = 240.0
OPERATIONS = 17  # the native API's 8 and the Open Inference Protocol's 9


@pytest.fixture(scope="module")
def fuzzed_server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not SCHEMATHESIS.is_file():
        pytest.fail(f"{SCHEMATHESIS} is missing: run `make tools` (it installs schemathesis from infra/tools-requirements.txt)")
    log_path = tmp_path_factory.mktemp("contract") / "server.log"
    process, base_url = start_server(log_path, "--workers", "1", **TOKENS)
    try:
        yield base_url
    finally:
        stop_server(process)


@pytest.mark.parametrize("headers", [AUTH_HEADERS, {}], ids=["with-auth", "without-auth"])
def test_schemathesis_finds_nothing(fuzzed_server: str, tmp_path: Path, headers: dict[str, str]) -> None:
    run = schemathesis(fuzzed_server, headers, seed=SEED, max_examples=MAX_EXAMPLES, workdir=tmp_path, timeout_s=RUN_TIMEOUT_S)
    operations = run.report["operations"]
    assert isinstance(operations, dict) and operations["tested"] == OPERATIONS, run.output
    assert run.cases >= 100, run.output
    assert (run.failures, run.exit_code) == (0, 0), run.output


def test_the_schema_covers_every_route_and_its_tokens(fuzzed_server: str) -> None:
    spec = httpx.get(f"{fuzzed_server}/openapi.json", timeout=10).json()
    paths = spec["paths"]
    operations = {(path, method) for path, item in paths.items() for method in item}
    assert len(operations) == OPERATIONS, sorted(operations)
    security = {(path, method): op.get("security") for (path, method) in operations for op in [paths[path][method]]}
    assert security["/api/v1/predict", "post"] == [{"APIKeyHeader": []}]
    assert security["/api/v1/admin/reload", "post"] == security["/api/v1/cache", "delete"] == [{"AdminToken": []}]
    assert security["/metrics", "get"] == [{"MetricsToken": []}]  # METRICS_TOKEN is set here
    assert "401" in paths["/metrics"]["get"]["responses"]
    assert spec["components"]["securitySchemes"]["MetricsToken"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "METRICS_TOKEN, when it is set",
    }
