"""handlers/v2/rest.py: the Open Inference Protocol V2 over REST, against a live ``mlinfer serve``,
with the official client (``tritonclient.http``) and with plain httpx for what the client cannot send."""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from engine.rollout import BUCKETS, routing_bucket
from tests.handlers.v2.conftest import V2Server
from tests.network import SERVER_TOKEN, start_server, stop_server
from tests.registries import V2_MODEL, broken_v2_folder, sentiment, write_registry

TEXTS = ["I love this product! Amazing quality.", "This is terrible", "It arrived on a Tuesday."]
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]


@pytest.fixture(scope="module")
def client(v2_server: V2Server) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(v2_server.http_address, network_timeout=60.0) as http:
        yield http


@pytest.fixture()
def http(v2_server: V2Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=v2_server.http_url, timeout=60.0) as plain:
        yield plain


def native(v2_server: V2Server, model: str, field: str, inputs: list[Any], **extra: Any) -> dict[str, Any]:
    body = {"model": model, "model_version": "v1", field: inputs, **extra}
    reply = httpx.post(f"{v2_server.http_url}/api/v1/predict", json=body, headers=v2_server.headers, timeout=60.0)
    assert reply.status_code == 200, reply.text
    answer: dict[str, Any] = reply.json()
    return answer


def text_input(texts: list[str], binary: bool, shape: list[int] | None = None) -> triton.InferInput:
    tensor = triton.InferInput("text", shape or [len(texts)], "BYTES")
    array = np.array([t.encode() for t in texts], dtype=np.object_).reshape(shape or [len(texts)])
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def labels_of(result: triton.InferResult) -> list[str]:
    # The client gives BYTES as bytes from binary data, as str from JSON data.
    return [label.decode() if isinstance(label, bytes) else label for label in result.as_numpy("label")]


def assert_v2_error(reply: httpx.Response, status: int, *fragments: str) -> None:
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert set(body) == {"error"} and isinstance(body["error"], str), body
    for fragment in fragments:
        assert fragment in body["error"], body


# -- health and metadata ----------------------------------------------------------------------


def test_v2_health_ready_answers_200(v2_server: V2Server) -> None:
    reply = httpx.get(f"{v2_server.http_url}/v2/health/ready")
    assert reply.status_code == 200 and reply.json() == {"ready": True}


