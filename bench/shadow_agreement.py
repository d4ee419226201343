"""Shadow a sentiment version behind v1 on a running server and read the agreement from /metrics.

    .venv/bin/python bench/shadow_agreement.py [--target v3] [--tweets 400]

It writes a copy of ``model_registry.yaml`` whose ``sentiment_analysis`` rollout is ``shadow`` from
the default (v1) to ``--target``, starts ``mlinfer serve`` on it (one worker, no result cache),
and sends, 8 texts a request and naming no version, the everyday sentences and the first
``--tweets`` held-out tweets. v1 answers every request; the target runs the same texts after the
reply. Once every text has a shadow outcome it prints the server's ``shadow_predictions_total``
and ``shadow_failures_total`` lines, and the agreement per set, computed from those counters
before and after each set.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _http import AUTH_TOKEN, MODEL_NAME, PREDICT_PATH, REGISTRY_PATH, free_port, running_server  # noqa: E402

from modelbuild import corpora, everyday  # noqa: E402

BATCH = 8
DRAIN_TIMEOUT_S = 120.0
_SAMPLE = re.compile(r"^shadow_predictions_total\{(?P<labels>[^}]*)\} (?P<value>[0-9.e+]+)$", re.M)


def shadow_registry(folder: Path, target: str) -> Path:
    registry = yaml.safe_load(REGISTRY_PATH.read_text())
    for model in registry["models"].values():
        for spec in model["versions"].values():
            spec["path"] = str((REGISTRY_PATH.parent / spec["path"]).resolve())
    registry["models"][MODEL_NAME]["rollout_strategy"] = {"type": "shadow", "target_version": target}
    path = folder / "registry.yaml"
    path.write_text(yaml.safe_dump(registry, sort_keys=False))
    return path


def counts(metrics: str) -> dict[str, float]:
    """agreement -> count, of the sentiment model's shadow runs."""
    found: dict[str, float] = {}
    for match in _SAMPLE.finditer(metrics):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"]))
        if labels.get("model") == MODEL_NAME:
            found[labels["agreement"]] = found.get(labels["agreement"], 0.0) + float(match["value"])
    return found


def drained(client: httpx.Client, expected: float) -> dict[str, float]:
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while time.monotonic() < deadline:
        now = counts(client.get("/metrics").text)
        if sum(now.values()) >= expected:
            return now
        time.sleep(0.2)
    raise TimeoutError(f"fewer than {expected:.0f} shadow outcomes after {DRAIN_TIMEOUT_S:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="v3")
    parser.add_argument("--tweets", type=int, default=400)
    args = parser.parse_args()
    sets = {
        everyday.NAME: [s.text for s in everyday.load()],
        "held-out tweets": [t.text for t in corpora.load_tweets(corpora.tweets_path()).test[: args.tweets]],
    }
    with tempfile.TemporaryDirectory() as folder:
        env = {"MODEL_REGISTRY_PATH": str(shadow_registry(Path(folder), args.target)), "WORKERS": "1", "CACHE_BACKEND": "none"}
        with running_server(free_port(), env) as server, httpx.Client(base_url=server.base_url, timeout=30.0) as client:
            sent = 0.0
            before = counts(client.get("/metrics").text)
            for name, texts in sets.items():
                for start in range(0, len(texts), BATCH):
                    reply = client.post(PREDICT_PATH, json={"texts": texts[start : start + BATCH]}, headers={"X-Token": AUTH_TOKEN})
                    reply.raise_for_status()
                    assert reply.json()["model_version"] == "v1", reply.text
                sent += len(texts)
                after = drained(client, sent)
                agree = after.get("agree", 0.0) - before.get("agree", 0.0)
                total = sum(after.values()) - sum(before.values())
                print(f"{name}: {args.target} agrees with v1 on {agree:.0f} of {total:.0f} texts ({agree / total:.1%})")
                before = after
            lines = [
                line
                for line in client.get("/metrics").text.splitlines()
                if line.startswith(("shadow_predictions_total", "shadow_failures_total"))
            ]
    print("\n".join(lines))
    print(json.dumps({"target": args.target, "texts": sent}))


if __name__ == "__main__":
    main()
