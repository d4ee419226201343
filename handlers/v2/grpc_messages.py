"""The Open Inference Protocol's gRPC messages (``inference.*``, handlers/v2/proto) to and from
the protocol-neutral tensors of ``handlers.v2.tensors``: what ``handlers.v2.grpc_server`` decodes
and encodes, as ``handlers.v2.rest`` does for JSON.

Inputs come as typed ``contents`` or as ``raw_input_contents`` (both go through ``from_raw``);
outputs go back as ``raw_output_contents``, as Triton sends them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.errors import InvalidInput
from handlers.v2.proto import grpc_predict_v2_pb2 as pb
from handlers.v2.tensors import (
    NUMERIC_DTYPES,
    InferRequest,
    InferResult,
    ModelMetadata,
    Tensor,
    check_datatype,
    check_shape,
    from_raw,
    to_raw,
)

# The field of InferTensorContents that carries each datatype (FP16 has none: raw only, per the protocol).
_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}


def _parameters(parameters: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in parameters.items():
        choice = value.WhichOneof("parameter_choice")
        if choice is not None:
            found[key] = getattr(value, choice)
    return found


def _raw_from_contents(tensor: pb.ModelInferRequest.InferInputTensor) -> bytes:
    """An input's typed ``contents`` as the protocol's raw bytes, so both forms go through ``from_raw``."""
    contents = tensor.contents
    field = "bytes_contents" if tensor.datatype == "BYTES" else _CONTENTS_FIELD.get(tensor.datatype)
    if field is None:
        raise InvalidInput(f"input {tensor.name!r}: datatype {tensor.datatype} has no typed contents; send it in raw_input_contents")
    others = sorted(f.name for f, _ in contents.ListFields() if f.name != field)
    if others:
        raise InvalidInput(f"input {tensor.name!r}: {tensor.datatype} contents go in {field}, not {', '.join(others)}")
    if tensor.datatype == "BYTES":
        return b"".join(len(item).to_bytes(4, "little") + item for item in contents.bytes_contents)
    try:
        return np.asarray(list(getattr(contents, field)), dtype=NUMERIC_DTYPES[tensor.datatype].newbyteorder("<")).tobytes()
    except (OverflowError, ValueError) as exc:
        raise InvalidInput(f"input {tensor.name!r}: {field} do not fit {tensor.datatype}: {exc}") from exc


def infer_request(request: pb.ModelInferRequest) -> InferRequest:
    """The protocol-neutral request of a ``ModelInferRequest``."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise InvalidInput(f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs: give one per input, in order")
    if raw and any(tensor.HasField("contents") for tensor in request.inputs):
        raise InvalidInput("give the inputs either in raw_input_contents or in each input's contents, not both")
    tensors = []
    for index, tensor in enumerate(request.inputs):
        check_datatype(tensor.name, tensor.datatype)
        shape = check_shape(tensor.name, list(tensor.shape))
        data = from_raw(tensor.datatype, shape, raw[index] if raw else _raw_from_contents(tensor))
        tensors.append(Tensor(name=tensor.name, datatype=tensor.datatype, shape=shape, data=data))
    return InferRequest(
        id=request.id or None,
        inputs=tensors,
        outputs=[output.name for output in request.outputs] or None,
        parameters=_parameters(request.parameters),
    )


def infer_response(result: InferResult) -> pb.ModelInferResponse:
    response = pb.ModelInferResponse(model_name=result.model_name, model_version=result.model_version, id=result.id or "")
    for tensor in result.outputs:
        response.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=list(tensor.shape))
        response.raw_output_contents.append(to_raw(tensor))
    return response


def metadata_response(metadata: ModelMetadata) -> pb.ModelMetadataResponse:
    def specs(tensors: Any) -> list[pb.ModelMetadataResponse.TensorMetadata]:
        return [pb.ModelMetadataResponse.TensorMetadata(name=t.name, datatype=t.datatype, shape=list(t.shape)) for t in tensors]

    return pb.ModelMetadataResponse(
        name=metadata.name,
        versions=list(metadata.versions),
        platform=metadata.platform,
        inputs=specs(metadata.inputs),
        outputs=specs(metadata.outputs),
    )
