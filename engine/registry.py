"""The YAML model registry, validated into typed models at load time."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

VersionStatus = Literal["active", "candidate", "retired"]
StrategyType = Literal["pinned", "canary", "ab_test", "shadow"]


class RegistryError(Exception):
    """The registry file cannot be used; the message names the file and the offending field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VersionSpec(_Strict):
    """One version of a model: an ONNX file and its lifecycle status."""

    path: str
    status: VersionStatus = "active"
    description: str = ""


class RolloutStrategy(_Strict):
    """How requests that name no version are spread over versions."""

    type: StrategyType = "pinned"
    canary_percentage: float = Field(0.0, ge=0, le=100)
    target_version: str | None = None


class ModelSpec(_Strict):
    default_version: str
    versions: dict[str, VersionSpec] = Field(min_length=1)
    rollout_strategy: RolloutStrategy = RolloutStrategy()

    @model_validator(mode="after")
    def _versions_exist(self) -> ModelSpec:
        if self.default_version not in self.versions:
            raise ValueError(f"default_version {self.default_version!r} is not one of the versions {sorted(self.versions)}")
        if self.versions[self.default_version].status == "retired":
            raise ValueError(f"default_version {self.default_version!r} is retired")
        target = self.rollout_strategy.target_version
        if target is not None and target not in self.versions:
            raise ValueError(f"rollout_strategy.target_version {target!r} is not one of the versions {sorted(self.versions)}")
        return self


class Registry(_Strict):
    models: dict[str, ModelSpec] = Field(min_length=1)
    base_dir: Path = Path(".")

    def resolve_path(self, version: VersionSpec) -> Path:
        """Version paths are relative to the registry file's folder."""
        path = Path(version.path)
        return path if path.is_absolute() else self.base_dir / path


def load_registry(path: Path) -> Registry:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise RegistryError(f"{path}: registry file not found (set MODEL_REGISTRY_PATH)") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise RegistryError(f"{path}: cannot read the registry file: {exc}") from exc
    except yaml.YAMLError as exc:
        raise RegistryError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise RegistryError(f"{path}: expected a mapping with a 'models' key")
    try:
        return Registry.model_validate({**raw, "base_dir": path.resolve().parent})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors())
        raise RegistryError(f"{path}: invalid registry: {problems}") from exc
