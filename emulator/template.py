"""The functions of a SAM template, as the emulator runs them.

Handler, environment, memory size, timeout, /tmp size, alias, code location, Dockerfile and HTTP
routes (with their API's stage) are read from the ``AWS::Serverless::Function`` resources and
``Globals.Function``. An image function without ``ImageConfig.Command`` runs its Dockerfile's
CMD, as ``sam local`` does. An ``--env-vars`` file overrides environment variables as ``sam local``
does: ``{"Parameters": {...}}`` for every function, ``{"<FunctionName>": {...}}`` for one; only
variables the template declares are set. A relative ``file://`` URI in a variable is made
absolute against the emulator's working directory (the function itself runs in its code folder).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from emulator import limits
from emulator.image_plan import ImageEnvironmentError, dockerfile_command
from emulator.intrinsics import NO_VALUE, Resolver, TemplateLoader, Unresolvable, parameter_values

logger = logging.getLogger(__name__)

DEFAULT_MEMORY_MB = 128
DEFAULT_TIMEOUT_S = 3.0
PUBLISHED_VERSION = "1"
IMAGE_TASK_ROOT = "/var/task"
"""Where an image function's code lives; locally, its task root (``emulator.worker`` maps the variables that name it)."""
DEFAULT_DOCKERFILE = "Dockerfile"
IMPLICIT_REST_STAGE = "Prod"
"""The stage of the REST API that SAM creates for ``Api`` events without a ``RestApiId``."""
HTTP_API_DEFAULT_STAGE = "$default"
_FILE_URI = "file://"


class TemplateError(ValueError):
    """The template cannot be run locally as written (or cannot be read); the message is one line."""


class EnvVarsError(ValueError):
    """The ``--env-vars`` file cannot be read; the message is one line."""


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
    runtime: str | None = None
    """A Zip function's ``Runtime`` ("python3.12"); None for an image function."""

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
    """Every ``AWS::Serverless::Function`` of the template, by logical id.

    Raises ``TemplateError`` (an unreadable template or one that cannot run), ``EnvVarsError`` and
    ``intrinsics.ParameterError`` (an override CloudFormation would refuse).
    """
    template = read_template(template_path)
    overrides = _read_env_vars(env_vars_path)
    resources: Mapping[str, Any] = template.get("Resources") or {}
    resolver = Resolver(
        parameter_values(template.get("Parameters") or {}, parameter_overrides or {}),
        template.get("Conditions") or {},
    )
    globals_ = (template.get("Globals") or {}).get("Function") or {}
    functions: dict[str, FunctionSpec] = {}
    for name, resource in resources.items():
        if not isinstance(resource, dict) or resource.get("Type") != "AWS::Serverless::Function":
            continue
        own = resource.get("Properties") or {}
        properties = {**globals_, **own}
        code_root = _code_root(template_path.parent, resource, properties)
        dockerfile = _dockerfile(code_root, resource, properties)
        declared = {**_variables(globals_), **_variables(own)}
        resolved = {key: _env_value(resolver, value) for key, value in declared.items()}
        environment = {key: value for key, value in resolved.items() if value is not None}
        for scope, source in (("Parameters", overrides.get("Parameters") or {}), (name, overrides.get(name) or {})):
            for key, value in source.items():
                if key in declared:
                    environment[key] = str(value)
                elif scope == name:
                    logger.warning("%s: %s is not declared in the template, so the override is ignored (as in sam local)", name, key)
        storage = resolver.resolve((properties.get("EphemeralStorage") or {}).get("Size", limits.TMP_DEFAULT_MB.value))
        functions[name] = FunctionSpec(
            name=name,
            handler=_handler(name, properties, dockerfile),
            code_root=code_root,
            memory_mb=int(resolver.resolve(properties.get("MemorySize", DEFAULT_MEMORY_MB))),
            timeout_s=float(resolver.resolve(properties.get("Timeout", DEFAULT_TIMEOUT_S))),
            environment={key: _absolute_file_uri(value) for key, value in environment.items()},
            routes=tuple(_routes(resolver, own, resources)),
            alias=_optional(resolver.resolve(properties.get("AutoPublishAlias"))),
            ephemeral_storage_mb=int(storage),
            dockerfile=dockerfile,
            runtime=None if dockerfile is not None else _optional(resolver.resolve(properties.get("Runtime"))),
        )
    return functions


def _optional(value: Any) -> str | None:
    return None if value in (None, "", NO_VALUE) else str(value)


