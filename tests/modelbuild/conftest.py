"""Fixtures shared by the model build's tests: sentence-transformers' reference embeddings of MiniLM."""

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
