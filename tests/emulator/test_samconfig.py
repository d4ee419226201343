"""``--parameter-overrides`` as SAM CLI parses it, and samconfig.toml as ``sam`` reads it."""

from __future__ import annotations

from pathlib import Path

import pytest

from emulator.samconfig import OverrideSyntaxError, SamConfigError, find, merged, parse_parameter_overrides, read, relative_to


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["A=1 B=2"], {"A": "1", "B": "2"}),
        (["A=1", "B=2"], {"A": "1", "B": "2"}),
        (["ParameterKey=A,ParameterValue=1"], {"A": "1"}),
        (["ParameterKey=A,ParameterValue=1 ParameterKey=B,ParameterValue=x,y"], {"A": "1", "B": "x,y"}),
        (["A='a b' B=\"c d\""], {"A": "a b", "B": "c d"}),
        (["ParameterKey=A,ParameterValue='a b'"], {"A": "a b"}),
        (["A=x=y B="], {"A": "x=y", "B": ""}),
        (["A=1", "A=2"], {"A": "2"}),
        ("A=1 B=2", {"A": "1", "B": "2"}),
        ([], {}),
    ],
)
def test_both_sam_syntaxes(values: list[str] | str, expected: dict[str, str]) -> None:
    assert parse_parameter_overrides(values) == expected


@pytest.mark.parametrize("value", ["Bare", "A=1 Bare", "=1", "A-B=1", "A='unclosed"])
def test_a_value_in_neither_syntax_is_one_line(value: str) -> None:
    with pytest.raises(OverrideSyntaxError) as raised:
        parse_parameter_overrides([value])
    assert "--parameter-overrides" in str(raised.value) and "\n" not in str(raised.value)


CONFIG = """
version = 0.1
[default.global.parameters]
parameter_overrides = "Stage=global"
stack_name = "app"
[default.local_invoke.parameters]
parameter_overrides = ["Stage=invoke", "Mode=slow"]
env_vars = "env/local.json"
[default.local_start_api.parameters]
port = 3100
[staging.local_invoke.parameters]
env_vars = "env/staging.json"
"""


def test_global_then_the_commands_tables(tmp_path: Path) -> None:
    path = tmp_path / "samconfig.toml"
    path.write_text(CONFIG)
    tables = read(path, "default", ("local_invoke",))
    assert list(tables) == ["global", "local_invoke"]
    options = merged(tables)
    assert options["parameter_overrides"] == ["Stage=invoke", "Mode=slow"] and options["stack_name"] == "app"
    assert relative_to(path, options["env_vars"]) == tmp_path / "env" / "local.json"
    assert merged(read(path, "staging", ("local_invoke",))) == {"env_vars": "env/staging.json"}
    assert merged(read(path, "default", ("local_start_lambda", "local_start_api")))["port"] == 3100


def test_where_the_file_is(tmp_path: Path) -> None:
    template = tmp_path / "template.yaml"
    assert find(None, template) is None
    (tmp_path / "samconfig.toml").write_text(CONFIG)
    assert find(None, template) == tmp_path / "samconfig.toml"
    other = tmp_path / "other.toml"
    other.write_text("")
    assert find(other, template) == other
    with pytest.raises(SamConfigError, match="no such file"):
        find(tmp_path / "missing.toml", template)


def test_mistakes_in_the_file_are_one_line(tmp_path: Path) -> None:
    path = tmp_path / "samconfig.toml"
    path.write_text(CONFIG)
    with pytest.raises(SamConfigError, match="has no config environment 'prod' \\(it has: default, staging\\)"):
        read(path, "prod", ("local_invoke",))
    assert read(path, "default", ("local_invoke",))  # the default environment may be missing: then nothing is set
    path.write_text("[default.local_invoke\nport = 1")
    with pytest.raises(SamConfigError, match="is not TOML") as raised:
        read(path, "default", ("local_invoke",))
    assert "\n" not in str(raised.value)