def read_template(path: Path) -> dict[str, Any]:
    """The template as a mapping, with CloudFormation's short forms; ``TemplateError`` when it cannot be read."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise TemplateError(f"template {path}: no such file (--template names it)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(f"template {path}: {exc}") from None
    try:
        template = yaml.load(text, Loader=TemplateLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise TemplateError(f"template {path} is not YAML: {_yaml_problem(exc)}") from None
    if not isinstance(template, dict) or not isinstance(template.get("Resources") or {}, dict):
        raise TemplateError(f"template {path} is not a SAM template (no Resources mapping)")
    return template


def _yaml_problem(error: yaml.YAMLError) -> str:
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        return f"{error.problem or error.context} at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(str(error).split())


def _read_env_vars(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        overrides = json.loads(path.read_text())
    except FileNotFoundError:
        raise EnvVarsError(f"--env-vars {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EnvVarsError(f"--env-vars {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise EnvVarsError(f"--env-vars {path} is not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    if not isinstance(overrides, dict) or not all(isinstance(value, dict) for value in overrides.values()):
        raise EnvVarsError(f'--env-vars {path}: expected {{"Parameters": {{...}}, "<Function>": {{...}}}}')
    return overrides


def _absolute_file_uri(value: str) -> str:
    """``file://./results/`` (or ``file://results/``) is relative to the emulator's working directory."""
    if not value.startswith(_FILE_URI) or value.startswith(_FILE_URI + "/"):
        return value
    relative = value[len(_FILE_URI) :]
    absolute = str((Path.cwd() / relative).resolve())
    return _FILE_URI + absolute + ("/" if relative.endswith("/") else "")


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


def _handler(name: str, properties: Mapping[str, Any], dockerfile: Path | None) -> str:
    if properties.get("PackageType") == "Image":
        command = (properties.get("ImageConfig") or {}).get("Command") or []
        if not command and dockerfile is not None and dockerfile.is_file():
            try:
                command = dockerfile_command(dockerfile) or []
            except ImageEnvironmentError as exc:
                raise TemplateError(f"{name}: no ImageConfig.Command, and {exc}") from None
        if not command:
            raise TemplateError(f"{name}: an image function needs ImageConfig.Command, or a CMD in {dockerfile}, to name its handler")
        return str(command[0])
    if not properties.get("Handler"):
        raise TemplateError(f"{name}: no Handler (a Zip function needs one, e.g. Handler: app.handler)")
    return str(properties["Handler"])


def _dockerfile(code_root: Path, resource: Mapping[str, Any], properties: Mapping[str, Any]) -> Path | None:
    if properties.get("PackageType") != "Image":
        return None
    return code_root / str((resource.get("Metadata") or {}).get("Dockerfile", DEFAULT_DOCKERFILE))


def _code_root(template_dir: Path, resource: Mapping[str, Any], properties: Mapping[str, Any]) -> Path:
    """Image functions: the Docker context; Zip functions: CodeUri; else the template's folder."""
    if properties.get("PackageType") == "Image":
        location = (resource.get("Metadata") or {}).get("DockerContext", ".")
    else:
        location = properties.get("CodeUri", ".")
    if not isinstance(location, str) or location.startswith("s3://"):
        location = "."
    return (template_dir / location).resolve()


def _routes(resolver: Resolver, properties: Mapping[str, Any], resources: Mapping[str, Any]) -> list[HttpRoute]:
    routes: list[HttpRoute] = []
    for event in (properties.get("Events") or {}).values():
        kind = event.get("Type")
        if kind not in ("HttpApi", "Api"):
            continue
        raw = event.get("Properties") or {}
        settings = resolver.resolve({key: value for key, value in raw.items() if key not in ("ApiId", "RestApiId")})
        if kind == "HttpApi":
            # An HttpApi event without Path and Method is the API's $default route.
            version = str(settings.get("PayloadFormatVersion", "2.0"))
            stage = _stage(resolver, resources, raw.get("ApiId"), "AWS::Serverless::HttpApi", HTTP_API_DEFAULT_STAGE)
            path, method = settings.get("Path", "/{proxy+}"), str(settings.get("Method", "ANY")).upper()
            routes.append(HttpRoute(path, method, _version(version), stage))
        else:
            stage = _stage(resolver, resources, raw.get("RestApiId"), "AWS::Serverless::Api", IMPLICIT_REST_STAGE)
            routes.append(HttpRoute(settings["Path"], str(settings["Method"]).upper(), "1.0", stage))
    return routes


def _stage(resolver: Resolver, resources: Mapping[str, Any], api_id: Any, kind: str, implicit: str) -> str:
    """The StageName of the API an event names (``!Ref MyApi``), or the stage of SAM's implicit API."""
    if api_id is None:
        return implicit
    name = api_id.get("Ref") if isinstance(api_id, dict) else api_id
    api = resources.get(name) if isinstance(name, str) else None
    if not isinstance(api, dict) or api.get("Type") != kind:
        return implicit
    stage = resolver.resolve((api.get("Properties") or {}).get("StageName"))
    return implicit if stage in (None, "", NO_VALUE) else str(stage)


def _version(value: str) -> Literal["1.0", "2.0"]:
    if value not in ("1.0", "2.0"):
        raise TemplateError(f"PayloadFormatVersion {value!r}")
    return "1.0" if value == "1.0" else "2.0"
