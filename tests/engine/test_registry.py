"""engine/registry.py: the repository's registry loads, paths resolve, and bad files give clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from engine.registry import Registry, RegistryError, load_registry
from tests.conftest import REGISTRY_PATH, REPO_ROOT, V1_DIR, V2_DIR

VALID: dict[str, object] = {
    "models": {
        "sentiment_analysis": {
            "default_version": "v1",
            "versions": {
                "v1": {"path": "models/sentiment_v1/model.onnx", "status": "active"},
                "v2": {"path": "models/sentiment_v2/model.onnx", "status": "candidate"},
            },
            "rollout_strategy": {"type": "canary", "canary_percentage": 10, "target_version": "v2"},
        }
    }
}


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def _model(data: dict[str, object]) -> dict[str, object]:
    models = data["models"]
    assert isinstance(models, dict)
    model = models["sentiment_analysis"]
    assert isinstance(model, dict)
    return model


def _valid() -> dict[str, object]:
    copy = yaml.safe_load(yaml.safe_dump(VALID))
    assert isinstance(copy, dict)
    return copy


def test_repository_registry_loads() -> None:
    registry = load_registry(REGISTRY_PATH)
    assert isinstance(registry, Registry)
    model = registry.models["sentiment_analysis"]
    assert model.default_version == "v1"
    assert set(model.versions) == {"v1", "v2", "v3", "v4"}
    assert model.versions["v1"].status == "active"
    assert {model.versions[v].status for v in ("v2", "v3", "v4")} == {"candidate"}
    rollout = model.rollout_strategy
    assert (rollout.type, rollout.canary_percentage, rollout.target_version) == ("canary", 10, "v3")
    assert registry.models["iris"].kind == "tabular"
    assert registry.base_dir == REPO_ROOT


def test_repository_registry_paths_point_at_the_built_models() -> None:
    registry = load_registry(REGISTRY_PATH)
    versions = registry.models["sentiment_analysis"].versions
    assert registry.resolve_path(versions["v1"].path) == str(V1_DIR / "model.onnx")
    assert registry.resolve_path(versions["v2"].path) == str(V2_DIR / "model.onnx")


def test_paths_resolve_relative_to_the_registry_file_not_the_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "conf"
    folder.mkdir()
    path = _write(folder, VALID)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    registry = load_registry(Path("../conf/registry.yaml"))
    assert registry.base_dir == folder.resolve()
    v1 = registry.models["sentiment_analysis"].versions["v1"]
    assert registry.resolve_path(v1.path) == str(folder.resolve() / "models/sentiment_v1/model.onnx")
    assert Path(registry.resolve_path(v1.path)).is_absolute()
    assert path.is_file()


def test_absolute_version_paths_are_kept(tmp_path: Path) -> None:
    data = _valid()
    _model(data)["versions"]["v1"]["path"] = str(V1_DIR / "model.onnx")  # type: ignore[index]
    registry = load_registry(_write(tmp_path, data))
    assert registry.resolve_path(registry.models["sentiment_analysis"].versions["v1"].path) == str(V1_DIR / "model.onnx")


def test_defaults_of_optional_fields(tmp_path: Path) -> None:
    data = {"models": {"m": {"default_version": "a", "versions": {"a": {"path": "a.onnx"}}}}}
    model = load_registry(_write(tmp_path, data)).models["m"]
    assert model.versions["a"].status == "active"
    assert model.rollout_strategy.type == "pinned"
    assert model.rollout_strategy.target_version is None


def _expect_error(path: Path, *fragments: str) -> str:
    with pytest.raises(RegistryError) as info:
        load_registry(path)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def test_missing_default_version(tmp_path: Path) -> None:
    data = _valid()
    del _model(data)["default_version"]
    _expect_error(_write(tmp_path, data), "models.sentiment_analysis.default_version", "Field required")


def test_unknown_status(tmp_path: Path) -> None:
    data = _valid()
    _model(data)["versions"]["v2"]["status"] = "experimental"  # type: ignore[index]
    _expect_error(_write(tmp_path, data), "models.sentiment_analysis.versions.v2.status", "'active', 'candidate' or 'retired'")


def test_default_version_not_in_versions(tmp_path: Path) -> None:
    data = _valid()
    _model(data)["default_version"] = "v9"
    _expect_error(_write(tmp_path, data), "models.sentiment_analysis", "default_version 'v9' is not one of the versions ['v1', 'v2']")


def test_retired_default_version(tmp_path: Path) -> None:
    data = _valid()
    _model(data)["versions"]["v1"]["status"] = "retired"  # type: ignore[index]
    _expect_error(_write(tmp_path, data), "models.sentiment_analysis", "default_version 'v1' is retired")


def test_unknown_target_version(tmp_path: Path) -> None:
    data = _valid()
    _model(data)["rollout_strategy"]["target_version"] = "v3"  # type: ignore[index]
    _expect_error(_write(tmp_path, data), "models.sentiment_analysis", "rollout_strategy.target_version 'v3'")


def test_unknown_strategy_type_and_bad_percentage(tmp_path: Path) -> None:
    data = _valid()
    _model(data)["rollout_strategy"] = {"type": "random", "canary_percentage": 150}
    _expect_error(
        _write(tmp_path, data),
        "models.sentiment_analysis.rollout_strategy.type",
        "models.sentiment_analysis.rollout_strategy.canary_percentage",
    )


def test_extra_unknown_field(tmp_path: Path) -> None:
    data = _valid()
    _model(data)["versions"]["v1"]["weights"] = "x.bin"  # type: ignore[index]
    _expect_error(_write(tmp_path, data), "models.sentiment_analysis.versions.v1.weights", "Extra inputs are not permitted")


def test_extra_top_level_field(tmp_path: Path) -> None:
    data = _valid()
    data["model"] = {}
    _expect_error(_write(tmp_path, data), "model:", "Extra inputs are not permitted")


def test_empty_models_and_versions(tmp_path: Path) -> None:
    _expect_error(_write(tmp_path, {"models": {}}), "models:")
    data = _valid()
    _model(data)["versions"] = {}
    _expect_error(_write(tmp_path, data), "models.sentiment_analysis.versions")


def test_not_yaml(tmp_path: Path) -> None:
    _expect_error(_write(tmp_path, "models: [unclosed\n  - {a: b\n"), "not valid YAML")


def test_yaml_that_is_not_a_mapping(tmp_path: Path) -> None:
    _expect_error(_write(tmp_path, "- just\n- a list\n"), "expected a mapping with a 'models' key")
    _expect_error(_write(tmp_path, ""), "expected a mapping with a 'models' key")


def test_missing_file(tmp_path: Path) -> None:
    _expect_error(tmp_path / "nowhere.yaml", "registry file not found", "MODEL_REGISTRY_PATH")


def test_registry_is_immutable() -> None:
    registry = load_registry(REGISTRY_PATH)
    with pytest.raises(Exception, match="frozen"):
        registry.models["sentiment_analysis"].default_version = "v2"  # type: ignore[misc]


def test_file_that_is_not_utf8_raises_registry_error_naming_the_file(tmp_path: Path) -> None:
    # A Latin-1 "é" in a free-text description: the file cannot be read as UTF-8.
    path = tmp_path / "registry.yaml"
    path.write_bytes(
        b'models:\n  m:\n    default_version: a\n    versions:\n      a:\n        path: a.onnx\n        description: "caf\xe9"\n'
    )
    _expect_error(path)


def test_directory_instead_of_file_raises_registry_error_naming_it(tmp_path: Path) -> None:
    _expect_error(tmp_path)
