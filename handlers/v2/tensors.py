"""Protocol-neutral V2 tensors, their encodings, and how each model kind maps to them.

A ``Tensor`` is what both edges speak: REST decodes JSON ``data`` (``from_json_data``) or the
binary tensor extension (``from_raw``), gRPC decodes ``contents`` or ``raw_input_contents``
(``from_raw`` too); both encode answers back with ``to_json_data`` / ``to_raw``. Every decoding
error is an ``InvalidInput`` with a message that names the tensor: a client's mistake is a 400,
never a 500.

A kind maps to tensors by what its loaded version says of itself (``signature_of``): a kind that
takes ``texts`` takes one ``BYTES`` tensor ``text`` of shape ``[N]`` or ``[N, 1]``; one that takes
``instances`` takes one numeric tensor ``features`` ``[N, n_features]``. A kind with labels answers
``label`` (``BYTES [N]``) and ``probabilities`` (``FP32 [N, labels]``, columns in label order); one
without answers ``embedding`` (``FP32 [N, width]``).
"""

from __future__ import annotations

import math
import numbers
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.errors import InvalidInput
from engine.kinds import ModelKind
from engine.results import InputResult

BYTES = "BYTES"
NUMERIC_DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
DATATYPES = (*NUMERIC_DTYPES, BYTES)
_LENGTH = struct.Struct("<I")  # a BYTES element's length prefix: 4 bytes, little-endian

TEXT_INPUT = "text"
FEATURES_INPUT = "features"
LABEL_OUTPUT = "label"
PROBABILITIES_OUTPUT = "probabilities"
EMBEDDING_OUTPUT = "embedding"
_TEXT_FIELD, _TABULAR_FIELD = "texts", "instances"


@dataclass(frozen=True, eq=False)
class Tensor:
    """One named tensor, either direction. ``data`` has shape ``shape``: an ndarray of the
    datatype's dtype, or for ``BYTES`` an object ndarray of ``bytes``."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray


@dataclass(frozen=True, eq=False)
class InferRequest:
    """An inference request: its input tensors, the outputs asked for (None: all) and its parameters."""

    id: str | None
    inputs: list[Tensor]
    outputs: list[str] | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class InferResult:
    """An inference answer: ``model_version`` is the version that answered (rollout included)."""

    model_name: str
    model_version: str
    id: str | None
    outputs: list[Tensor]


@dataclass(frozen=True)
class TensorSpec:
    """A tensor of a model's signature; -1 marks a variable dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ModelMetadata:
    """A model (version)'s signature. ``parameters`` says what the tensors cannot: the kind, the
    version described and the label order of ``probabilities``."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    parameters: dict[str, Any] = field(default_factory=dict)


# -- shapes and encodings -------------------------------------------------------------------


def check_shape(name: str, shape: object) -> tuple[int, ...]:
    """A request tensor's shape: a list of non-negative integers."""
    if not isinstance(shape, list | tuple) or any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in shape):
        raise InvalidInput(f"input {name!r}: 'shape' must be a list of non-negative integers, got {shape!r}")
    return tuple(shape)


def element_count(shape: Sequence[int]) -> int:
    return math.prod(shape)


def _numeric_dtype(datatype: str) -> np.dtype[Any]:
    try:
        return NUMERIC_DTYPES[datatype]
    except KeyError:
        raise InvalidInput(f"unsupported datatype {datatype!r}; supported: {', '.join(DATATYPES)}") from None


def check_datatype(name: str, datatype: object) -> str:
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise InvalidInput(f"input {name!r}: unsupported datatype {datatype!r}; supported: {', '.join(DATATYPES)}")
    return datatype


def from_raw(datatype: str, shape: Sequence[int], raw: bytes) -> np.ndarray:
    """Decode a tensor's raw bytes (little-endian, row-major; ``BYTES``: each element a 4-byte
    little-endian length, then its bytes), checked against ``shape``."""
    count = element_count(shape)
    if datatype == BYTES:
        return _bytes_elements(raw, count).reshape(tuple(shape))
    dtype = _numeric_dtype(datatype)
    if len(raw) != count * dtype.itemsize:
        raise InvalidInput(f"{len(raw)} bytes of {datatype} data do not make shape {list(shape)}: it takes {count * dtype.itemsize} bytes")
    return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(tuple(shape))


def _bytes_elements(raw: bytes, count: int) -> np.ndarray:
    elements: list[bytes] = []
    offset, end = 0, len(raw)
    while offset < end:
        if offset + _LENGTH.size > end:
            raise InvalidInput(f"BYTES data ends inside the length of element {len(elements)}")
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += _LENGTH.size
        if offset + length > end:
            raise InvalidInput(f"BYTES element {len(elements)} declares {length} bytes but only {end - offset} remain")
        elements.append(raw[offset : offset + length])
        offset += length
        if len(elements) > count:
            break
    if len(elements) != count:
        raise InvalidInput(f"BYTES data holds {len(elements)}{'+' if offset < end else ''} elements; the shape needs {count}")
    array = np.empty(count, dtype=object)
    array[:] = elements
    return array


