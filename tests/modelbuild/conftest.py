"""Shared by the model build's tests: a built model's folder and card, and sentence-transformers' reference embeddings of MiniLM."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

REFERENCE_PATH = Path(__file__).resolve().parents[1] / "engine" / "fixtures" / "minilm_reference.json"


@pytest.fixture(scope="session")
def reference() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(REFERENCE_PATH.read_text())
    assert data["normalized"] is True
    assert len(data["sentences"]) >= 2
    return data


def built_folder(models_dir: Path, folder: str) -> Path:
    """A built model's folder; fails (never skips) when it was not built."""
    path = models_dir / folder
    if not (path / "model.onnx").is_file():
        pytest.fail(f"{path / 'model.onnx'} is missing: run `make models`")
    return path


def read_card(folder: Path) -> dict[str, Any]:
    card: dict[str, Any] = json.loads((folder / "model_card.json").read_text())
    return card
