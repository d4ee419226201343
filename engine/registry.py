"""The YAML model registry, validated into typed models at load time."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from engine.kinds import DEFAULT_KIND, kind_named

VersionStatus = Literal["active", "candidate", "retired"]
StrategyType = Literal["pinned", "canary", "ab_test", "shadow"]


class RegistryError(Exception):
    """The registry file cannot be used; the message names the file and the offending field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VersionSpec(_Strict):
    """One version of a model: an ONNX file (local path or ``s3://``) and its lifecycle status."""

    path: str = Field(min_length=1)
    status: VersionStatus = "active"
    description: str = ""
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description="Expected sha256 of the model file.")
    tokenizer: str | None = Field(None, description="tokenizer.json location; default: beside the model file.")
    instances: int | None = Field(None, ge=1, description="At most this many of the process's instances (INSTANCES) run it at once.")
    intra_op_threads: int | None = Field(None, ge=1, description="Runtime threads of each of its instances (default: INTRA_OP_THREADS).")


class RolloutStrategy(_Strict):
    """How requests that name no version are spread over versions.

    - ``pinned``: always ``default_version``.
    - ``canary``: ``canary_percentage`` of routing keys go to ``target_version``.
    - ``ab_test``: routing keys split over ``weights`` (version -> relative weight).
    - ``shadow``: ``default_version`` answers; ``target_version`` runs on the same inputs.
    """

    type: StrategyType = "pinned"
    canary_percentage: float = Field(0.0, ge=0, le=100)
    target_version: str | None = None
    weights: dict[str, float] | None = None

    @model_validator(mode="after")
    def _fields_for_type(self) -> RolloutStrategy:
        if self.type in ("canary", "shadow") and self.target_version is None:
            raise ValueError(f"a {self.type} rollout needs target_version")
        if self.type == "ab_test":
            if not self.weights or len(self.weights) < 2:
                raise ValueError("an ab_test rollout needs weights for at least two versions")
            if any(w < 0 for w in self.weights.values()) or sum(self.weights.values()) <= 0:
                raise ValueError("ab_test weights must be non-negative and not all zero")
        return self


class ModelLimits(_Strict):
    """Per-model limits that override the service-wide settings (MAX_TEXTS_PER_REQUEST, MAX_TEXT_CHARS)."""

    max_inputs_per_request: int | None = Field(None, ge=1)
    max_text_chars: int | None = Field(None, ge=1)


class ModelSpec(_Strict):
    kind: str = Field(DEFAULT_KIND, description="The model kind: a name in engine.kinds.KINDS.")
    default_version: str
    versions: dict[str, VersionSpec] = Field(min_length=1)
    rollout_strategy: RolloutStrategy = RolloutStrategy()
    labels: list[str] | None = Field(None, min_length=2, description="Output labels; default: labels.json beside the model.")
    limits: ModelLimits = ModelLimits()

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        kind_named(value)
        return value

    @model_validator(mode="after")
    def _versions_exist(self) -> ModelSpec:
        def servable(field: str, version: str) -> None:
            if version not in self.versions:
                raise ValueError(f"{field} {version!r} is not one of the versions {sorted(self.versions)}")
            if self.versions[version].status == "retired":
                raise ValueError(f"{field} {version!r} is retired")

        servable("default_version", self.default_version)
        rollout = self.rollout_strategy
        if rollout.target_version is not None:
            servable("rollout_strategy.target_version", rollout.target_version)
            if rollout.target_version == self.default_version and rollout.type in ("canary", "shadow"):
                raise ValueError("rollout_strategy.target_version must differ from default_version")
        for version in rollout.weights or {}:
            servable("rollout_strategy.weights", version)
        kind_named(self.kind).check_spec(self)
        return self

    def rollout_versions(self) -> list[str]:
        """Versions that rollout sends traffic to, default first."""
        rollout = self.rollout_strategy
        extra = [rollout.target_version] if rollout.target_version and rollout.type != "pinned" else []
        extra += list(rollout.weights or {}) if rollout.type == "ab_test" else []
        return list(dict.fromkeys([self.default_version, *extra]))


class Registry(_Strict):
    models: dict[str, ModelSpec] = Field(min_length=1)
    base_dir: Path = Path(".")
    digest: str = Field("", description="sha256 of the registry file (first 16 hex digits): which registry a process serves.")

    def resolve_path(self, location: str) -> str:
        """Local paths are relative to the registry file's folder; ``s3://`` locations are kept."""
        if location.startswith("s3://"):
            return location
        path = Path(location)
        return str(path if path.is_absolute() else self.base_dir / path)


def load_registry(path: Path) -> Registry:
    try:
        content = path.read_bytes()
        raw = yaml.safe_load(content.decode("utf-8"))
    except FileNotFoundError as exc:
        raise RegistryError(f"{path}: registry file not found (set MODEL_REGISTRY_PATH)") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise RegistryError(f"{path}: cannot read the registry file: {exc}") from exc
    except yaml.YAMLError as exc:
        raise RegistryError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise RegistryError(f"{path}: expected a mapping with a 'models' key")
    try:
        digest = hashlib.sha256(content).hexdigest()[:16]
        return Registry.model_validate({**raw, "base_dir": path.resolve().parent, "digest": digest})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors())
        raise RegistryError(f"{path}: invalid registry: {problems}") from exc