def to_raw(tensor: Tensor) -> bytes:
    """The tensor's raw bytes, as ``from_raw`` reads them."""
    if tensor.datatype == BYTES:
        return b"".join(_LENGTH.pack(len(item)) + item for item in tensor.data.reshape(-1))
    dtype = _numeric_dtype(tensor.datatype)
    return np.ascontiguousarray(tensor.data, dtype=dtype.newbyteorder("<")).tobytes()


_END = object()


def _flatten(data: list[Any]) -> list[Any]:
    """Row-major elements of flat or nested JSON data (no recursion: nesting depth is the client's)."""
    flat: list[Any] = []
    stack: list[Any] = [iter(data)]
    while stack:
        item = next(stack[-1], _END)
        if item is _END:
            stack.pop()
        elif isinstance(item, list):
            stack.append(iter(item))
        else:
            flat.append(item)
    return flat


def from_json_data(datatype: str, shape: Sequence[int], data: list[Any]) -> np.ndarray:
    """Decode JSON ``data`` (flat or nested, row-major) of ``datatype``, checked against ``shape``.
    ``BYTES`` elements are strings, sent as their UTF-8 bytes."""
    if not isinstance(data, list):
        raise InvalidInput(f"'data' must be a list, got {type(data).__name__}")
    flat = _flatten(data)
    count = element_count(shape)
    if len(flat) != count:
        raise InvalidInput(f"'data' holds {len(flat)} elements; shape {list(shape)} needs {count}")
    if datatype == BYTES:
        return _json_bytes(flat).reshape(tuple(shape))
    dtype = _numeric_dtype(datatype)
    _check_json_numbers(datatype, dtype, flat)
    try:
        return np.array(flat, dtype=dtype).reshape(tuple(shape))
    except (OverflowError, ValueError) as exc:
        raise InvalidInput(f"'data' does not fit {datatype}: {exc}") from exc


def _json_bytes(flat: list[Any]) -> np.ndarray:
    array = np.empty(len(flat), dtype=object)
    for index, item in enumerate(flat):
        if not isinstance(item, str):
            raise InvalidInput(f"BYTES element {index} is {type(item).__name__}; in JSON, BYTES elements are strings")
        try:
            array[index] = item.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInput(f"BYTES element {index} is not valid Unicode (a lone surrogate?)") from None
    return array


def _check_json_numbers(datatype: str, dtype: np.dtype[Any], flat: list[Any]) -> None:
    if dtype.kind == "b":
        wrong = next((i for i, v in enumerate(flat) if not isinstance(v, bool)), None)
        expected = "true or false"
    elif dtype.kind in "iu":
        wrong = next((i for i, v in enumerate(flat) if isinstance(v, bool) or not isinstance(v, int)), None)
        expected = "an integer"
    else:
        wrong = next((i for i, v in enumerate(flat) if isinstance(v, bool) or not isinstance(v, numbers.Real)), None)
        expected = "a number"
        if wrong is None:
            limit = float(np.finfo(dtype).max)
            wrong = next((i for i, v in enumerate(flat) if math.isfinite(v) and abs(v) > limit), None)
            expected = f"a number within {datatype}'s range"
    if wrong is not None:
        raise InvalidInput(f"{datatype} element {wrong} is {flat[wrong]!r}; expected {expected}")


def to_json_data(tensor: Tensor) -> list[Any]:
    """The tensor's elements, flat and row-major, as JSON values (``BYTES``: UTF-8 strings)."""
    flat = tensor.data.reshape(-1)
    if tensor.datatype == BYTES:
        return [item.decode("utf-8", "replace") for item in flat]
    values: list[Any] = flat.tolist()
    return values


def bytes_tensor(name: str, items: Sequence[str]) -> Tensor:
    array = np.empty(len(items), dtype=object)
    array[:] = [item.encode("utf-8") for item in items]
    return Tensor(name=name, datatype=BYTES, shape=(len(items),), data=array)


def fp32_tensor(name: str, rows: Sequence[Sequence[float]], width: int) -> Tensor:
    data = np.asarray(rows, dtype=np.float32).reshape(len(rows), width)
    return Tensor(name=name, datatype="FP32", shape=data.shape, data=data)


# -- the per-kind mapping ---------------------------------------------------------------------


