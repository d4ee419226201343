from __future__ import annotations

import numpy as np
import pytest

from engine.cache import FORMAT_VERSION, decode_result, encode_result


def test_round_trip_is_exact_and_compact() -> None:
    row = np.array([0.0123456789, 0.9876543, 1e-30, -2.5], dtype=np.float32)
    data = encode_result(row)
    decoded = decode_result(data)
    assert decoded is not None and decoded.dtype == np.float32
    np.testing.assert_array_equal(decoded, row)
    assert data[0] == FORMAT_VERSION and len(data) == 1 + 4 * len(row)


def test_an_embedding_round_trips() -> None:
    row = np.random.default_rng(0).standard_normal(384).astype(np.float32)
    np.testing.assert_array_equal(decode_result(encode_result(row)), row)


def test_float64_rows_are_stored_as_float32() -> None:
    decoded = decode_result(encode_result(np.array([0.1, 0.9])))
    assert decoded is not None
    np.testing.assert_array_equal(decoded, np.array([0.1, 0.9], dtype=np.float32))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        bytes([FORMAT_VERSION]),
        bytes([FORMAT_VERSION]) + b"\x00\x00\x80",  # not a whole float
        b'{"v":1,"s":{"a":0.5}}',  # format 1 (JSON): a miss, never misread
        bytes([FORMAT_VERSION + 1]) + np.ones(3, dtype="<f4").tobytes(),
        bytes([FORMAT_VERSION]) + np.array([0.5, np.nan], dtype="<f4").tobytes(),
        bytes([FORMAT_VERSION]) + np.array([np.inf], dtype="<f4").tobytes(),
        "not bytes",
    ],
)
def test_anything_else_is_a_miss(data: bytes) -> None:
    assert decode_result(data) is None
