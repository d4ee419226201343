"""The Open Inference Protocol V2 over HTTP/REST (KServe V2, Triton's HTTP API), with the
binary tensor extension.

The routes decode a request into ``handlers.v2.tensors`` and call the V2 data plane; nothing
else. A body is parsed whatever its Content-Type says (tritonclient sends none): it is JSON,
or, with ``Inference-Header-Content-Length``, that many bytes of JSON followed by the raw data
of the inputs that declare ``parameters.binary_data_size``, in input order. Outputs come back
as binary data when the request asks (``parameters.binary_data_output``, or an output's
``parameters.binary_data``), with ``Inference-Header-Content-Length`` in the reply.

Errors on these paths are ``{"error": "<message>"}`` (``handlers.errors``). Health and
metadata need no token; inference needs X-Token (or ``Authorization: Bearer <token>``),
checked on the headers before the body is read like the native predict route.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from fastapi import APIRouter, Request, Response, Security
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from pydantic import BaseModel
from starlette.datastructures import Headers

from engine.errors import InvalidInput
from engine.facade import InferenceEngine
from handlers.auth import Authenticator, bearer
from handlers.body import Guard
from handlers.disconnect import Disconnected, unless_disconnected
from handlers.v2.dataplane import V2DataPlane
from handlers.v2.tensors import (
    BYTES,
    DATATYPES,
    InferRequest,
    InferResult,
    ModelMetadata,
    Tensor,
    TensorSpec,
    check_datatype,
    check_shape,
    from_json_data,
    from_raw,
    to_json_data,
    to_raw,
)

INFERENCE_HEADER = "Inference-Header-Content-Length"
MODEL_PATH = "/v2/models/{model_name}"
VERSION_PATH = "/v2/models/{model_name}/versions/{model_version}"
INFER_PATHS = (f"{MODEL_PATH}/infer", f"{VERSION_PATH}/infer")
_TAGS: list[str | Enum] = ["open inference protocol (v2)"]
_TOKEN_HEADER = APIKeyHeader(name="X-Token", auto_error=False)


class V2Error(BaseModel):
    error: str


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": V2Error, "description": "Not a valid V2 request, or tensors that do not fit the model"},
    401: {"model": V2Error, "description": "Token missing or wrong (X-Token or Authorization: Bearer)"},
    404: {"model": V2Error, "description": "Unknown model or version"},
    413: {"model": V2Error, "description": "Too many inputs, a text too long, or a body over MAX_BODY_BYTES"},
    503: {"model": V2Error, "description": "Not ready, overloaded or past its deadline"},
    # Declared so that the docs do not promise FastAPI's 422 body: these routes answer invalid requests with 400.
    "4XX": {"model": V2Error, "description": "Any other client error, in the same shape"},
}


def token_check(auth: Authenticator) -> Guard:
    """The API token from X-Token, else from ``Authorization: Bearer``."""

    def check(headers: Headers) -> None:
        auth.check(headers.get("x-token") or bearer(headers.get("authorization")))

    return check


def v2_guards(auth: Authenticator) -> dict[tuple[str, str], Guard]:
    """The body middleware's guards of the V2 inference routes (path templates)."""
    check = token_check(auth)
    return {("POST", path): check for path in INFER_PATHS}


# -- decoding a request ---------------------------------------------------------------------


@dataclass(frozen=True)
class OutputEncoding:
    """Which outputs the client wants as binary data."""

    default_binary: bool
    binary: Mapping[str, bool]

    def is_binary(self, name: str) -> bool:
        return self.binary.get(name, self.default_binary)


def _split_body(headers: Headers, body: bytes) -> tuple[bytes, bytes]:
    declared = headers.get(INFERENCE_HEADER.lower())
    if declared is None:
        return body, b""
    declared = declared.strip()
    if not declared.isdigit() or int(declared) > len(body):
        raise InvalidInput(
            f"{INFERENCE_HEADER} is {declared!r}; it must be the size of the JSON header, at most the body's {len(body)} bytes"
        )
    size = int(declared)
    return body[:size], body[size:]


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise InvalidInput(f"the inference request is not JSON: {str(exc)[:200]}") from None
    if not isinstance(value, dict):
        raise InvalidInput(f"the inference request must be a JSON object, got {type(value).__name__}")
    return value


def _parameters(owner: str, value: object) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"{owner}: 'parameters' must be an object")
    return value