def test_server_health_and_metadata_with_the_official_client(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    metadata = client.get_server_metadata()
    assert metadata["name"] == "ml-inference-system"
    assert "binary_tensor_data" in metadata["extensions"]


@pytest.mark.parametrize(
    ("model", "versions", "inputs", "outputs"),
    [
        (
            "sentiment_analysis",
            ["v1", "v2", "v3", "v4"],
            [("text", "BYTES", [-1])],
            [("label", "BYTES", [-1]), ("probabilities", "FP32", [-1, 3])],
        ),
        ("iris", ["v1"], [("features", "FP32", [-1, 4])], [("label", "BYTES", [-1]), ("probabilities", "FP32", [-1, 3])]),
        ("sentence_embedding", ["v1"], [("text", "BYTES", [-1])], [("embedding", "FP32", [-1, 384])]),
    ],
)
def test_model_ready_and_metadata(
    client: triton.InferenceServerClient,
    v2_server: V2Server,
    model: str,
    versions: list[str],
    inputs: list[tuple[str, str, list[int]]],
    outputs: list[tuple[str, str, list[int]]],
) -> None:
    assert client.is_model_ready(model)
    assert client.is_model_ready(model, "v1")
    for metadata in (client.get_model_metadata(model), client.get_model_metadata(model, "v1")):
        assert metadata["name"] == model
        assert metadata["versions"] == versions
        assert metadata["platform"] == "onnxruntime_onnx"
        assert [(t["name"], t["datatype"], t["shape"]) for t in metadata["inputs"]] == inputs
        assert [(t["name"], t["datatype"], t["shape"]) for t in metadata["outputs"]] == outputs
    listed = httpx.get(f"{v2_server.http_url}/api/v1/models").json()["models"]
    labels = next(m["labels"] for m in listed if m["name"] == model and m["version"] == "v1")
    assert client.get_model_metadata(model, "v1")["parameters"]["labels"] == labels


def test_an_unknown_model_or_version_is_404_and_not_ready(client: triton.InferenceServerClient, http: httpx.Client) -> None:
    assert not client.is_model_ready("no_such_model")
    assert not client.is_model_ready("iris", "v9")
    assert_v2_error(http.get("/v2/models/no_such_model"), 404, "no_such_model")
    assert_v2_error(http.get("/v2/models/iris/versions/v9"), 404, "v9")
    assert_v2_error(http.get("/v2/models/iris/versions/v9/ready"), 404, "v9")
    with pytest.raises(InferenceServerException) as raised:
        client.get_model_metadata("no_such_model")
    assert raised.value.status() == "404" and "no_such_model" in raised.value.message()


def test_a_server_whose_default_version_failed_is_live_but_not_ready(tmp_path: Path) -> None:
    broken = broken_v2_folder(tmp_path) / "model.onnx"
    registry = write_registry(tmp_path, {"sentiment_analysis": sentiment({"v1": {"path": str(broken)}, "v2": {"path": V2_MODEL}})})
    process, base_url = start_server(tmp_path / "server.log", ready_path="/health/live", MODEL_REGISTRY_PATH=str(registry))
    try:
        with triton.InferenceServerClient(base_url.removeprefix("http://")) as client:
            assert client.is_server_live() and not client.is_server_ready()
            assert not client.is_model_ready("sentiment_analysis") and not client.is_model_ready("sentiment_analysis", "v1")
            assert client.is_model_ready("sentiment_analysis", "v2")
        ready = httpx.get(f"{base_url}/v2/health/ready")
        assert ready.status_code == 400 and ready.json() == {"ready": False}
        assert_v2_error(httpx.get(f"{base_url}/v2/models/sentiment_analysis/versions/v1"), 503, "failed to load")
        body = _text(["still served by v2"])
        headers = {"X-Token": SERVER_TOKEN}
        failed = httpx.post(f"{base_url}/v2/models/sentiment_analysis/versions/v1/infer", json=body, headers=headers)
        assert_v2_error(failed, 503, "failed to load")
        assert failed.headers["retry-after"] == "1"
        served = httpx.post(f"{base_url}/v2/models/sentiment_analysis/versions/v2/infer", json=body, headers=headers)
        assert served.status_code == 200 and served.json()["model_version"] == "v2"
    finally:
        stop_server(process)


# -- inference: one test per model kind, JSON and binary, equal to the native API ---------------


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_text_classification_equals_the_native_api(client: triton.InferenceServerClient, v2_server: V2Server, binary: bool) -> None:
    outputs = [triton.InferRequestedOutput(name, binary_data=binary) for name in ("label", "probabilities")]
    result = client.infer(
        "sentiment_analysis",
        [text_input(TEXTS, binary)],
        model_version="v1",
        outputs=outputs,
        request_id="v2-text",
        headers=v2_server.headers,
    )
    response = result.get_response()
    assert response["model_name"] == "sentiment_analysis" and response["model_version"] == "v1" and response["id"] == "v2-text"
    assert all(("parameters" in o) is binary for o in response["outputs"])

    expected = native(v2_server, "sentiment_analysis", "texts", TEXTS)["results"]
    labels = list(expected[0]["scores"])
    assert labels_of(result) == [r["prediction"] for r in expected]
    probabilities = result.as_numpy("probabilities")
    assert probabilities.dtype == np.float32 and probabilities.shape == (len(TEXTS), len(labels))
    np.testing.assert_allclose(probabilities, [[r["scores"][label] for label in labels] for r in expected], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("shape", [[3], [3, 1]], ids=["N", "N,1"])
def test_texts_may_be_n_or_n_by_1(client: triton.InferenceServerClient, v2_server: V2Server, shape: list[int]) -> None:
    result = client.infer("sentiment_analysis", [text_input(TEXTS, True, shape)], model_version="v1", headers=v2_server.headers)
    assert result.as_numpy("label").shape == (3,)
    assert result.as_numpy("probabilities").shape == (3, 3)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("datatype", ["FP32", "FP64"])
def test_tabular_equals_the_native_api(client: triton.InferenceServerClient, v2_server: V2Server, binary: bool, datatype: str) -> None:
    features = triton.InferInput("features", [len(ROWS), 4], datatype)
    features.set_data_from_numpy(np.array(ROWS, dtype=np.float32 if datatype == "FP32" else np.float64), binary_data=binary)
    result = client.infer(
        "iris",
        [features],
        model_version="v1",
        outputs=[triton.InferRequestedOutput(n, binary_data=binary) for n in ("label", "probabilities")],
        headers=v2_server.headers,
    )
    assert result.get_response()["model_version"] == "v1"
    expected = native(v2_server, "iris", "instances", ROWS)["results"]
    labels = client.get_model_metadata("iris", "v1")["parameters"]["labels"]
    assert labels_of(result) == [r["prediction"] for r in expected]
    np.testing.assert_allclose(
        result.as_numpy("probabilities"), [[r["scores"][label] for label in labels] for r in expected], rtol=1e-6, atol=1e-7
    )


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_text_embedding_equals_the_native_api(client: triton.InferenceServerClient, v2_server: V2Server, binary: bool) -> None:
    result = client.infer(
        "sentence_embedding",
        [text_input(TEXTS, binary)],
        model_version="v1",
        outputs=[triton.InferRequestedOutput("embedding", binary_data=binary)],
        headers=v2_server.headers,
    )
    embedding = result.as_numpy("embedding")
    assert embedding.dtype == np.float32 and embedding.shape == (len(TEXTS), 384)
    expected = native(v2_server, "sentence_embedding", "texts", TEXTS)["results"]
    np.testing.assert_allclose(embedding, [r["embedding"] for r in expected], rtol=1e-5, atol=1e-6)


def test_no_outputs_requested_means_all_of_them_in_binary(client: triton.InferenceServerClient, v2_server: V2Server) -> None:
    # The client then sets parameters.binary_data_output: every output comes back as binary data.
    result = client.infer("sentiment_analysis", [text_input(TEXTS[:1], False)], model_version="v1", headers=v2_server.headers)
    outputs = result.get_response()["outputs"]
    assert [o["name"] for o in outputs] == ["label", "probabilities"]
    assert all(o["parameters"]["binary_data_size"] > 0 for o in outputs)


def test_a_gzip_request_is_decoded_and_deflate_is_415(client: triton.InferenceServerClient, v2_server: V2Server) -> None:
    inputs = [text_input(TEXTS[:2], True)]
    plain = client.infer("sentiment_analysis", inputs, model_version="v1", headers=v2_server.headers)
    gzipped = client.infer(
        "sentiment_analysis", inputs, model_version="v1", headers=v2_server.headers, request_compression_algorithm="gzip"
    )
    assert labels_of(gzipped) == labels_of(plain)
    with pytest.raises(InferenceServerException) as raised:
        client.infer("sentiment_analysis", inputs, model_version="v1", headers=v2_server.headers, request_compression_algorithm="deflate")
    assert raised.value.status() == "415" and "gzip" in raised.value.message()


def test_requested_outputs_filter_the_answer(http: httpx.Client, v2_server: V2Server) -> None:
    body = {
        "id": "only-probabilities",
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [TEXTS[0]]}],
        "outputs": [{"name": "probabilities"}],
    }
    reply = http.post("/v2/models/sentiment_analysis/versions/v1/infer", json=body, headers=v2_server.headers)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("application/json") and "inference-header-content-length" not in reply.headers
    answer = reply.json()
    assert answer["id"] == "only-probabilities" and [o["name"] for o in answer["outputs"]] == ["probabilities"]
    assert answer["outputs"][0]["shape"] == [1, 3] and len(answer["outputs"][0]["data"]) == 3


