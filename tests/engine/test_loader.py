"""Loading a version: external weights opened from a private copy, so a file changed under a
loaded version can neither crash the process (SIGBUS on memory-mapped weights) nor go unseen."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from pathlib import Path

import pytest

from engine.loader import FileStamp, private_copy
from engine.schemas import PredictRequest
from tests.conftest import V1_DIR, V2_DIR
from tests.registries import V2_MODEL, engine_for, sentiment, write_registry

FILES = ("model.onnx", "model.onnx.data", "tokenizer.json", "labels.json")
TEXTS = ["I love this product", "This is terrible"]


def _copy_of(source: Path, folder: Path) -> Path:
    folder.mkdir()
    for name in FILES:
        shutil.copyfile(source / name, folder / name)
    return folder / "model.onnx"


def test_a_truncated_weights_file_under_a_loaded_version_is_contained_and_shown(
    tmp_path: Path, models_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    v1 = _copy_of(V1_DIR, tmp_path / "v1")
    versions = {"v1": {"path": str(v1)}, "v2": {"path": V2_MODEL, "status": "candidate"}}
    registry = write_registry(tmp_path, {"sentiment_analysis": sentiment(versions)})
    with engine_for(registry, cache_backend="none", model_cache_dir=tmp_path / "cache") as engine:
        before = asyncio.run(engine.predict(PredictRequest(texts=TEXTS)))
        assert not any(m.files_changed for m in engine.health().models)
        assert list((tmp_path / "cache" / ".private").iterdir()) == []  # the copy is unlinked once open
        os.truncate(v1.parent / "model.onnx.data", 0)
        with caplog.at_level(logging.WARNING, logger="engine.lifecycle"):
            health = engine.health()
        assert {m.version: m.files_changed for m in health.models} == {"v1": True, "v2": False}
        assert (health.status, health.ready) == ("active", True)
        assert any("changed on disk" in r.getMessage() and "v1" in r.getMessage() for r in caplog.records)
        after = asyncio.run(engine.predict(PredictRequest(texts=TEXTS)))  # SIGBUS here without the private copy
        for got, expected in zip(after.results, before.results, strict=True):
            assert got.scores == pytest.approx(expected.scores, abs=1e-6)
        assert asyncio.run(engine.predict(PredictRequest(texts=TEXTS, model_version="v2"))).model_version == "v2"


def test_a_version_with_external_weights_loads_from_a_copy_that_is_then_removed(tmp_path: Path, models_dir: Path) -> None:
    model = _copy_of(V2_DIR, tmp_path / "v2")
    with private_copy(model, ("model.onnx.data", "labels.json"), tmp_path / "private") as opened:
        assert opened != model and opened.name == "model.onnx"
        assert sorted(p.name for p in opened.parent.iterdir()) == ["labels.json", "model.onnx", "model.onnx.data"]
        assert (opened.parent / "model.onnx.data").read_bytes() == (model.parent / "model.onnx.data").read_bytes()
    assert not opened.parent.exists()


def test_without_a_writable_folder_the_files_are_opened_in_place(tmp_path: Path, models_dir: Path) -> None:
    model = _copy_of(V2_DIR, tmp_path / "v2")
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with private_copy(model, ("model.onnx.data",), blocker / "private") as opened:
        assert opened == model


def test_a_file_stamp_sees_writes_truncation_replacement_and_removal(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    stamp = FileStamp.of(path)
    assert not stamp.changed()
    os.truncate(path, 1)
    assert stamp.changed()
    path.write_bytes(b"abc")
    assert stamp.changed()  # written again: a later modification time
    replacement = tmp_path / "g"
    replacement.write_bytes(b"abc")
    fresh = FileStamp.of(path)
    os.replace(replacement, path)
    assert fresh.changed()  # another inode
    path.unlink()
    assert fresh.changed()


def test_a_copy_left_by_a_process_that_died_while_loading_is_removed(tmp_path: Path, models_dir: Path) -> None:
    model = _copy_of(V2_DIR, tmp_path / "v2")
    private = tmp_path / "private"
    stale, recent = private / ".load-stale", private / ".load-recent"
    for folder in (stale, recent):
        folder.mkdir(parents=True)
        (folder / "model.onnx.data").write_bytes(b"weights")
    os.utime(stale, (1_000_000, 1_000_000))
    with private_copy(model, ("model.onnx.data",), private):
        pass
    assert not stale.exists() and recent.exists()  # another process may be loading from a recent one
