"""Registry files for tests, pointing at the built models by absolute path, and engines over them."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from engine.facade import InferenceEngine
from engine.factory import build_engine
from tests.conftest import V1_DIR, V2_DIR, make_settings

V1_MODEL = str(V1_DIR / "model.onnx")
V2_MODEL = str(V2_DIR / "model.onnx")


def sentiment(
    versions: dict[str, dict[str, Any]] | None = None, default: str = "v1", rollout: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A sentiment_analysis model entry; by default v1 (fp32) and v2 (int8), pinned to v1."""
    return {
        "default_version": default,
        "versions": versions
        if versions is not None
        else {"v1": {"path": V1_MODEL, "status": "active"}, "v2": {"path": V2_MODEL, "status": "candidate"}},
        "rollout_strategy": rollout or {"type": "pinned"},
    }


def broken_v2_folder(tmp_path: Path) -> Path:
    """A copy of v2's folder whose model.onnx is not a model (its tokenizer and labels are real): a version that fails to load."""
    folder = tmp_path / "v2"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"not a model")
    for name in ("tokenizer.json", "labels.json"):
        shutil.copyfile(V2_DIR / name, folder / name)
    return folder


def write_registry(folder: Path, models: dict[str, dict[str, Any]], name: str = "registry.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump({"models": models}, sort_keys=False))
    return path


@contextmanager
def engine_for(registry: Path, **settings: object) -> Iterator[InferenceEngine]:
    engine = build_engine(make_settings(model_registry_path=registry, **settings))
    engine.load()
    try:
        yield engine
    finally:
        engine.close()