def test_an_unpinned_request_follows_the_canary_like_the_native_api(http: httpx.Client, v2_server: V2Server) -> None:
    # The registry sends 10% of routing keys to v3: find a key that goes there and one that does not.
    canary_key = next(f"k{i}" for i in range(10_000) if routing_bucket("sentiment_analysis", f"k{i}") < BUCKETS // 10)
    stable_key = next(f"k{i}" for i in range(10_000) if routing_bucket("sentiment_analysis", f"k{i}") >= BUCKETS // 10)
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [TEXTS[1]]}]}
    for key, version in ((canary_key, "v3"), (stable_key, "v1")):
        headers = {**v2_server.headers, "X-Routing-Key": key}
        reply = http.post("/v2/models/sentiment_analysis/infer", json=body, headers=headers)
        assert reply.status_code == 200, reply.text
        assert reply.json()["model_version"] == version
        native_reply = http.post("/api/v1/predict", json={"texts": [TEXTS[1]]}, headers=headers)
        assert native_reply.json()["model_version"] == version


def test_the_body_is_parsed_whatever_the_content_type(http: httpx.Client, v2_server: V2Server) -> None:
    body = json.dumps({"inputs": [{"name": "features", "datatype": "FP64", "shape": [1, 4], "data": [ROWS[0]]}]})
    for content_type in ("application/x-www-form-urlencoded", "text/plain", "application/octet-stream"):
        reply = http.post("/v2/models/iris/infer", content=body, headers={**v2_server.headers, "Content-Type": content_type})
        assert reply.status_code == 200, reply.text
        assert reply.json()["outputs"][0]["data"] == [native(v2_server, "iris", "instances", ROWS[:1])["results"][0]["prediction"]]


