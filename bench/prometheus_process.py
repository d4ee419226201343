"""A real Prometheus on loopback, for ``bench/dashboard.py`` and ``tests/infra/test_prometheus.py``:
one scrape job per target, every ``interval_s``, its data and log in a folder of the caller's."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path

import yaml

from emulator.loopback import free_port


def launch(binary: str, folder: Path, jobs: Mapping[str, str], interval_s: float) -> tuple[subprocess.Popen[bytes], str, Path]:
    """Start ``binary`` scraping each job's ``host:port``: its process, its URL and its log (readiness is the caller's to wait for)."""
    interval = f"{interval_s:g}s"
    config = {
        "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [target]}]} for job, target in jobs.items()],
    }
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log_path = folder / "prometheus.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return process, f"http://127.0.0.1:{port}", log_path
