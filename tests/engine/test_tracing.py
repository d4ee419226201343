"""engine/tracing.py: the span tree of a request (OpenTelemetry's in-memory exporter over the real
app and engine), traceparent in and out, nothing when tracing is off, the tokenize/run split,
and a real ``mlinfer serve`` exporting over OTLP/HTTP to a loopback receiver."""

from __future__ import annotations

import asyncio
import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest, ExportTraceServiceResponse
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from tritonclient.grpc import service_pb2, service_pb2_grpc  # its own copy of the messages: the server's are not imported here

from engine import tracing
from engine.facade import InferenceEngine
from engine.settings import Settings
from handlers.app import create_app
from tests.conftest import MODELS_DIR, REPO_ROOT, make_settings, require_models
from tests.network import SERVER_TOKEN, free_port, start_server, stop_server
from tests.registries import engine_for, sentiment, write_registry

TOKEN = "secret-token"  # make_settings' default AUTH_TOKEN
CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
GRPC_CALLER_TRACE = "5bf92f3577b34da6a3ce929d0e0e4736"
GRPC_TRACEPARENT = f"00-{GRPC_CALLER_TRACE}-00f067aa0ba902b7-01"
IRIS = MODELS_DIR / "iris_v1" / "model.onnx"
BATCH_PHASES = ("queue_wait", "tokenize", "inference")


@pytest.fixture()
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    try:
        yield exporter
    finally:
        tracing.uninstall()


def _registry(folder: Path) -> Path:
    require_models()
    require_models(IRIS)
    iris = {"kind": "tabular", "default_version": "v1", "versions": {"v1": {"path": str(IRIS), "status": "active"}}}
    return write_registry(folder, {"sentiment_analysis": sentiment(rollout={"type": "shadow", "target_version": "v2"}), "iris": iris})


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InferenceEngine]:
    """sentiment_analysis v1 with v2 as its shadow (inline: done before the reply), and iris."""
    with engine_for(_registry(tmp_path_factory.mktemp("tracing")), shadow_mode="inline") as built:
        yield built


