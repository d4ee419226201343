"""emulator.image_plan: a Dockerfile read as the image it builds (pip steps, CMD), and the one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from emulator.image_plan import ImageEnvironmentError, LocalFiles, dockerfile_command, image_plan, parse_dockerfile


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("RUN pip install --frobnicate x", "pip option --frobnicate is not understood"),
        ("COPY absent.txt /tmp/\nRUN pip install -r /tmp/absent.txt", "COPY absent.txt: not in the build context"),
        ("RUN pip install -r /tmp/requirements.txt", "/tmp/requirements.txt is not copied from the build context before this RUN"),
        ("RUN pip install /opt/wheels/x.whl", "/opt/wheels/x.whl is not copied from the build context before this RUN"),
    ],
)
def test_what_cannot_be_rebuilt_is_one_line(tmp_path: Path, line: str, expected: str) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(f"FROM public.ecr.aws/lambda/python:3.12\n{line}\n")
    with pytest.raises(ImageEnvironmentError) as raised:
        image_plan(dockerfile, tmp_path)
    assert expected in str(raised.value) and "\n" not in str(raised.value), raised.value


def test_pip_commands_are_read_as_the_image_runs_them(tmp_path: Path) -> None:
    """Requirement files, plain specs, options that choose what is installed; location options dropped."""
    (tmp_path / "requirements.txt").write_text("idna\n")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "pyproject.toml").write_text("[project]\nname = 'pkg'\n")
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(
        "FROM public.ecr.aws/lambda/python:3.12\n"
        "WORKDIR /build\n"
        "COPY requirements.txt ./\n"
        "COPY pkg ./pkg\n"
        "RUN --mount=type=cache,target=/root/.cache/pip PIP_NO_COLOR=1 python3 -m pip install -U -t /var/task"
        " --index-url=https://pypi.org/simple -r requirements.txt 'six>=1.16' ./pkg[extra] > /dev/null && echo done\n"
        "RUN /usr/bin/pip3 install --no-deps iniconfig; pip --version\n"
    )
    plan = image_plan(dockerfile, tmp_path)
    first, second = plan.installs
    assert first.requirements() == [
        "--index-url",
        "https://pypi.org/simple",
        "-r",
        "/build/requirements.txt",
        "six>=1.16",
        "/build/pkg[extra]",
    ]
    assert first.arguments[3] == LocalFiles("/build/requirements.txt", (("", (tmp_path / "requirements.txt").resolve()),))
    assert first.arguments[5] == LocalFiles("/build/pkg", (("pyproject.toml", (tmp_path / "pkg" / "pyproject.toml").resolve()),), "[extra]")
    assert second.requirements() == ["--no-deps", "iniconfig"]
    assert plan.python_version == "3.12" and plan.task_root == ()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('FROM base\nCMD ["app.main.handler"]\n', ["app.main.handler"]),
        ("FROM base\nCMD app.main.handler\n", ["app.main.handler"]),
        ('FROM base\nCMD [ "python", "-m", "app" ]\nCMD python -m "my app"\n', ["python", "-m", "my app"]),
        ('FROM base AS runtime\nCMD ["first.handler"]\nFROM runtime\nENV X=1\n', ["first.handler"]),
        ('FROM base AS build\nCMD ["build.handler"]\nFROM base\nENV X=1\n', None),
        ("FROM base\nCMD [not json\n", ["[not", "json"]),
    ],
)
def test_the_command_is_the_last_stages_cmd(tmp_path: Path, text: str, expected: list[str] | None) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(text)
    assert dockerfile_command(dockerfile) == expected


def test_a_dockerfile_reads_as_stages_of_instructions(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(
        'ARG BASE="python:3.12-slim"\n'
        "FROM ${BASE} AS build\n"
        "# a comment\n"
        "RUN pip install \\\n"
        "      a  c   \\\n"
        "    b\n"
        "FROM --platform=linux/amd64 build\n"
        'CMD ["serve"]\n'
    )
    parsed = parse_dockerfile(dockerfile)
    assert parsed.global_args == {"BASE": "python:3.12-slim"}
    assert [(s.base, s.name) for s in parsed.stages] == [("${BASE}", "build"), ("build", None)]
    assert parsed.resolve(parsed.stage("build").base) == "python:3.12-slim"
    # Continuation lines join with one space, and spaces inside a line stay; the instruction keeps the line it starts on.
    (run,) = parsed.stage("build").instructions
    assert (run.line, run.keyword, run.arguments) == (4, "RUN", "pip install a  c b")
    assert parsed.final.steps() == [("CMD", '["serve"]')]
    assert parsed.chain() == parsed.stages
