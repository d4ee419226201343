"""handlers/v2/grpc_server.py: the Open Inference Protocol V2 over gRPC, against a live ``mlinfer serve``
(GRPC_PORT set), with the official client (``tritonclient.grpc``), and with tritonclient's own compiled
messages (``service_pb2``) for what the client cannot send: typed ``contents``, sizes that do not add up.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from engine.settings import Settings
from tests.handlers.v2.conftest import V2Server

TEXTS = ["I love this product! Amazing quality.", "This is terrible", "It arrived on a Tuesday."]
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def client(v2_server: V2Server) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(v2_server.grpc_address) as grpc_client:
        yield grpc_client


@pytest.fixture(scope="module")
def stub(v2_server: V2Server) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(v2_server.grpc_address, options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def token(v2_server: V2Server) -> dict[str, str]:
    return {"x-token": v2_server.token}


def native(v2_server: V2Server, model: str, field: str, inputs: list[Any]) -> dict[str, Any]:
    body = {"model": model, "model_version": "v1", field: inputs}
    reply = httpx.post(f"{v2_server.http_url}/api/v1/predict", json=body, headers={"X-Token": v2_server.token}, timeout=TIMEOUT_S)
    assert reply.status_code == 200, reply.text
    answer: dict[str, Any] = reply.json()
    return answer


def text_input(texts: list[str], shape: list[int] | None = None) -> triton.InferInput:
    tensor = triton.InferInput("text", shape or [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=np.object_).reshape(shape or [len(texts)]))
    return tensor


def rows_input(rows: list[list[float]], datatype: str = "FP32") -> triton.InferInput:
    array = np.array(rows, dtype={"FP32": np.float32, "FP64": np.float64, "INT64": np.int64}[datatype])
    tensor = triton.InferInput("features", list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def grpc_error(call: Any, code: grpc.StatusCode, *fragments: str) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error = caught.value
    assert error.code() == code, (error.code(), error.details())
    for fragment in fragments:
        assert fragment in error.details(), error.details()
    return error


def triton_error(call: Any, status: str, *fragments: str) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        call()
    error = caught.value
    assert error.status() == status, (error.status(), error.message())
    for fragment in fragments:
        assert fragment in (error.message() or ""), error.message()
    return error


# -- health and metadata ----------------------------------------------------------------------


def test_server_is_live_over_grpc(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live(client_timeout=TIMEOUT_S) is True


def test_server_ready_and_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_ready() is True
    metadata = client.get_server_metadata(as_json=True)
    assert metadata["name"] == "ml-inference-system" and metadata["version"]
    assert "binary_tensor_data" in metadata["extensions"]


@pytest.mark.parametrize("model", ["sentiment_analysis", "iris", "sentence_embedding"])
def test_models_are_ready(client: triton.InferenceServerClient, model: str) -> None:
    assert client.is_model_ready(model) is True
    assert client.is_model_ready(model, model_version="v1") is True


def test_model_ready_of_an_unknown_model_or_version_is_not_found(client: triton.InferenceServerClient) -> None:
    triton_error(lambda: client.is_model_ready("no_such_model"), "StatusCode.NOT_FOUND", "no_such_model")
    triton_error(lambda: client.is_model_ready("iris", model_version="v9"), "StatusCode.NOT_FOUND", "v9")


@pytest.mark.parametrize(
    ("model", "inputs", "outputs"),
    [
        ("sentiment_analysis", [("text", "BYTES", [-1])], [("label", "BYTES", [-1]), ("probabilities", "FP32", [-1, 3])]),
        ("iris", [("features", "FP32", [-1, 4])], [("label", "BYTES", [-1]), ("probabilities", "FP32", [-1, 3])]),
        ("sentence_embedding", [("text", "BYTES", [-1])], [("embedding", "FP32", [-1, 384])]),
    ],
)
def test_model_metadata_is_the_signature(
    client: triton.InferenceServerClient, v2_server: V2Server, model: str, inputs: list[Any], outputs: list[Any]
) -> None:
    metadata = client.get_model_metadata(model, as_json=True)
    assert metadata["name"] == model and "v1" in metadata["versions"] and metadata["platform"]

    def specs(tensors: list[dict[str, Any]]) -> list[tuple[str, str, list[int]]]:
        return [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in tensors]

    assert specs(metadata["inputs"]) == inputs and specs(metadata["outputs"]) == outputs
    rest = httpx.get(f"{v2_server.http_url}/v2/models/{model}", timeout=TIMEOUT_S).json()
    assert specs(rest["inputs"]) == inputs and specs(rest["outputs"]) == outputs, "gRPC and REST describe the model alike"


def test_metadata_of_an_unknown_model_is_not_found(client: triton.InferenceServerClient) -> None:
    triton_error(lambda: client.get_model_metadata("no_such_model"), "StatusCode.NOT_FOUND", "no_such_model")


# -- inference: one test per model kind, equal to the native API ------------------------------


def assert_classified(result: triton.InferResult, expected: dict[str, Any]) -> None:
    labels = [label.decode() for label in result.as_numpy("label")]
    assert labels == [r["prediction"] for r in expected["results"]]
    columns = list(expected["results"][0]["scores"])  # the native API's scores, in the model's label order
    probabilities = result.as_numpy("probabilities")
    assert probabilities.dtype == np.float32 and probabilities.shape == (len(labels), len(columns))
    wanted = np.array([[r["scores"][label] for label in columns] for r in expected["results"]], dtype=np.float32)
    np.testing.assert_allclose(probabilities, wanted, rtol=1e-5, atol=1e-6)


def test_sentiment_analysis_equals_the_native_api(client: triton.InferenceServerClient, v2_server: V2Server) -> None:
    result = client.infer("sentiment_analysis", [text_input(TEXTS)], model_version="v1", request_id="grpc-1", headers=token(v2_server))
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == ("sentiment_analysis", "v1", "grpc-1")
    assert len(response.raw_output_contents) == len(response.outputs) == 2, "outputs come back raw, as Triton sends them"
    assert_classified(result, native(v2_server, "sentiment_analysis", "texts", TEXTS))


def test_texts_of_shape_n_by_1_are_accepted(client: triton.InferenceServerClient, v2_server: V2Server) -> None:
    result = client.infer("sentiment_analysis", [text_input(TEXTS, [len(TEXTS), 1])], model_version="v1", headers=token(v2_server))
    assert_classified(result, native(v2_server, "sentiment_analysis", "texts", TEXTS))


@pytest.mark.parametrize("datatype", ["FP32", "FP64", "INT64"])
def test_iris_equals_the_native_api(client: triton.InferenceServerClient, v2_server: V2Server, datatype: str) -> None:
    rows = [[int(v) for v in row] for row in ROWS] if datatype == "INT64" else ROWS
    result = client.infer("iris", [rows_input(rows, datatype)], model_version="v1", headers=token(v2_server))
    assert result.get_response().model_version == "v1"
    assert_classified(result, native(v2_server, "iris", "instances", rows))


def test_sentence_embedding_equals_the_native_api(client: triton.InferenceServerClient, v2_server: V2Server) -> None:
    result = client.infer("sentence_embedding", [text_input(TEXTS)], model_version="v1", headers=token(v2_server))
    embedding = result.as_numpy("embedding")
    assert embedding.dtype == np.float32 and embedding.shape == (len(TEXTS), 384)
    expected = np.array([r["embedding"] for r in native(v2_server, "sentence_embedding", "texts", TEXTS)["results"]], dtype=np.float32)
    np.testing.assert_allclose(embedding, expected, rtol=1e-5, atol=1e-6)


def test_requested_outputs_only(client: triton.InferenceServerClient, v2_server: V2Server) -> None:
    outputs = [triton.InferRequestedOutput("probabilities")]
    result = client.infer("iris", [rows_input(ROWS)], model_version="v1", outputs=outputs, headers=token(v2_server))
    assert [o.name for o in result.get_response().outputs] == ["probabilities"] and result.as_numpy("label") is None


def test_an_unpinned_request_follows_rollout(client: triton.InferenceServerClient, v2_server: V2Server) -> None:
    result = client.infer("sentiment_analysis", [text_input(TEXTS[:1])], headers=token(v2_server))
    assert result.get_response().model_version in {"v1", "v3"}


def test_bearer_token_is_accepted(client: triton.InferenceServerClient, v2_server: V2Server) -> None:
    result = client.infer("iris", [rows_input(ROWS[:1])], model_version="v1", headers={"authorization": f"Bearer {v2_server.token}"})
    assert result.as_numpy("label").shape == (1,)


def tensor(name: str, datatype: str, shape: list[int], **contents: Any) -> service_pb2.ModelInferRequest.InferInputTensor:
    """An input tensor; ``contents`` are InferTensorContents fields (typed contents), none for raw."""
    typed = service_pb2.InferTensorContents(**contents) if contents else None
    return service_pb2.ModelInferRequest.InferInputTensor(name=name, datatype=datatype, shape=shape, contents=typed)


def typed_request(model: str, *tensors: service_pb2.ModelInferRequest.InferInputTensor) -> service_pb2.ModelInferRequest:
    return service_pb2.ModelInferRequest(model_name=model, model_version="v1", inputs=tensors)


def raw_request(model: str, datatype: str, shape: list[int], raw: bytes, name: str) -> service_pb2.ModelInferRequest:
    return service_pb2.ModelInferRequest(model_name=model, inputs=[tensor(name, datatype, shape)], raw_input_contents=[raw])


def model_infer(stub: service_pb2_grpc.GRPCInferenceServiceStub, v2_server: V2Server, request: Any) -> Any:
    return stub.ModelInfer(request, metadata=tuple(token(v2_server).items()), timeout=TIMEOUT_S)


def test_typed_contents_are_accepted_like_raw(stub: service_pb2_grpc.GRPCInferenceServiceStub, v2_server: V2Server) -> None:
    texts = tensor("text", "BYTES", [len(TEXTS)], bytes_contents=[t.encode() for t in TEXTS])
    result = triton.InferResult(model_infer(stub, v2_server, typed_request("sentiment_analysis", texts)))
    assert_classified(result, native(v2_server, "sentiment_analysis", "texts", TEXTS))
    features = tensor("features", "FP64", [len(ROWS), 4], fp64_contents=np.ravel(ROWS).tolist())
    result = triton.InferResult(model_infer(stub, v2_server, typed_request("iris", features)))
    assert_classified(result, native(v2_server, "iris", "instances", ROWS))


# -- errors -----------------------------------------------------------------------------------


def test_infer_without_a_token_is_unauthenticated(client: triton.InferenceServerClient, v2_server: V2Server) -> None:
    triton_error(lambda: client.infer("iris", [rows_input(ROWS)]), "StatusCode.UNAUTHENTICATED", "x-token")
    triton_error(lambda: client.infer("iris", [rows_input(ROWS)], headers={"x-token": "wrong"}), "StatusCode.UNAUTHENTICATED")


def test_infer_on_an_unknown_model_or_version_is_not_found(client: triton.InferenceServerClient, v2_server: V2Server) -> None:
    triton_error(
        lambda: client.infer("no_such_model", [rows_input(ROWS)], headers=token(v2_server)), "StatusCode.NOT_FOUND", "no_such_model"
    )
    call = lambda: client.infer("iris", [rows_input(ROWS)], model_version="v9", headers=token(v2_server))  # noqa: E731
    triton_error(call, "StatusCode.NOT_FOUND", "v9")


def test_a_bad_datatype_is_invalid_argument(client: triton.InferenceServerClient, v2_server: V2Server) -> None:
    wrong = triton.InferInput("text", [1, 4], "FP32")
    wrong.set_data_from_numpy(np.zeros((1, 4), dtype=np.float32))
    triton_error(lambda: client.infer("sentiment_analysis", [wrong], headers=token(v2_server)), "StatusCode.INVALID_ARGUMENT", "BYTES")
    triton_error(lambda: client.infer("iris", [text_input(["a"])], headers=token(v2_server)), "StatusCode.INVALID_ARGUMENT")


def test_a_bad_shape_is_invalid_argument(client: triton.InferenceServerClient, v2_server: V2Server) -> None:
    short_rows = rows_input([row[:3] for row in ROWS])
    triton_error(
        lambda: client.infer("iris", [short_rows], headers=token(v2_server)), "StatusCode.INVALID_ARGUMENT", "expected 4 features, got 3"
    )
    texts = text_input(TEXTS[:2] * 2, [2, 2])
    triton_error(lambda: client.infer("sentiment_analysis", [texts], headers=token(v2_server)), "StatusCode.INVALID_ARGUMENT", "[N, 1]")


def test_an_unknown_input_or_output_is_invalid_argument(client: triton.InferenceServerClient, v2_server: V2Server) -> None:
    renamed = triton.InferInput("sentences", [1], "BYTES")
    renamed.set_data_from_numpy(np.array([b"hi"], dtype=np.object_))
    triton_error(
        lambda: client.infer("sentiment_analysis", [renamed], headers=token(v2_server)), "StatusCode.INVALID_ARGUMENT", "sentences"
    )
    outputs = [triton.InferRequestedOutput("logits")]
    call = lambda: client.infer("iris", [rows_input(ROWS)], outputs=outputs, headers=token(v2_server))  # noqa: E731
    triton_error(call, "StatusCode.INVALID_ARGUMENT", "logits")


MALFORMED = {
    "short-raw": (raw_request("iris", "FP32", [1, 4], b"\x00" * 12, "features"), "12 bytes"),
    "too-few-bytes-elements": (raw_request("sentiment_analysis", "BYTES", [2], b"\x02\x00\x00\x00hi", "text"), "elements"),
    "bytes-overrun": (raw_request("sentiment_analysis", "BYTES", [1], b"\x09\x00\x00\x00hi", "text"), "declares 9 bytes"),
    "not-utf8": (raw_request("sentiment_analysis", "BYTES", [1], b"\x02\x00\x00\x00\xff\xfe", "text"), "UTF-8"),
    "unknown-datatype": (raw_request("iris", "FP8", [1, 4], b"\x00" * 4, "features"), "FP8"),
    "raw-without-inputs": (service_pb2.ModelInferRequest(model_name="iris", raw_input_contents=[b"\x00"]), "raw_input_contents"),
    "raw-and-contents": (
        service_pb2.ModelInferRequest(
            model_name="iris", inputs=[tensor("features", "FP32", [1, 4], fp32_contents=[1, 2, 3, 4])], raw_input_contents=[b"\x00" * 16]
        ),
        "not both",
    ),
    "typed-count": (typed_request("iris", tensor("features", "FP32", [1, 4], fp32_contents=[1, 2, 3])), "12 bytes"),
    "int8-overflow": (typed_request("iris", tensor("features", "INT8", [1, 4], int_contents=[1, 2, 3, 300])), "INT8"),
    "fp16-typed": (typed_request("iris", tensor("features", "FP16", [1, 4])), "raw_input_contents"),
    "wrong-contents-field": (typed_request("iris", tensor("features", "FP32", [1, 4], fp64_contents=[1, 2, 3, 4])), "fp32_contents"),
    "no-model-name": (service_pb2.ModelInferRequest(model_name=""), "model_name"),
}


@pytest.mark.parametrize(("request_", "fragment"), MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_tensors_are_invalid_argument(
    stub: service_pb2_grpc.GRPCInferenceServiceStub, v2_server: V2Server, request_: service_pb2.ModelInferRequest, fragment: str
) -> None:
    error = grpc_error(lambda: model_infer(stub, v2_server, request_), grpc.StatusCode.INVALID_ARGUMENT, fragment)
    assert ("error-code", "invalid_input") in (error.trailing_metadata() or ())


def test_a_message_over_max_body_bytes_is_resource_exhausted(stub: service_pb2_grpc.GRPCInferenceServiceStub, v2_server: V2Server) -> None:
    big = b"x" * (5 * 1024 * 1024)  # MAX_BODY_BYTES is 4 MiB
    request_ = raw_request("sentiment_analysis", "BYTES", [1], len(big).to_bytes(4, "little") + big, "text")
    grpc_error(lambda: model_infer(stub, v2_server, request_), grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=TIMEOUT_S).live, "the server still answers"


def test_too_many_texts_or_too_long_a_text_is_resource_exhausted(client: triton.InferenceServerClient, v2_server: V2Server) -> None:
    limit = Settings.model_fields["max_inputs_per_request"].default
    call = lambda: client.infer("sentiment_analysis", [text_input(["ok"] * (limit + 1))], headers=token(v2_server))  # noqa: E731
    triton_error(call, "StatusCode.RESOURCE_EXHAUSTED", str(limit + 1), "MAX_TEXTS_PER_REQUEST")
    long_text = "a" * (Settings.model_fields["max_text_chars"].default + 1)
    call = lambda: client.infer("sentiment_analysis", [text_input([long_text])], headers=token(v2_server))  # noqa: E731
    triton_error(call, "StatusCode.RESOURCE_EXHAUSTED")


def test_a_call_has_a_request_id_and_an_access_line(stub: service_pb2_grpc.GRPCInferenceServiceStub, v2_server: V2Server) -> None:
    """As an HTTP request: the inbound x-request-id is kept and sent back, an invalid one replaced,
    and the access line names the call, its status and the prediction's model fields."""
    request = typed_request("sentiment_analysis", tensor("text", "BYTES", [1], bytes_contents=[b"an access line"]))
    metadata = (*token(v2_server).items(), ("x-request-id", "grpc-call-1"))
    _, call = stub.ModelInfer.with_call(request, metadata=metadata, timeout=TIMEOUT_S)
    assert dict(call.initial_metadata())["x-request-id"] == "grpc-call-1"
    _, replaced = stub.ModelInfer.with_call(request, metadata=(*token(v2_server).items(), ("x-request-id", " bad")), timeout=TIMEOUT_S)
    new_id = dict(replaced.initial_metadata())["x-request-id"]
    assert new_id != " bad" and len(new_id) == 32
    with pytest.raises(grpc.RpcError) as refused:
        stub.ModelInfer(request, metadata=(("x-request-id", "grpc-call-2"),), timeout=TIMEOUT_S)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    deadline = time.monotonic() + 10
    lines: list[str] = []
    while time.monotonic() < deadline:
        lines = [line for line in v2_server.log_path.read_text().splitlines() if "GRPC /inference.GRPCInferenceService/ModelInfer" in line]
        if any("request_id=grpc-call-2" in line for line in lines):
            break
        time.sleep(0.2)
    (answered,) = [line for line in lines if "request_id=grpc-call-1" in line]
    assert " OK " in answered and "model=sentiment_analysis model_version=v1 arm=v1" in answered, answered
    (unauthenticated,) = [line for line in lines if "request_id=grpc-call-2" in line]
    assert " UNAUTHENTICATED " in unauthenticated and v2_server.token not in unauthenticated, unauthenticated