def _post(engine: InferenceEngine, path: str, body: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
    app = create_app(make_settings(model_registry_path=engine.settings.model_registry_path), engine, manage_engine=False)

    async def send() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            return await client.post(path, json=body, headers={"X-Token": TOKEN, **headers})

    return asyncio.run(send())


def _hex(value: int, digits: int) -> str:
    return format(value, f"0{digits}x")


def _children(spans: list[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    return [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]


def _one(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


def _names(spans: list[ReadableSpan]) -> list[str]:
    return sorted(s.name for s in spans)


def _assert_batch_phases(children: list[ReadableSpan], size: int) -> None:
    phases = {s.name: s for s in children if s.name in BATCH_PHASES}
    assert set(phases) == set(BATCH_PHASES), _names(children)
    for phase in phases.values():
        assert phase.attributes is not None and phase.attributes["batch.size"] == size
        assert phase.start_time is not None and phase.end_time is not None and phase.start_time <= phase.end_time
    # Drawn from one job's instants: queued, then tokenised, then run, end to end.
    assert phases["queue_wait"].end_time == phases["tokenize"].start_time
    assert phases["tokenize"].end_time == phases["inference"].start_time


def test_a_prediction_is_one_tree_under_the_callers_trace(engine: InferenceEngine, spans: InMemorySpanExporter) -> None:
    texts = ["a warm and funny film", "a dull and tired one"]
    reply = _post(engine, "/api/v1/predict", {"texts": texts}, {"traceparent": TRACEPARENT, "X-Request-ID": "trace-1"})
    assert reply.status_code == 200, reply.text
    finished = list(spans.get_finished_spans())
    assert {_hex(s.context.trace_id, 32) for s in finished} == {CALLER_TRACE}, "every span is in the caller's trace"

    server = _one(finished, "POST /api/v1/predict")
    assert server.kind == SpanKind.SERVER
    assert server.parent is not None and _hex(server.parent.span_id, 16) == CALLER_SPAN and server.parent.is_remote
    assert server.attributes is not None and server.attributes["http.response.status_code"] == 200
    assert server.attributes["request.id"] == "trace-1"
    # The reply continues the trace from the server span.
    assert reply.headers["traceparent"] == f"00-{CALLER_TRACE}-{_hex(server.context.span_id, 16)}-01"

    (predict,) = _children(finished, server)
    assert predict.name == "predict"
    assert predict.attributes is not None
    assert {k: predict.attributes[k] for k in ("model.name", "model.version", "rollout.arm", "inputs.count", "cache.hits")} == {
        "model.name": "sentiment_analysis",
        "model.version": "v1",
        "rollout.arm": "v1",
        "inputs.count": 2,
        "cache.hits": 0,
    }
    under_predict = _children(finished, predict)
    assert _names(under_predict) == sorted(["cache.lookup", *BATCH_PHASES, "shadow"])
    _assert_batch_phases(under_predict, size=2)
    lookup = _one(under_predict, "cache.lookup")
    assert lookup.attributes is not None and lookup.attributes["inputs.count"] == 2 and lookup.attributes["cache.found"] == 0

    shadow = _one(under_predict, "shadow")
    assert shadow.attributes is not None and shadow.attributes["model.version"] == "v2" and shadow.attributes["shadow.agreed"] == 2
    under_shadow = _children(finished, shadow)
    assert _names(under_shadow) == sorted(["cache.lookup", *BATCH_PHASES])
    _assert_batch_phases(under_shadow, size=2)
    assert all(s.status.status_code == StatusCode.UNSET for s in finished)


def test_a_cached_answer_has_a_lookup_and_no_batch(engine: InferenceEngine, spans: InMemorySpanExporter) -> None:
    body = {"texts": ["cached twice, a lovely score"], "model_version": "v1"}  # pinned: no shadow
    assert _post(engine, "/api/v1/predict", body, {}).status_code == 200
    spans.clear()
    assert _post(engine, "/api/v1/predict", body, {}).status_code == 200
    finished = list(spans.get_finished_spans())
    predict = _one(finished, "predict")
    assert predict.attributes is not None and predict.attributes["cache.hits"] == 1
    assert _names(_children(finished, predict)) == ["cache.lookup"]
    server = _one(finished, "POST /api/v1/predict")
    assert server.parent is None, "no traceparent in: the server span is a root"


def test_a_tabular_batch_has_no_tokenize_span(engine: InferenceEngine, spans: InMemorySpanExporter) -> None:
    reply = _post(engine, "/api/v1/predict", {"model": "iris", "instances": [[5.1, 3.5, 1.4, 0.2]]}, {})
    assert reply.status_code == 200, reply.text
    finished = list(spans.get_finished_spans())
    predict = _one(finished, "predict")
    assert _names(_children(finished, predict)) == ["cache.lookup", "inference", "queue_wait"]


def test_errors_set_the_span_status(engine: InferenceEngine, spans: InMemorySpanExporter) -> None:
    reply = _post(engine, "/api/v1/predict", {"model": "iris", "texts": ["not rows"]}, {})
    assert reply.status_code == 422, reply.text
    finished = list(spans.get_finished_spans())
    predict = _one(finished, "predict")
    assert predict.status.status_code == StatusCode.ERROR
    assert [event.name for event in predict.events] == ["exception"]
    server = _one(finished, "POST /api/v1/predict")
    assert server.status.status_code == StatusCode.UNSET, "a 4xx is the client's error (OpenTelemetry's HTTP conventions)"
    assert server.attributes is not None and server.attributes["http.response.status_code"] == 422

    spans.clear()
    assert _post(engine, "/api/v1/predict/nowhere", {}, {}).status_code == 404
    (unmatched,) = spans.get_finished_spans()
    assert unmatched.name == "POST", "an unmatched path is user input: not in the span name"


def test_tracing_off_leaves_no_spans_and_no_traceparent(engine: InferenceEngine) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))  # a provider nobody installed
    assert not tracing.enabled()
    reply = _post(engine, "/api/v1/predict", {"texts": ["untraced"]}, {"traceparent": TRACEPARENT})
    assert reply.status_code == 200
    assert "traceparent" not in reply.headers
    assert exporter.get_finished_spans() == ()
    with tracing.span("anything") as span:
        assert not span.is_recording()


def _phase_count(engine: InferenceEngine, model: str, phase: str) -> float:
    labels = {"model": model, "model_version": "v1", "phase": phase}
    return engine.metrics.registry.get_sample_value("inference_batch_phase_ms_count", labels) or 0.0


def test_batches_report_their_tokenize_and_run_phases(engine: InferenceEngine) -> None:
    before = {(m, p): _phase_count(engine, m, p) for m in ("sentiment_analysis", "iris") for p in ("tokenize", "run")}
    assert _post(engine, "/api/v1/predict", {"texts": ["phases of one batch"], "model_version": "v1"}, {}).status_code == 200
    assert _post(engine, "/api/v1/predict", {"model": "iris", "instances": [[6.7, 3.0, 5.2, 2.3]]}, {}).status_code == 200
    assert _phase_count(engine, "sentiment_analysis", "tokenize") == before[("sentiment_analysis", "tokenize")] + 1
    assert _phase_count(engine, "sentiment_analysis", "run") == before[("sentiment_analysis", "run")] + 1
    assert _phase_count(engine, "iris", "run") == before[("iris", "run")] + 1
    assert (
        engine.metrics.registry.get_sample_value(
            "inference_batch_phase_ms_count", {"model": "iris", "model_version": "v1", "phase": "tokenize"}
        )
        is None
    )
    tokenize_ms = engine.metrics.registry.get_sample_value(
        "inference_batch_phase_ms_sum", {"model": "sentiment_analysis", "model_version": "v1", "phase": "tokenize"}
    )
    assert tokenize_ms is not None and tokenize_ms > 0


# -- set-up: the SDK missing, and a real server exporting over OTLP/HTTP ----------------------------


def test_tracing_without_the_sdk_refuses_to_start_and_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)  # what an install without the extra imports
    with pytest.raises(tracing.TracingUnavailable, match=r"pip install 'ml-inference-system\[server\]'"):
        tracing.configure(make_settings(enable_tracing=True))
    assert not tracing.enabled()
    assert tracing.configure(make_settings(enable_tracing=False)) is False


def test_mlinfer_serve_without_the_sdk_exits_with_the_install_hint() -> None:
    # The API comes with FastAPI; the SDK and the exporter come with the server extra.
    missing = "sys.modules['opentelemetry.sdk'] = sys.modules['opentelemetry.exporter'] = None"
    code = f"import sys; {missing}; from handlers.cli import main; sys.exit(main(['serve', '--workers', '1']))"
    env = {**os.environ, "ENABLE_TRACING": "true", "MODEL_REGISTRY_PATH": str(REPO_ROOT / "model_registry.yaml")}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert "pip install 'ml-inference-system[server]'" in done.stderr


class _Receiver(http.server.BaseHTTPRequestHandler):
    """An OTLP/HTTP trace receiver: POST /v1/traces with a protobuf ExportTraceServiceRequest."""

    received: list[tuple[str, ExportTraceServiceRequest]] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        self.received.append((self.path, request))
        reply = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture()
def receiver() -> Iterator[tuple[str, list[tuple[str, ExportTraceServiceRequest]]]]:
    received: list[tuple[str, ExportTraceServiceRequest]] = []
    handler = type("Receiver", (_Receiver,), {"received": received})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


def test_a_server_exports_its_spans_over_otlp_and_flushes_them_on_exit(
    tmp_path: Path, receiver: tuple[str, list[tuple[str, ExportTraceServiceRequest]]]
) -> None:
    endpoint, received = receiver
    registry = write_registry(tmp_path, {"sentiment_analysis": sentiment()})
    grpc_port = free_port()
    process, base_url = start_server(
        tmp_path / "server.log",
        "--workers",
        "1",
        MODEL_REGISTRY_PATH=str(registry),
        GRPC_PORT=str(grpc_port),
        ENABLE_TRACING="true",
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        OTEL_SERVICE_NAME="traced-test",
        OTEL_BSP_SCHEDULE_DELAY="60000",  # nothing is sent before the exit: the flush on exit sends it
    )
    try:
        reply = httpx.post(
            f"{base_url}/api/v1/predict", json={"texts": ["exported"]}, headers={"X-Token": SERVER_TOKEN, "traceparent": TRACEPARENT}
        )
        assert reply.status_code == 200, reply.text
        assert reply.headers["traceparent"].startswith(f"00-{CALLER_TRACE}-")
        # A gRPC call is traced the same way, from its traceparent metadata (tritonclient's own messages).
        text = service_pb2.ModelInferRequest.InferInputTensor(name="text", datatype="BYTES", shape=[1])
        text.contents.bytes_contents.append(b"exported over gRPC")
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            _, call = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer.with_call(
                service_pb2.ModelInferRequest(model_name="sentiment_analysis", inputs=[text]),
                metadata=(("x-token", SERVER_TOKEN), ("traceparent", GRPC_TRACEPARENT)),
                timeout=30,
            )
        assert dict(call.initial_metadata())["traceparent"].startswith(f"00-{GRPC_CALLER_TRACE}-")
    finally:
        stop_server(process)
    assert process.returncode == 0
    assert received, (tmp_path / "server.log").read_text()[-3000:]
    assert {path for path, _ in received} == {"/v1/traces"}
    exported: list[tuple[str, str, str]] = []  # (service, trace id, span name)
    for _, request in received:
        for resource_spans in request.resource_spans:
            service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}["service.name"]
            for scope_spans in resource_spans.scope_spans:
                exported += [(service, span.trace_id.hex(), span.name) for span in scope_spans.spans]
    assert {service for service, _, _ in exported} == {"traced-test"}
    in_callers_trace = {name for _, trace, name in exported if trace == CALLER_TRACE}
    assert in_callers_trace == {"POST /api/v1/predict", "predict", "cache.lookup", *BATCH_PHASES}, exported
    assert "GET /health" in {name for _, _, name in exported}, "the readiness polls are traces of their own"
    in_grpc_trace = {name for _, trace, name in exported if trace == GRPC_CALLER_TRACE}
    assert in_grpc_trace == {"inference.GRPCInferenceService/ModelInfer", "predict", "cache.lookup", *BATCH_PHASES}, exported


def test_the_service_name_defaults_to_the_service(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    try:
        assert tracing.configure(Settings.from_values({"enable_tracing": True}))
        provider = tracing._state.provider
        assert provider is not None and provider.resource.attributes["service.name"] == "ml-inference-system"
    finally:
        tracing.uninstall()
