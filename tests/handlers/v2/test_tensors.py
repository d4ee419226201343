"""handlers/v2/tensors.py: V2 tensor encodings (JSON data, raw bytes) and their errors; the raw
encoding is checked against the official client's own (de)serialisers."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pytest
from tritonclient.utils import deserialize_bytes_tensor, np_to_triton_dtype, serialize_byte_tensor

from engine.errors import InvalidInput
from handlers.v2.tensors import (
    NUMERIC_DTYPES,
    Tensor,
    check_datatype,
    check_shape,
    from_json_data,
    from_raw,
    to_json_data,
    to_raw,
)


def numeric(datatype: str, values: list[Any], shape: tuple[int, ...]) -> Tensor:
    return Tensor("x", datatype, shape, np.array(values, dtype=NUMERIC_DTYPES[datatype]).reshape(shape))


@pytest.mark.parametrize("datatype", sorted(NUMERIC_DTYPES))
def test_every_numeric_datatype_round_trips_raw_and_json(datatype: str) -> None:
    values: list[Any] = [True, False, True, True, False, True] if datatype == "BOOL" else [0, 1, 2, 3, 4, 5]
    tensor = numeric(datatype, values, (2, 3))
    assert np_to_triton_dtype(tensor.data.dtype) == datatype  # the client's name for the same dtype
    raw = to_raw(tensor)
    assert raw == tensor.data.astype(tensor.data.dtype.newbyteorder("<")).tobytes()
    decoded = from_raw(datatype, [2, 3], raw)
    assert decoded.dtype == NUMERIC_DTYPES[datatype] and decoded.shape == (2, 3)
    np.testing.assert_array_equal(decoded, tensor.data)
    np.testing.assert_array_equal(from_json_data(datatype, [2, 3], to_json_data(tensor)), tensor.data)


def test_raw_numbers_are_little_endian() -> None:
    assert to_raw(numeric("FP32", [1.0], (1,))) == b"\x00\x00\x80\x3f"
    assert from_raw("INT32", [1], b"\x01\x00\x00\x00").tolist() == [1]


def test_bytes_raw_matches_the_official_client() -> None:
    items = np.array([b"hello", "héllo".encode(), b"", b"\x00\xff"], dtype=np.object_)
    serialized = serialize_byte_tensor(items).item()
    assert serialized == b"".join(struct.pack("<I", len(i)) + i for i in items)
    decoded = from_raw("BYTES", [4], serialized)
    assert decoded.tolist() == items.tolist()
    tensor = Tensor("t", "BYTES", (2, 2), decoded.reshape(2, 2))
    assert to_raw(tensor) == serialized
    assert deserialize_bytes_tensor(to_raw(tensor)).tolist() == items.tolist()


def test_json_data_may_be_flat_or_nested() -> None:
    flat = from_json_data("FP64", [2, 2], [1.0, 2.0, 3.0, 4.0])
    nested = from_json_data("FP64", [2, 2], [[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_array_equal(flat, nested)
    assert from_json_data("BYTES", [2, 1], [["a"], ["é"]]).tolist() == [[b"a"], ["é".encode()]]


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    deep: list[Any] = [1.0]
    for _ in range(100_000):
        deep = [deep]
    np.testing.assert_array_equal(from_json_data("FP32", [1], deep), [1.0])
    with pytest.raises(InvalidInput, match="2 elements"):
        from_json_data("FP32", [1], [deep, 2.0])


@pytest.mark.parametrize(
    ("datatype", "shape", "data", "message"),
    [
        ("FP32", [3], [1.0, 2.0], "holds 2 elements; shape \\[3\\] needs 3"),
        ("INT64", [1], [1.5], "expected an integer"),
        ("INT64", [1], [True], "expected an integer"),
        ("BOOL", [1], [1], "true or false"),
        ("FP32", [1], ["1.0"], "expected a number"),
        ("FP32", [1], [1e300], "range"),
        ("UINT8", [1], [300], "does not fit UINT8"),
        ("UINT8", [1], [-1], "does not fit UINT8"),
        ("BYTES", [1], [1], "strings"),
        ("BYTES", [1], ["\ud800"], "valid Unicode"),
        ("BF16", [1], [1.0], "unsupported datatype"),
    ],
)
def test_bad_json_data_is_invalid_input(datatype: str, shape: list[int], data: list[Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        from_json_data(datatype, shape, data)


def test_json_data_must_be_a_list() -> None:
    with pytest.raises(InvalidInput, match="must be a list"):
        from_json_data("FP32", [1], 1.0)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("datatype", "shape", "raw", "message"),
    [
        ("FP32", [2], b"\x00" * 7, "7 bytes of FP32 data do not make shape \\[2\\]: it takes 8 bytes"),
        ("BYTES", [1], b"\x05\x00\x00\x00abc", "declares 5 bytes but only 3 remain"),
        ("BYTES", [1], b"\x01\x00", "ends inside the length"),
        ("BYTES", [2], b"\x01\x00\x00\x00a", "holds 1 elements; the shape needs 2"),
        ("BYTES", [1], b"\x01\x00\x00\x00a\x01\x00\x00\x00b", "holds 2 elements"),
        ("BYTES", [1], b"\x01\x00\x00\x00a\x00", "ends inside the length of element 1"),
    ],
)
def test_bad_raw_data_is_invalid_input(datatype: str, shape: list[int], raw: bytes, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        from_raw(datatype, shape, raw)


def test_shapes_and_datatypes_are_checked() -> None:
    assert check_shape("x", [2, 0]) == (2, 0)
    for bad in ([-1], [1.5], [True], "2", None):
        with pytest.raises(InvalidInput, match="non-negative integers"):
            check_shape("x", bad)
    assert check_datatype("x", "FP16") == "FP16"
    for bad_type in ("fp32", 3, None):
        with pytest.raises(InvalidInput, match="unsupported datatype"):
            check_datatype("x", bad_type)