def _decode_input(index: int, item: object, binary: memoryview, offset: int) -> tuple[Tensor, int]:
    if not isinstance(item, dict):
        raise InvalidInput(f"inputs[{index}] must be an object with name, datatype, shape and data")
    name = item.get("name")
    if not isinstance(name, str):
        raise InvalidInput(f"inputs[{index}]: 'name' must be a string")
    datatype = check_datatype(name, item.get("datatype"))
    shape = check_shape(name, item.get("shape"))
    parameters = _parameters(f"input {name!r}", item.get("parameters"))
    size = parameters.get("binary_data_size")
    if size is None:
        if "data" not in item:
            raise InvalidInput(f"input {name!r} has neither 'data' nor parameters.binary_data_size")
        try:
            data = from_json_data(datatype, shape, item["data"])
        except InvalidInput as exc:
            raise InvalidInput(f"input {name!r}: {exc.message}") from None
        return Tensor(name=name, datatype=datatype, shape=shape, data=data), offset
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise InvalidInput(f"input {name!r}: binary_data_size must be a non-negative integer, got {size!r}")
    if "data" in item:
        raise InvalidInput(f"input {name!r} has both 'data' and parameters.binary_data_size")
    if offset + size > len(binary):
        raise InvalidInput(
            f"input {name!r} declares {size} bytes of binary data but only {len(binary) - offset} remain after the JSON header "
            f"(is {INFERENCE_HEADER} right?)"
        )
    try:
        data = from_raw(datatype, shape, bytes(binary[offset : offset + size]))
    except InvalidInput as exc:
        raise InvalidInput(f"input {name!r}: {exc.message}") from None
    return Tensor(name=name, datatype=datatype, shape=shape, data=data), offset + size


def _decode_outputs(value: object) -> tuple[list[str] | None, dict[str, bool]]:
    if value is None:
        return None, {}
    if not isinstance(value, list):
        raise InvalidInput("'outputs' must be a list of objects with a name")
    names: list[str] = []
    binary: dict[str, bool] = {}
    for index, item in enumerate(value):
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str):
            raise InvalidInput(f"outputs[{index}]: 'name' must be a string")
        parameters = _parameters(f"output {name!r}", item.get("parameters"))
        if parameters.get("classification"):
            raise InvalidInput(f"output {name!r}: the classification extension is not supported; read 'label' and 'probabilities'")
        wants = parameters.get("binary_data")
        if wants is not None:
            if not isinstance(wants, bool):
                raise InvalidInput(f"output {name!r}: parameters.binary_data must be true or false")
            binary[name] = wants
        names.append(name)
    return names, binary


def decode_request(headers: Headers, body: bytes) -> tuple[InferRequest, OutputEncoding]:
    """A V2 inference request body (JSON, or JSON + binary tensor data), checked."""
    header, rest = _split_body(headers, body)
    document = _json_object(header)
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput("'id' must be a string")
    items = document.get("inputs")
    if not isinstance(items, list) or not items:
        raise InvalidInput("'inputs' must be a non-empty list of tensors")
    binary, offset = memoryview(rest), 0
    inputs: list[Tensor] = []
    for index, item in enumerate(items):
        tensor, offset = _decode_input(index, item, binary, offset)
        inputs.append(tensor)
    if offset != len(binary):
        raise InvalidInput(
            f"{len(binary)} bytes follow the JSON header but the inputs' binary_data_size add up to {offset} (is {INFERENCE_HEADER} right?)"
        )
    parameters = _parameters("the request", document.get("parameters"))
    default_binary = parameters.get("binary_data_output", False)
    if not isinstance(default_binary, bool):
        raise InvalidInput("parameters.binary_data_output must be true or false")
    outputs, binary_outputs = _decode_outputs(document.get("outputs"))
    request = InferRequest(id=request_id, inputs=inputs, outputs=outputs, parameters=parameters)
    return request, OutputEncoding(default_binary=default_binary, binary=binary_outputs)


# -- encoding answers -----------------------------------------------------------------------


def encode_result(result: InferResult, encoding: OutputEncoding) -> Response:
    """The inference response: JSON, or JSON + the binary outputs' raw data."""
    outputs: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for tensor in result.outputs:
        entry: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}
        if encoding.is_binary(tensor.name):
            raw = to_raw(tensor)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = to_json_data(tensor)
        outputs.append(entry)
    document: dict[str, Any] = {"model_name": result.model_name, "model_version": result.model_version}
    if result.id is not None:
        document["id"] = result.id
    document["outputs"] = outputs
    header = json.dumps(document, separators=(",", ":")).encode()
    if not chunks:
        return Response(header, media_type="application/json")
    return Response(b"".join((header, *chunks)), media_type="application/octet-stream", headers={INFERENCE_HEADER: str(len(header))})