def _errors_total(v2_server: V2Server) -> dict[str, float]:
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{v2_server.http_url}/metrics", timeout=TIMEOUT_S).text):
        for sample in family.samples:
            if sample.name == "inference_errors_total":
                counts[sample.labels["code"]] = counts.get(sample.labels["code"], 0.0) + sample.value
    return counts


def test_every_failed_call_is_counted_once(stub: service_pb2_grpc.GRPCInferenceServiceStub, v2_server: V2Server) -> None:
    """As over REST: refused before the engine (a token, an unknown model) or by it (too many texts), one count each."""
    before = _errors_total(v2_server)
    text = tensor("text", "BYTES", [1], bytes_contents=[b"a"])
    for request, metadata in (
        (typed_request("sentiment_analysis", text), ()),
        (service_pb2.ModelInferRequest(model_name="no_such_model", inputs=[text]), tuple(token(v2_server).items())),
        (typed_request("sentiment_analysis", tensor("text", "BYTES", [257], bytes_contents=[b"a"] * 257)), tuple(token(v2_server).items())),
    ):
        with pytest.raises(grpc.RpcError):
            stub.ModelInfer(request, metadata=metadata, timeout=TIMEOUT_S)
    after = _errors_total(v2_server)
    added = {code: after.get(code, 0.0) - before.get(code, 0.0) for code in after}
    assert {code: n for code, n in added.items() if n} == {"unauthorized": 1, "model_not_found": 1, "payload_too_large": 1}, added