def test_bearer_token_is_accepted(http: httpx.Client, v2_server: V2Server) -> None:
    body = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 4], "data": ROWS[0]}]}
    reply = http.post("/v2/models/iris/infer", json=body, headers={"Authorization": f"Bearer {v2_server.token}"})
    assert reply.status_code == 200, reply.text


# -- errors -----------------------------------------------------------------------------------


def _binary_body(header: dict[str, Any], raw: bytes, declared: int | None = None) -> tuple[bytes, dict[str, str]]:
    encoded = json.dumps(header).encode()
    return encoded + raw, {"Inference-Header-Content-Length": str(len(encoded) if declared is None else declared)}


def _bytes_raw(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


TEXT_URL = "/v2/models/sentiment_analysis/versions/v1/infer"
IRIS_URL = "/v2/models/iris/versions/v1/infer"


def _text(data: list[Any], shape: list[int] | None = None, datatype: str = "BYTES", name: str = "text") -> dict[str, Any]:
    return {"inputs": [{"name": name, "datatype": datatype, "shape": shape if shape is not None else [len(data)], "data": data}]}


@pytest.mark.parametrize(
    ("url", "body", "fragments"),
    [
        (TEXT_URL, _text([1.0], datatype="FP32"), ("FP32", "BYTES")),
        (TEXT_URL, _text(["a"], datatype="STRING"), ("unsupported datatype",)),
        (IRIS_URL, {"inputs": [{"name": "features", "datatype": "BYTES", "shape": [1, 4], "data": ["a", "b", "c", "d"]}]}, ("BYTES",)),
        (IRIS_URL, {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3]}]}, ("3 elements",)),
        (
            IRIS_URL,
            {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]},
            ("expected 4 features, got 3",),
        ),
        (IRIS_URL, {"inputs": [{"name": "features", "datatype": "INT64", "shape": [1, 4], "data": [1, 2, 3.5, 4]}]}, ("integer",)),
        (IRIS_URL, {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 1e300]}]}, ("range",)),
        (TEXT_URL, _text(["a", "b", "c", "d"], shape=[2, 2]), ("[N] or [N, 1]",)),
        (TEXT_URL, _text(["a"], shape=[-1]), ("non-negative",)),
        (TEXT_URL, _text([], shape=[0]), ("at least one",)),
        (TEXT_URL, _text(["a"], name="texts"), ("unknown input 'texts'",)),
        (TEXT_URL, {**_text(["a"]), "outputs": [{"name": "logits"}]}, ("unknown output 'logits'",)),
        (TEXT_URL, {"inputs": []}, ("inputs",)),
        (TEXT_URL, {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1]}]}, ("neither 'data'",)),
        (TEXT_URL, {**_text(["a"]), "id": 7}, ("'id'",)),
    ],
)
def test_bad_tensors_are_400(http: httpx.Client, v2_server: V2Server, url: str, body: dict[str, Any], fragments: tuple[str, ...]) -> None:
    assert_v2_error(http.post(url, json=body, headers=v2_server.headers), 400, *fragments)


