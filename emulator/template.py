"""The functions of a SAM template, as the emulator runs them.

Handler, environment, memory size, timeout, code location and HTTP routes are read from the
``AWS::Serverless::Function`` resources and ``Globals.Function``. An ``--env-vars`` file
overrides environment variables as ``sam local`` does: ``{"Parameters": {...}}`` for every
function, ``{"<FunctionName>": {...}}`` for one; only variables the template declares are set.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from emulator.intrinsics import NO_VALUE, Resolver, TemplateLoader, Unresolvable, parameter_values

logger = logging.getLogger(__name__)

DEFAULT_MEMORY_MB = 128
DEFAULT_TIMEOUT_S = 3.0
PUBLISHED_VERSION = "1"
IMAGE_TASK_ROOT = "/var/task"
"""Where an image function's code lives; locally, the code location (the Docker context)."""


class TemplateError(ValueError):
    """The template cannot be run locally as written."""


@dataclass(frozen=True)
class HttpRoute:
    """One API Gateway event of a function: ``/{proxy+}`` and ``ANY`` match everything."""

    path: str
    method: str
    payload_version: Literal["1.0", "2.0"]
    stage: str = "$default"
    """The stage in the event's requestContext: "$default" for an HTTP API; a REST API's StageName ("Prod" for SAM's implicit API)."""

    @property
    def route_key(self) -> str:
        return f"{self.method} {self.path}"


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    handler: str
    code_root: Path
    memory_mb: int = DEFAULT_MEMORY_MB
    timeout_s: float = DEFAULT_TIMEOUT_S
    environment: Mapping[str, str] = field(default_factory=dict)
    routes: tuple[HttpRoute, ...] = ()
    alias: str | None = None
    """``AutoPublishAlias``: the alias that names the function's published version."""
    ephemeral_storage_mb: int = 512
    dockerfile: Path | None = None
    """An image function's Dockerfile (``Metadata.Dockerfile`` in its DockerContext); None for a Zip function."""

    @property
    def published_version(self) -> str | None:
        """The version an AutoPublishAlias points at: "1", as after a first ``sam deploy``; None without one."""
        return PUBLISHED_VERSION if self.alias else None

    def executed_version(self, qualifier: str | None) -> str | None:
        """The version a qualifier runs: "$LATEST" for none; None for a qualifier the function does not have."""
        if qualifier in (None, "", "$LATEST"):
            return "$LATEST"
        if self.alias is not None and qualifier in (self.alias, PUBLISHED_VERSION):
            return PUBLISHED_VERSION
        return None


def load_functions(
    template_path: Path,
    env_vars_path: Path | None = None,
    parameter_overrides: Mapping[str, str] | None = None,
) -> dict[str, FunctionSpec]:
    """Every ``AWS::Serverless::Function`` of the template, by logical id."""
    template = yaml.load(template_path.read_text(), Loader=TemplateLoader)  # a SafeLoader subclass
    if not isinstance(template, dict):
        raise TemplateError(f"{template_path} is not a template")
    overrides: dict[str, Any] = json.loads(env_vars_path.read_text()) if env_vars_path else {}
    resolver = Resolver(
        parameter_values(template.get("Parameters") or {}, parameter_overrides or {}),
        template.get("Conditions") or {},
    )
    globals_ = (template.get("Globals") or {}).get("Function") or {}
    functions: dict[str, FunctionSpec] = {}
    for name, resource in (template.get("Resources") or {}).items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        properties = {**globals_, **(resource.get("Properties") or {})}
        code_root = _code_root(template_path.parent, resource, properties)
        declared = {**_variables(globals_), **_variables(resource.get("Properties") or {})}
        resolved = {key: _rewrite_task_root(_env_value(resolver, value), code_root) for key, value in declared.items()}
        environment = {key: value for key, value in resolved.items() if value is not None}
        for scope, source in (("Parameters", overrides.get("Parameters") or {}), (name, overrides.get(name) or {})):
            for key, value in source.items():
                if key in declared:
                    environment[key] = str(value)
                elif scope == name:
                    logger.warning("%s: %s is not declared in the template, so the override is ignored (as in sam local)", name, key)
        functions[name] = FunctionSpec(
            name=name,
            handler=_handler(name, properties),
            code_root=code_root,
            memory_mb=int(resolver.resolve(properties.get("MemorySize", DEFAULT_MEMORY_MB))),
            timeout_s=float(resolver.resolve(properties.get("Timeout", DEFAULT_TIMEOUT_S))),
            environment=environment,
            routes=tuple(_routes(resolver, resource.get("Properties") or {})),
        )
    return functions


def _variables(properties: Mapping[str, Any]) -> dict[str, Any]:
    return dict(((properties.get("Environment") or {}).get("Variables")) or {})


def _env_value(resolver: Resolver, value: Any) -> str | None:
    """A variable's value; None when it resolves to AWS::NoValue, "" when it cannot resolve."""
    try:
        resolved = resolver.resolve(value)
    except Unresolvable:
        return ""
    if resolved is NO_VALUE:
        return None
    if isinstance(resolved, bool):
        return "true" if resolved else "false"
    if isinstance(resolved, list | dict):
        return ""
    return str(resolved)


def _rewrite_task_root(value: str | None, code_root: Path) -> str | None:
    if value is not None and (value == IMAGE_TASK_ROOT or value.startswith(IMAGE_TASK_ROOT + "/")):
        return str(code_root) + value[len(IMAGE_TASK_ROOT) :]
    return value


def _handler(name: str, properties: Mapping[str, Any]) -> str:
    if properties.get("PackageType") == "Image":
        command = (properties.get("ImageConfig") or {}).get("Command") or []
        if not command:
            raise TemplateError(f"{name}: an image function needs ImageConfig.Command (the handler) to run locally")
        return str(command[0])
    if not properties.get("Handler"):
        raise TemplateError(f"{name}: no Handler")
    return str(properties["Handler"])


def _code_root(template_dir: Path, resource: Mapping[str, Any], properties: Mapping[str, Any]) -> Path:
    """Image functions: the Docker context; Zip functions: CodeUri; else the template's folder."""
    if properties.get("PackageType") == "Image":
        location = (resource.get("Metadata") or {}).get("DockerContext", ".")
    else:
        location = properties.get("CodeUri", ".")
    if not isinstance(location, str) or location.startswith("s3://"):
        location = "."
    return (template_dir / location).resolve()


def _routes(resolver: Resolver, properties: Mapping[str, Any]) -> list[HttpRoute]:
    routes: list[HttpRoute] = []
    for event in (properties.get("Events") or {}).values():
        kind = event.get("Type")
        if kind not in ("HttpApi", "Api"):
            continue
        settings = resolver.resolve(event.get("Properties") or {})
        if kind == "HttpApi":
            # An HttpApi event without Path and Method is the API's $default route.
            version = str(settings.get("PayloadFormatVersion", "2.0"))
            routes.append(HttpRoute(settings.get("Path", "/{proxy+}"), str(settings.get("Method", "ANY")).upper(), _version(version)))
        else:
            routes.append(HttpRoute(settings["Path"], str(settings["Method"]).upper(), "1.0"))
    return routes


def _version(value: str) -> Literal["1.0", "2.0"]:
    if value not in ("1.0", "2.0"):
        raise TemplateError(f"PayloadFormatVersion {value!r}")
    return "1.0" if value == "1.0" else "2.0"