@dataclass(frozen=True)
class KindSignature:
    """A model's inputs and outputs as V2 tensors, and the conversions both ways. From a loaded
    version (``signature_of(runtime)``) it has the label order and sizes the metadata publishes;
    from the kind alone (``signature_of(kind_class)``), what inference needs, sizes left to the
    engine's checks and the results (-1)."""

    kind: str
    request_field: str
    input: TensorSpec
    outputs: tuple[TensorSpec, ...]
    labels: tuple[str, ...]
    width: int

    @property
    def labelled(self) -> bool:
        return self.outputs[0].name == LABEL_OUTPUT

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.outputs)

    def engine_inputs(self, inputs: Sequence[Tensor]) -> list[Any]:
        """The request's one input tensor as the kind's inputs (texts, feature rows)."""
        if len(inputs) != 1:
            names = [t.name for t in inputs]
            raise InvalidInput(f"a {self.kind} model takes exactly one input tensor {self.input.name!r}, got {len(inputs)}: {names}")
        tensor = inputs[0]
        if tensor.name != self.input.name:
            raise InvalidInput(f"unknown input {tensor.name!r}: a {self.kind} model takes {self.input.name!r}")
        if tensor.datatype != self.input.datatype and not (self.request_field == _TABULAR_FIELD and _is_number_type(tensor.datatype)):
            allowed = "BYTES" if self.request_field == _TEXT_FIELD else "a numeric datatype (FP32, FP64, INT*, UINT*)"
            raise InvalidInput(f"input {tensor.name!r} is {tensor.datatype}; a {self.kind} model takes {allowed}")
        if self.request_field == _TEXT_FIELD:
            return _texts(tensor)
        return _rows(tensor, self.input.shape[1])

    def output_tensors(self, results: Sequence[InputResult]) -> list[Tensor]:
        """The engine's per-input results as the signature's output tensors."""
        if not self.labelled:
            rows = [getattr(result, "embedding") for result in results]  # noqa: B009 - the field of the embedding result
            return [fp32_tensor(EMBEDDING_OUTPUT, rows, len(rows[0]) if rows else max(self.width, 0))]
        scores: list[dict[str, float]] = [getattr(result, "scores") for result in results]  # noqa: B009
        # Columns in the signature's label order; else the answering version's own (its labels, in order).
        columns = self.labels if not scores or set(scores[0]) == set(self.labels) else tuple(scores[0])
        predictions: list[str] = [getattr(result, "prediction") for result in results]  # noqa: B009
        return [
            bytes_tensor(LABEL_OUTPUT, predictions),
            fp32_tensor(PROBABILITIES_OUTPUT, [[row[label] for label in columns] for row in scores], len(columns)),
        ]


def _is_number_type(datatype: str) -> bool:
    return datatype in NUMERIC_DTYPES and datatype != "BOOL"


def _texts(tensor: Tensor) -> list[str]:
    shape = tensor.shape
    if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
        raise InvalidInput(f"input {tensor.name!r} has shape {list(shape)}; send texts as [N] or [N, 1]")
    if shape[0] < 1:
        raise InvalidInput(f"input {tensor.name!r} holds no texts: send at least one")
    texts: list[str] = []
    for index, item in enumerate(tensor.data.reshape(-1)):
        try:
            texts.append(item if isinstance(item, str) else bytes(item).decode("utf-8"))
        except UnicodeDecodeError:
            raise InvalidInput(f"input {tensor.name!r}: element {index} is not valid UTF-8 text") from None
    return texts


def _rows(tensor: Tensor, n_features: int) -> list[Any]:
    shape = tensor.shape
    if len(shape) != 2 or (n_features >= 0 and shape[1] != n_features):
        wanted = f"[N, {n_features}]" if n_features >= 0 else "[N, n_features]"
        raise InvalidInput(f"input {tensor.name!r} has shape {list(shape)}; this model takes {wanted} ({n_features} features a row)")
    if shape[0] < 1:
        raise InvalidInput(f"input {tensor.name!r} holds no rows: send at least one")
    rows: list[Any] = tensor.data.tolist()
    return rows


def signature_of(kind: ModelKind | type[ModelKind]) -> KindSignature:
    """How a kind's inputs and outputs look as tensors: a loaded version (an instance) gives its
    labels, width and feature count; a kind class gives -1 for what only a version knows."""
    loaded = not isinstance(kind, type)
    field_name = kind.request_field
    if field_name == _TEXT_FIELD:
        spec = TensorSpec(TEXT_INPUT, BYTES, (-1,))
    elif field_name == _TABULAR_FIELD:
        n_features = getattr(kind, "n_features", None) if loaded else None
        spec = TensorSpec(FEATURES_INPUT, "FP32", (-1, n_features if isinstance(n_features, int) else -1))
    else:
        raise InvalidInput(f"a {kind.name} model is not served over the Open Inference Protocol (its inputs are {field_name!r})")
    labels = tuple(kind.labels) if loaded else ()
    width = kind.width if loaded else -1
    if "scores" in kind.result_type.model_fields:
        outputs: tuple[TensorSpec, ...] = (
            TensorSpec(LABEL_OUTPUT, BYTES, (-1,)),
            TensorSpec(PROBABILITIES_OUTPUT, "FP32", (-1, len(labels) if loaded else -1)),
        )
    else:
        outputs = (TensorSpec(EMBEDDING_OUTPUT, "FP32", (-1, width)),)
    return KindSignature(kind=kind.name, request_field=field_name, input=spec, outputs=outputs, labels=labels, width=width)
