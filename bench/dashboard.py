"""The Grafana dashboard's panels over a real run, as a PNG (the README's Metrics section shows it).

Starts ``mlinfer serve`` (its default workers) and a real Prometheus (Debian's ``prometheus`` package) that
scrapes it every second, sends a bounded closed-loop load for ``--seconds``, then asks Prometheus's
``query_range`` API for every panel query of ``infra/grafana/dashboards/ml-inference.json`` and draws one
subplot per panel with matplotlib.

The load, over ``--concurrency`` loops: texts to the canary model (a new routing key per request, so the
registry's 10 % canary splits them), drawn from a small pool with a Zipf-like skew (cache repeats), batches of
several texts, a shadow model, tabular rows, and a few errors (an unknown model, a bad token). The queries are
the dashboard's, with their ``[5m]`` rate windows set to ``--window``: ``rate()`` divides by the whole window, so
over a run shorter than the window it reads low (a 90 s run has no 5 minutes; with 30 s the last minute is right).

    .venv/bin/python bench/dashboard.py --seconds 90 --out bench/dashboard.png
    .venv/bin/python bench/dashboard.py --seconds 15 --out /tmp/dashboard.png     # smoke
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from _http import AUTH_TOKEN, PREDICT_PATH, REPO_ROOT, free_port, running_server, stop_process
from prometheus_process import launch

DASHBOARD = REPO_ROOT / "infra" / "grafana" / "dashboards" / "ml-inference.json"
MODELS = REPO_ROOT / "models"
SCRAPE_S = 1
TEXTS = [
    "I love this product",
    "This is terrible",
    "It works as described",
    "Shipping took forever and the box was damaged",
    "Best purchase I have made this year",
    "Not worth the price",
    "The battery lasts all day",
    "Customer service never answered",
    "Exactly what I needed",
    "It broke after a week",
]


@dataclass
class Tally:
    requests: int = 0
    by_status: dict[int, int] = field(default_factory=dict)

    def count(self, status: int) -> None:
        self.requests += 1
        self.by_status[status] = self.by_status.get(status, 0) + 1


def write_registry(folder: Path) -> Path:
    def version(name: str, status: str) -> dict[str, str]:
        return {"path": str(MODELS / name / "model.onnx"), "status": status}

    sentiment = {"v1": version("sentiment_v1", "active"), "v2": version("sentiment_v2", "candidate")}
    models = {
        "sentiment_analysis": {
            "default_version": "v1",
            "versions": sentiment,
            "rollout_strategy": {"type": "canary", "canary_percentage": 10, "target_version": "v2"},
        },
        "sentiment_shadow": {
            "default_version": "v1",
            "versions": sentiment,
            "rollout_strategy": {"type": "shadow", "target_version": "v2"},
        },
        "iris": {"kind": "tabular", "default_version": "v1", "versions": {"v1": version("iris_v1", "active")}},
    }
    path = folder / "registry.yaml"
    path.write_text(yaml.safe_dump({"models": models}, sort_keys=False))
    return path


def start_prometheus(folder: Path, target: str) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("prometheus")
    if binary is None:
        raise SystemExit("prometheus is not on PATH: install it with `sudo apt-get install -y prometheus`")
    process, url, _ = launch(binary, folder, {"ml-inference-api": target}, SCRAPE_S)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"prometheus exited with {process.returncode}: see {folder / 'prometheus.log'}")
        try:
            if httpx.get(f"{url}/-/ready", timeout=1.0).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    stop_process(process)
    raise SystemExit("prometheus not ready after 30 s")


def pick_text(rng: random.Random) -> str:
    """Zipf-like: the first texts of the pool come back often (cache hits), a new one now and then (misses)."""
    rank = int(rng.paretovariate(1.2))
    return TEXTS[rank - 1] if rank <= len(TEXTS) else f"{rng.choice(TEXTS)} (variant {rng.randrange(100_000)})"


def request(rng: random.Random) -> tuple[dict[str, Any], dict[str, str]]:
    headers = {"X-Token": AUTH_TOKEN, "X-Routing-Key": f"user-{rng.randrange(1_000_000)}"}
    draw = rng.random()
    if draw < 0.60:
        return {"texts": [pick_text(rng)]}, headers
    if draw < 0.75:
        return {"texts": [pick_text(rng) for _ in range(rng.choice((4, 8, 16)))]}, headers
    if draw < 0.85:
        return {"model": "sentiment_shadow", "texts": [pick_text(rng)]}, headers
    if draw < 0.97:
        return {"model": "iris", "instances": [[rng.uniform(4, 8), rng.uniform(2, 4.5), rng.uniform(1, 7), rng.uniform(0.1, 2.5)]]}, headers
    if draw < 0.985:
        return {"model": "no_such_model", "texts": ["x"]}, headers
    return {"texts": ["x"]}, {"X-Token": "wrong-token"}


async def load(base_url: str, seconds: float, concurrency: int, seed: int) -> Tally:
    tally = Tally()
    deadline = time.monotonic() + seconds

    async def loop(index: int, client: httpx.AsyncClient) -> None:
        rng = random.Random(seed * 1000 + index)
        while time.monotonic() < deadline:
            body, headers = request(rng)
            response = await client.post(PREDICT_PATH, json=body, headers=headers)
            tally.count(response.status_code)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=30.0, limits=limits) as client:
        await asyncio.gather(*(loop(i, client) for i in range(concurrency)))
    return tally


def panels() -> list[dict[str, Any]]:
    board = json.loads(DASHBOARD.read_text())
    return [p for p in board["panels"] if p["type"] != "row" and p.get("targets")]


def query_range(url: str, expr: str, start: float, end: float) -> list[dict[str, Any]]:
    params: dict[str, str | float] = {"query": expr, "start": start, "end": end, "step": f"{SCRAPE_S}s"}
    body = httpx.get(f"{url}/api/v1/query_range", params=params, timeout=30.0).json()
    if body.get("status") != "success":
        raise RuntimeError(f"{expr}: {body}")
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def legend(template: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template).strip() or "value"


UNIT_SCALE = {"bytes": (2**20, "MiB"), "percentunit": (0.01, "%")}


def render(url: str, start: float, end: float, window: str, out: Path, title: str) -> dict[str, int]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = panels()
    columns = 4
    rows = math.ceil(len(chosen) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5.2 * columns, 3.1 * rows), squeeze=False)
    series_per_panel: dict[str, int] = {}
    for ax, panel in zip(axes.flat, chosen, strict=False):
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
        scale, shown_unit = UNIT_SCALE.get(unit, (1.0, unit))
        count = 0
        for target in panel["targets"]:
            expr = target["expr"].replace("[5m]", f"[{window}]")
            for series in query_range(url, expr, start, end):
                points = [(float(t) - start, float(v) / scale) for t, v in series["values"] if math.isfinite(float(v))]
                if not points:
                    continue
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, linewidth=1.2, label=legend(target.get("legendFormat", ""), series["metric"]))
                count += 1
        series_per_panel[panel["title"]] = count
        ax.set_title(f"{panel['title']} ({shown_unit})" if shown_unit and shown_unit != "short" else panel["title"], fontsize=10)
        ax.set_xlabel("s since the load started", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if count:
            ax.legend(fontsize=6, loc="best", ncol=2 if count > 4 else 1)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    for ax in list(axes.flat)[len(chosen) :]:
        ax.axis("off")
    figure.suptitle(title, fontsize=12)
    figure.tight_layout()
    figure.savefig(out, dpi=90)
    plt.close(figure)
    return series_per_panel


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=90.0, help="load duration (default 90)")
    parser.add_argument("--concurrency", type=int, default=8, help="closed-loop clients (default 8)")
    parser.add_argument("--window", default="30s", help="rate window put in place of the queries' [5m] (default 30s)")
    parser.add_argument("--workers", type=int, default=0, help="server processes (default: mlinfer serve's, one per CPU)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "dashboard.png")
    args = parser.parse_args()
    if not (MODELS / "sentiment_v2" / "model.onnx").is_file() or not (MODELS / "iris_v1" / "model.onnx").is_file():
        raise SystemExit("models are missing: run `make models`")

    with tempfile.TemporaryDirectory(prefix="dashboard-") as tmp:
        folder = Path(tmp)
        env = {"MODEL_REGISTRY_PATH": str(write_registry(folder))}
        if args.workers:
            env["WORKERS"] = str(args.workers)
        with running_server(free_port(), env=env) as server:
            prometheus, url = start_prometheus(folder, f"127.0.0.1:{server.port}")
            try:
                time.sleep(3 * SCRAPE_S)  # a few scrapes before the load: the counters' series start at their idle values
                start = time.time()  # wall clock: Prometheus's timestamps
                tally = asyncio.run(load(server.base_url, args.seconds, args.concurrency, args.seed))
                time.sleep(3 * SCRAPE_S)  # the last figures scraped
                end = time.time()
                workers = len(httpx.get(f"{url}/api/v1/query", params={"query": "server_workers"}, timeout=10).json()["data"]["result"])
                title = (
                    f"mlinfer serve ({workers} worker{'s' if workers != 1 else ''}), {args.concurrency} clients for {args.seconds:.0f} s: "
                    f"{tally.requests} requests ({tally.requests / args.seconds:.0f}/s), statuses {dict(sorted(tally.by_status.items()))}; "
                    f"rate windows {args.window}"
                )
                counts = render(url, start - 2 * SCRAPE_S, end, args.window, args.out, title)
            finally:
                stop_process(prometheus)
    print(title)
    for name, count in counts.items():
        print(f"  {name}: {count} series")
    print(f"wrote {args.out}")
    empty = [name for name, count in counts.items() if count == 0]
    if empty:
        print(f"panels with no data: {empty}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
