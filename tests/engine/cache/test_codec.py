from __future__ import annotations

import json

import pytest

from engine.cache import FORMAT_VERSION, decode_result, encode_result


def test_round_trip_is_exact_and_compact() -> None:
    scores = {"negative": 0.0123456789012345, "positive": 0.9876543210987655, "naïve": 1e-300}
    data = encode_result(scores)
    assert decode_result(data) == scores
    assert b" " not in data
    assert json.loads(data)["v"] == FORMAT_VERSION


def test_label_order_is_kept() -> None:
    assert list(decode_result(encode_result({"z": 1.0, "a": 0.0})) or {}) == ["z", "a"]


def test_integer_scores_read_back_as_floats() -> None:
    assert decode_result(b'{"v":1,"s":{"a":1}}') == {"a": 1.0}


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"\xff\xfe\x00",
        b"[1,2]",
        b'{"s":{"a":0.5}}',
        b'{"v":2,"s":{"a":0.5}}',
        b'{"v":"1","s":{"a":0.5}}',
        b'{"v":1,"s":[0.5]}',
        b'{"v":1,"s":{"a":"0.5"}}',
        b'{"v":1,"s":{"a":true}}',
        b'{"v":1,"s":{"a":null}}',
        b"[" * 100_000,
    ],
)
def test_anything_else_is_a_miss(data: bytes) -> None:
    assert decode_result(data) is None
