"""Instructions per engine request, for callgrind: the in-process path on one short text.

    valgrind --tool=callgrind python bench/bench_instructions.py 0 .
    valgrind --tool=callgrind python bench/bench_instructions.py 200 .

The difference of the two totals is 200 requests through ``InferenceEngine.predict`` (cache
off, one intra-op thread, v1 pinned), the ONNX Runtime run included. Instruction counts do not
depend on the machine's load, so two versions of the code compare within a fraction of a
percent where wall-clock figures on a shared VM vary by ±20%. ROOT is the checkout whose
``model_registry.yaml`` (and, with ``PYTHONPATH=ROOT``, whose code) is measured.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from engine.factory import build_engine
from engine.schemas import PredictRequest
from engine.settings import Settings

WARMUP = 20
TEXT = "I love this product"


def main(requests: int, root: Path) -> None:
    values = {"model_registry_path": root / "model_registry.yaml", "log_level": "WARNING", "cache_backend": "none", "intra_op_threads": 1}
    engine = build_engine(Settings.from_values(values))
    engine.load()

    async def run() -> None:
        for _ in range(WARMUP + requests):
            await engine.predict(PredictRequest(texts=[TEXT], model_version="v1"))

    asyncio.run(run())
    engine.close()


if __name__ == "__main__":
    main(int(sys.argv[1]), Path(sys.argv[2]).resolve())
