"""emulator.limits: one table of AWS's figures, shown as it is in the README, and the bounded body reader."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from emulator import limits
from tests.conftest import REPO_ROOT


def test_the_readme_shows_the_table_the_emulator_enforces() -> None:
    assert limits.table() in (REPO_ROOT / "README.md").read_text(), "README.md: paste emulator.limits.table() into the emulator section"


def test_every_limit_names_its_aws_page_and_the_date_it_was_read() -> None:
    for limit in limits.ALL:
        assert limit.source.startswith("https://docs.aws.amazon.com/"), limit
        assert len(limit.read_on) == 10 and limit.read_on[4] == limit.read_on[7] == "-", limit
        assert limit.value > 0, limit


async def _chunks(*sizes: int) -> AsyncIterator[bytes]:
    for size in sizes:
        yield b"x" * size


def test_a_body_within_the_bound_is_kept_and_one_past_it_is_counted_not_kept() -> None:
    assert asyncio.run(limits.read_bounded(_chunks(3, 2), 5)) == b"xxxxx"
    with pytest.raises(limits.TooLarge) as raised:
        asyncio.run(limits.read_bounded(_chunks(3, 2, 4), 5))
    assert raised.value.size == 9