@pytest.mark.parametrize(
    ("raw", "size", "declared", "fragment"),
    [
        (_bytes_raw(b"ok"), 100, None, "declares 100 bytes"),  # binary_data_size past the end
        (_bytes_raw(b"ok") + b"extra", 6, None, "add up"),  # bytes left over
        (struct.pack("<I", 50) + b"short", 9, None, "declares 50 bytes"),  # a BYTES length past the end
        (b"\x01\x00", 2, None, "inside the length"),
        (_bytes_raw(b"ok", b"no"), 12, None, "2 elements"),  # more elements than the shape
        (_bytes_raw(b"\xff\xfe"), 6, None, "UTF-8"),
        (_bytes_raw(b"ok"), 6, 10_000, "Inference-Header-Content-Length"),  # header longer than the body
        (_bytes_raw(b"ok"), 6, 3, "not JSON"),  # header cut in the middle of the JSON
    ],
)
def test_malformed_binary_is_400(
    http: httpx.Client, v2_server: V2Server, raw: bytes, size: int, declared: int | None, fragment: str
) -> None:
    header = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": size}}]}
    body, headers = _binary_body(header, raw, declared)
    assert_v2_error(http.post(TEXT_URL, content=body, headers={**v2_server.headers, **headers}), 400, fragment)


def test_numeric_binary_of_the_wrong_size_is_400(http: httpx.Client, v2_server: V2Server) -> None:
    raw = np.zeros(3, dtype=np.float32).tobytes()
    header = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 4], "parameters": {"binary_data_size": len(raw)}}]}
    body, headers = _binary_body(header, raw)
    assert_v2_error(http.post(IRIS_URL, content=body, headers={**v2_server.headers, **headers}), 400, "12 bytes", "16 bytes")


def test_not_json_is_400(http: httpx.Client, v2_server: V2Server) -> None:
    assert_v2_error(http.post(TEXT_URL, content=b"{not json", headers=v2_server.headers), 400, "not JSON")
    assert_v2_error(http.post(TEXT_URL, content=b"[1, 2]", headers=v2_server.headers), 400, "JSON object")


def test_unknown_model_or_version_infer_is_404(http: httpx.Client, v2_server: V2Server) -> None:
    body = _text(["a"])
    assert_v2_error(http.post("/v2/models/no_such_model/infer", json=body, headers=v2_server.headers), 404, "no_such_model")
    assert_v2_error(http.post("/v2/models/sentiment_analysis/versions/v9/infer", json=body, headers=v2_server.headers), 404, "v9")


def test_no_token_is_401_before_the_body_is_read(http: httpx.Client, v2_server: V2Server) -> None:
    for url in (TEXT_URL, "/v2/models/sentiment_analysis/infer"):
        reply = http.post(url, json=_text(["a"]))
        assert_v2_error(reply, 401, "X-Token")
        assert reply.headers["connection"] == "close"  # refused by the body middleware, on the headers alone
        assert_v2_error(http.post(url, json=_text(["a"]), headers={"X-Token": "wrong"}), 401)


