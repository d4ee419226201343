"""Parameter values as CloudFormation checks them, and the intrinsics a local run resolves."""

from __future__ import annotations

from typing import Any

import pytest

from emulator.intrinsics import NO_VALUE, ParameterError, Resolver, Unresolvable, parameter_values

DECLARED: dict[str, Any] = {
    "Stage": {"Type": "String", "Default": "dev", "AllowedPattern": "[a-z0-9-]{1,20}", "MaxLength": 8, "MinLength": 2},
    "Store": {"Type": "String", "Default": "ssm", "AllowedValues": ["ssm", "secretsmanager"]},
    "Port": {"Type": "Number", "Default": 6379, "MinValue": 1, "MaxValue": 65535},
    "Days": {"Type": "Number", "Default": 30, "AllowedValues": [1, 7, 30]},
    "Flag": {"Type": "String", "Default": True, "AllowedValues": ["true", "false"]},
    "Subnets": {"Type": "CommaDelimitedList", "Default": ""},
    "Sizes": {"Type": "List<Number>", "Default": "1, 2", "MaxValue": 9},
    "NoDefault": {"Type": "String"},
}


def test_defaults_and_overrides() -> None:
    values = parameter_values(DECLARED, {"Stage": "prod", "Port": "6380", "Subnets": "a,b"})
    assert values == {
        "Stage": "prod",
        "Store": "ssm",
        "Port": "6380",
        "Days": 30,
        "Flag": True,
        "Subnets": ["a", "b"],
        "Sizes": ["1", " 2"],
    }


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"Nope": "1"}, "Parameters: [Nope] do not exist in the template"),
        ({"Stage": "Prod_1"}, "Parameter 'Stage' must match pattern [a-z0-9-]{1,20}, not 'Prod_1'"),
        ({"Stage": "ok\nnot"}, "must match pattern"),  # the whole value, not a prefix (re.match would pass it)
        ({"Stage": "x"}, "Parameter 'Stage' must contain at least 2 characters, not 1"),
        ({"Stage": "abcdefghi"}, "Parameter 'Stage' must contain at most 8 characters, not 9"),
        ({"Store": "vault"}, "Parameter 'Store' must be one of AllowedValues [ssm, secretsmanager], not 'vault'"),
        ({"Port": "0"}, "Parameter 'Port' must be a number not less than 1, not 0"),
        ({"Port": "70000"}, "Parameter 'Port' must be a number not greater than 65535, not 70000"),
        ({"Port": "six"}, "Parameter 'Port' must be a number, not 'six'"),
        ({"Port": "nan"}, "Parameter 'Port' must be a number, not 'nan'"),
        ({"Days": "2"}, "Parameter 'Days' must be one of AllowedValues [1, 7, 30], not '2'"),
        ({"Flag": "yes"}, "Parameter 'Flag' must be one of AllowedValues [true, false], not 'yes'"),
        ({"Sizes": "1,10"}, "Parameter 'Sizes' must be a number not greater than 9, not 10"),
    ],
)
def test_a_value_cloudformation_refuses_names_the_parameter_and_the_constraint(overrides: dict[str, str], message: str) -> None:
    with pytest.raises(ParameterError) as raised:
        parameter_values(DECLARED, overrides)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_a_number_is_compared_as_a_number() -> None:
    assert parameter_values(DECLARED, {"Days": "7.0"})["Days"] == "7.0"


def test_a_default_outside_the_constraints_is_refused_too() -> None:
    with pytest.raises(ParameterError, match="Parameter 'Mode' must be one of AllowedValues"):
        parameter_values({"Mode": {"Type": "String", "Default": "other", "AllowedValues": ["fast"]}}, {})


def test_resolver_with_the_values() -> None:
    resolver = Resolver(parameter_values(DECLARED, {"Stage": "qa"}), {"IsQa": {"Fn::Equals": [{"Ref": "Stage"}, "qa"]}})
    assert resolver.resolve({"Fn::If": ["IsQa", {"Fn::Sub": "${Stage}-${AWS::Region}"}, "other"]}) == "qa-us-east-1"
    assert resolver.resolve({"Ref": "AWS::NoValue"}) is NO_VALUE
    assert resolver.resolve({"Fn::Join": ["/", {"Ref": "Subnets"}]}) == ""
    with pytest.raises(Unresolvable):
        resolver.resolve({"Fn::GetAtt": ["Bucket", "Arn"]})
