"""Shared fixtures: the repository's registry and built models, and settings that point at them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.facade import InferenceEngine
from engine.factory import build_engine
from engine.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[1]
REGISTRY_PATH = REPO_ROOT / "model_registry.yaml"
MODELS_DIR = REPO_ROOT / "models"
V1_DIR = MODELS_DIR / "sentiment_v1"
V2_DIR = MODELS_DIR / "sentiment_v2"
V3_DIR = MODELS_DIR / "sentiment_v3"
V4_DIR = MODELS_DIR / "sentiment_v4"
SENTIMENT_DIRS = {"v1": V1_DIR, "v2": V2_DIR, "v3": V3_DIR, "v4": V4_DIR}


def require_models(*models: Path) -> None:
    """Fail (never skip) when a built model file is missing; by default every sentiment version."""
    missing = [str(p) for p in (models or [d / "model.onnx" for d in SENTIMENT_DIRS.values()]) if not p.is_file()]
    if missing:
        pytest.fail(f"built models are missing ({', '.join(missing)}): run `make models` (or `make test`, which builds them)")


@pytest.fixture(scope="session")
def models_dir() -> Path:
    require_models()
    return MODELS_DIR


def make_settings(**overrides: object) -> Settings:
    """Settings from code only: the process environment and any .env file are ignored."""
    values: dict[str, object] = {"model_registry_path": REGISTRY_PATH, "log_level": "WARNING"}
    values.update(overrides)
    return Settings.from_values(values)


@pytest.fixture(scope="session")
def engine(models_dir: Path) -> Iterator[InferenceEngine]:
    """One loaded engine over the default registry, shared by the session."""
    built = build_engine(make_settings())
    built.load()
    yield built
    built.close()