def _tensor_spec(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "datatype": spec.datatype, "shape": list(spec.shape)}


def metadata_body(metadata: ModelMetadata) -> dict[str, Any]:
    return {
        "name": metadata.name,
        "versions": metadata.versions,
        "platform": metadata.platform,
        "inputs": [_tensor_spec(s) for s in metadata.inputs],
        "outputs": [_tensor_spec(s) for s in metadata.outputs],
        "parameters": metadata.parameters,
    }


# -- routes ---------------------------------------------------------------------------------

_TENSOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "datatype", "shape"],
    "properties": {
        "name": {"type": "string"},
        "datatype": {"type": "string", "enum": list(DATATYPES)},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "parameters": {"type": "object", "properties": {"binary_data_size": {"type": "integer", "minimum": 0}}},
        "data": {"type": "array", "description": "Flat or nested, row-major; BYTES elements are strings."},
    },
}
_REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "inputs": {"type": "array", "minItems": 1, "items": _TENSOR_SCHEMA},
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string"},
                    "parameters": {"type": "object", "properties": {"binary_data": {"type": "boolean"}}},
                },
            },
        },
        "parameters": {"type": "object", "properties": {"binary_data_output": {"type": "boolean"}}},
    },
}
_INFER_BODY = {
    "requestBody": {
        "required": True,
        "description": "A V2 inference request (JSON), or with Inference-Header-Content-Length that many bytes of JSON then the "
        "binary data of the inputs that declare parameters.binary_data_size (BYTES: 4-byte little-endian length before each element).",
        "content": {
            "application/json": {
                "schema": _REQUEST_SCHEMA,
                "examples": {
                    "text": {
                        "summary": "Texts for a classifier or an embedding model",
                        "value": {
                            "id": "v2-1",
                            "inputs": [{"name": "text", "datatype": BYTES, "shape": [2], "data": ["I love it", "awful"]}],
                        },
                    },
                    "tabular": {
                        "summary": "Feature rows for iris",
                        "value": {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]},
                    },
                },
            }
        },
    }
}


def v2_router(engine: InferenceEngine, auth: Authenticator) -> APIRouter:
    """The V2 REST routes over one data plane."""
    plane = V2DataPlane(engine)
    check = token_check(auth)
    router = APIRouter(tags=_TAGS)

    @router.get("/v2", summary="Server metadata")
    async def server_metadata() -> dict[str, Any]:
        return plane.server_metadata()

    @router.get("/v2/health/live", summary="Server liveness (200: live)")
    async def server_live() -> JSONResponse:
        live = plane.live()
        return JSONResponse({"live": live}, status_code=200 if live else 400)

    @router.get("/v2/health/ready", summary="Server readiness (200: ready, 400: not ready)")
    async def server_ready() -> JSONResponse:
        ready = plane.ready()
        return JSONResponse({"ready": ready}, status_code=200 if ready else 400)

    async def model_ready(model_name: str, model_version: str | None = None) -> JSONResponse:
        ready = plane.model_ready(model_name, model_version)
        return JSONResponse({"name": model_name, "ready": ready}, status_code=200 if ready else 400)

    async def model_metadata(model_name: str, model_version: str | None = None) -> dict[str, Any]:
        return metadata_body(await plane.model_metadata(model_name, model_version))

    async def infer(request: Request, model_name: str, model_version: str | None = None) -> Response:
        check(request.headers)
        infer_request, encoding = decode_request(request.headers, await request.body())
        work = plane.infer(model_name, model_version, infer_request, routing_key=request.headers.get("x-routing-key"))
        try:
            result = await unless_disconnected(request, work)
        except Disconnected:
            return Response(status_code=499)  # nobody reads it: the client has gone
        return encode_result(result, encoding)

    for path, which in ((MODEL_PATH, "the model (its default version; inference follows its rollout)"), (VERSION_PATH, "a version")):
        router.add_api_route(f"{path}/ready", model_ready, methods=["GET"], summary=f"Readiness of {which}", responses=_ERRORS)
        router.add_api_route(path, model_metadata, methods=["GET"], summary=f"Metadata of {which}", responses=_ERRORS)
        router.add_api_route(
            f"{path}/infer",
            infer,
            methods=["POST"],
            summary=f"Inference on {which}",
            responses=_ERRORS,
            dependencies=[Security(_TOKEN_HEADER)],
            openapi_extra=_INFER_BODY,
        )
    return router
