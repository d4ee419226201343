"""CloudFormation intrinsic functions, as far as a local run can resolve them.

Parameters (defaults, or overrides) and pseudo parameters resolve; conditions evaluate; Ref to
a resource, Fn::GetAtt and Fn::ImportValue cannot be known locally and raise ``Unresolvable``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import yaml

NO_VALUE = object()
"""What ``Ref: AWS::NoValue`` resolves to: the property is removed."""

PSEUDO_PARAMETERS = {
    "AWS::AccountId": "123456789012",
    "AWS::Partition": "aws",
    "AWS::Region": "us-east-1",
    "AWS::StackName": "local",
    "AWS::StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/local/local",
    "AWS::URLSuffix": "amazonaws.com",
}
_SUB_VARIABLE = re.compile(r"\$\{(!?)([^}]*)\}")


class Unresolvable(ValueError):
    """The value depends on something only CloudFormation knows (a resource, an export)."""


class TemplateLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short forms: ``!Ref X`` becomes ``{"Ref": "X"}``, ``!If [...]``
    becomes ``{"Fn::If": [...]}``, ``!GetAtt A.B`` becomes ``{"Fn::GetAtt": ["A", "B"]}``."""


def _short_form(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if suffix in ("Ref", "Condition"):
        return {suffix: value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


TemplateLoader.add_multi_constructor("!", _short_form)


class Resolver:
    """Resolves intrinsics against parameter values and the template's conditions."""

    def __init__(self, parameters: Mapping[str, Any], conditions: Mapping[str, Any]) -> None:
        self._parameters = dict(parameters)
        self._conditions = dict(conditions)

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [item for item in (self.resolve(v) for v in value) if item is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, argument),) = value.items()
            if key == "Ref":
                return self._ref(argument)
            if key == "Condition":
                return self.condition(argument)
            if key.startswith("Fn::"):
                return self._function(key[4:], argument)
        return {k: v for k, v in ((k, self.resolve(v)) for k, v in value.items()) if v is not NO_VALUE}

    def condition(self, name: str) -> bool:
        if name not in self._conditions:
            raise Unresolvable(f"unknown condition {name!r}")
        return bool(self.resolve(self._conditions[name]))

    def _ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self._parameters:
            return self._parameters[name]
        if name in PSEUDO_PARAMETERS:
            return PSEUDO_PARAMETERS[name]
        raise Unresolvable(f"Ref {name} (a resource, known only once deployed)")

    def _function(self, name: str, argument: Any) -> Any:
        if name == "If":
            condition, when_true, when_false = argument
            return self.resolve(when_true if self.condition(condition) else when_false)
        if name == "Equals":
            left, right = self.resolve(argument)
            return str(left) == str(right)
        if name == "Not":
            return not self.resolve(argument)[0]
        if name == "And":
            return all(self.resolve(argument))
        if name == "Or":
            return any(self.resolve(argument))
        if name == "Join":
            separator, items = argument
            return str(separator).join(str(item) for item in self.resolve(items))
        if name == "Split":
            separator, text = self.resolve(argument)
            return str(text).split(separator)
        if name == "Select":
            index, items = self.resolve(argument)
            return items[int(index)]
        if name == "Sub":
            return self._sub(argument)
        raise Unresolvable(f"Fn::{name}")

    def _sub(self, argument: Any) -> str:
        text, variables = (argument, {}) if isinstance(argument, str) else argument
        local = {k: self.resolve(v) for k, v in variables.items()}

        def substitute(match: re.Match[str]) -> str:
            literal, name = match.groups()
            if literal:
                return "${" + name + "}"
            value = local[name] if name in local else self._ref(name)
            if value is NO_VALUE or isinstance(value, list | dict):
                raise Unresolvable(f"${{{name}}} in Fn::Sub")
            return str(value)

        return _SUB_VARIABLE.sub(substitute, text)


class ParameterError(ValueError):
    """A parameter value CloudFormation would refuse; the message names the parameter and the constraint."""


def parameter_values(declared: Mapping[str, Any], overrides: Mapping[str, str]) -> dict[str, Any]:
    """Each parameter's override or default, checked as CloudFormation checks it; a list type becomes a list.

    Raises ``ParameterError`` for an override of a parameter the template does not declare, and for
    a value (given or default) outside its Type, AllowedValues, AllowedPattern (matched against the
    whole value), MinLength/MaxLength or MinValue/MaxValue.
    """
    unknown = sorted(set(overrides) - set(declared))
    if unknown:
        raise ParameterError(
            f"Parameters: [{', '.join(unknown)}] do not exist in the template (it declares: {', '.join(declared) or 'none'})"
        )
    values: dict[str, Any] = {}
    for name, declaration in declared.items():
        value = overrides.get(name, declaration.get("Default"))
        if value is None:
            continue
        kind = str(declaration.get("Type", "String"))
        if kind.startswith(("CommaDelimitedList", "List<")):
            items = str(value).split(",")
            for item in items:
                check_parameter(name, declaration, item.strip() if kind == "List<Number>" else item)
            values[name] = items
        else:
            check_parameter(name, declaration, value)
            values[name] = value
    return values


def check_parameter(name: str, declaration: Mapping[str, Any], value: Any) -> None:
    """One value (one item of a list type) against the parameter's constraints."""
    text = _text(value)
    kind = str(declaration.get("Type", "String"))
    if kind in ("Number", "List<Number>"):
        number = _number(text)
        if number is None:
            raise ParameterError(f"Parameter '{name}' must be a number, not {text!r}")
        if "MinValue" in declaration and number < float(declaration["MinValue"]):
            raise ParameterError(f"Parameter '{name}' must be a number not less than {declaration['MinValue']}, not {text}")
        if "MaxValue" in declaration and number > float(declaration["MaxValue"]):
            raise ParameterError(f"Parameter '{name}' must be a number not greater than {declaration['MaxValue']}, not {text}")
    allowed = declaration.get("AllowedValues")
    if allowed is not None and not any(_same(text, _text(option), kind) for option in allowed):
        options = ", ".join(_text(option) for option in allowed)
        raise ParameterError(f"Parameter '{name}' must be one of AllowedValues [{options}], not {text!r}")
    pattern = declaration.get("AllowedPattern")
    if pattern is not None and re.fullmatch(str(pattern), text) is None:
        raise ParameterError(f"Parameter '{name}' must match pattern {pattern}, not {text!r}")
    if "MinLength" in declaration and len(text) < int(declaration["MinLength"]):
        raise ParameterError(f"Parameter '{name}' must contain at least {declaration['MinLength']} characters, not {len(text)}")
    if "MaxLength" in declaration and len(text) > int(declaration["MaxLength"]):
        raise ParameterError(f"Parameter '{name}' must contain at most {declaration['MaxLength']} characters, not {len(text)}")


def _text(value: Any) -> str:
    """A value as CloudFormation passes it: YAML's true and 30 are the strings "true" and "30"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _number(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _same(value: str, option: str, kind: str) -> bool:
    if value == option:
        return True
    if kind in ("Number", "List<Number>"):
        left, right = _number(value), _number(option)
        return left is not None and left == right
    return False
