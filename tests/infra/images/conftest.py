"""The figures of ``make images`` (build times, sizes, what ran in each image and its answers),
printed after the test results."""

from __future__ import annotations

from typing import Any

import pytest

FIGURES: dict[str, dict[str, Any]] = {}


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if not FIGURES:
        return
    terminalreporter.section("images")
    for image, figures in FIGURES.items():
        terminalreporter.write_line(f"{image}:")
        for name, value in figures.items():
            terminalreporter.write_line(f"    {name}: {value}")