def test_health_and_metadata_need_no_token(http: httpx.Client) -> None:
    for path in ("/v2", "/v2/health/live", "/v2/health/ready", "/v2/models/iris", "/v2/models/iris/ready", "/v2/models/iris/versions/v1"):
        assert http.get(path).status_code == 200, path


def test_too_large_is_413(http: httpx.Client, v2_server: V2Server) -> None:
    # More texts than MAX_TEXTS_PER_REQUEST (256), a text over MAX_TEXT_CHARS (10000), a body over MAX_BODY_BYTES (4 MiB).
    assert_v2_error(http.post(TEXT_URL, json=_text(["a"] * 257), headers=v2_server.headers), 413, "MAX_TEXTS_PER_REQUEST")
    assert_v2_error(http.post(TEXT_URL, json=_text(["a" * 10_001]), headers=v2_server.headers), 413, "MAX_TEXT_CHARS")
    big = b"x" * (4 * 1024 * 1024 + 1)
    body, headers = _binary_body(
        {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 5}}]}, big
    )
    assert_v2_error(http.post(TEXT_URL, content=body, headers={**v2_server.headers, **headers}), 413, "MAX_BODY_BYTES")


def test_the_official_client_surfaces_the_error_message(client: triton.InferenceServerClient, v2_server: V2Server) -> None:
    features = triton.InferInput("features", [1, 3], "FP32")
    features.set_data_from_numpy(np.zeros((1, 3), dtype=np.float32))
    with pytest.raises(InferenceServerException) as raised:
        client.infer("iris", [features], headers=v2_server.headers)
    assert raised.value.status() == "400" and "input 0: expected 4 features, got 3" in raised.value.message()


def test_unknown_v2_routes_have_the_v2_error_shape_and_native_ones_keep_theirs(http: httpx.Client) -> None:
    assert_v2_error(http.get("/v2/no/such/route"), 404)
    native_error = http.get("/api/v1/no_such_route").json()
    assert set(native_error["error"]) >= {"code", "message"}


def _errors_total(http: httpx.Client) -> dict[str, float]:
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(http.get("/metrics").text):
        if family.name == "inference_errors":
            for sample in family.samples:
                if sample.name == "inference_errors_total":
                    counts[sample.labels["code"]] = counts.get(sample.labels["code"], 0.0) + sample.value
    return counts


def test_every_failed_inference_is_counted_once(http: httpx.Client, v2_server: V2Server) -> None:
    """Refused before the engine (a token, a tensor, an unknown model) or by it (too many texts):
    each failed V2 inference adds exactly one to inference_errors_total{code}, as a native one does."""
    before = _errors_total(http)
    assert http.post(TEXT_URL, json=_text(["a"])).status_code == 401
    assert http.post(TEXT_URL, json=_text([1, 2], datatype="FP32"), headers=v2_server.headers).status_code == 400
    assert http.post("/v2/models/no_such_model/infer", json=_text(["a"]), headers=v2_server.headers).status_code == 404
    assert http.post(TEXT_URL, json=_text(["a"] * 257), headers=v2_server.headers).status_code == 413
    after = _errors_total(http)
    added = {code: after.get(code, 0.0) - before.get(code, 0.0) for code in after}
    assert {code: n for code, n in added.items() if n} == {
        "unauthorized": 1,
        "invalid_input": 1,
        "model_not_found": 1,
        "payload_too_large": 1,
    }, added


def test_no_v2_request_made_the_server_fail(v2_server: V2Server) -> None:
    # Runs last in this module: no request above was answered with a 5xx other than a 503, or logged a traceback.
    log = v2_server.log_path.read_text()
    failed = re.findall(r"^.* handlers\.access: \S+ \S+ 5(?!03)\d\d .*$", log, flags=re.MULTILINE)
    assert "Traceback" not in log and not failed, failed or log[-4000:]
    assert "handlers.access: POST /v2/models/" in log, "the access log is on (LOG_LEVEL=INFO): the check above sees every reply"
