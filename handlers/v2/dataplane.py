"""The Open Inference Protocol V2 calls, answered over the engine facade; shared by the REST and
gRPC edges, which only decode requests and encode answers.

Inference goes through ``InferenceEngine.predict`` like the native API: the same rollout (an
unpinned request follows the registry's strategy), cache, batching and limits. Errors are the
engine's (``engine.errors``); each edge maps them with its own table.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import Any

from pydantic import ValidationError

from engine.errors import InvalidInput, ModelNotFound, VersionNotFound
from engine.facade import InferenceEngine
from engine.schemas import ModelInfo, PredictRequest, is_request_id
from handlers.v2.tensors import InferRequest, InferResult, KindSignature, ModelMetadata, signature_of

SERVER_NAME = "ml-inference-system"
EXTENSIONS = ("binary_tensor_data",)
PLATFORM = "onnxruntime_onnx"  # Triton's name for ONNX Runtime models


def _server_version() -> str:
    try:
        return package_version(SERVER_NAME)
    except PackageNotFoundError:
        return "unknown"


class V2DataPlane:
    """Server and model health, model metadata and inference, in the protocol's terms."""

    def __init__(self, engine: InferenceEngine) -> None:
        self._engine = engine
        self._metadata = {"name": SERVER_NAME, "version": _server_version(), "extensions": list(EXTENSIONS)}

    def server_metadata(self) -> dict[str, Any]:
        return dict(self._metadata)

    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        """Every default version loaded and warmed (the native /health/ready)."""
        return self._engine.health().ready

    def _version_info(self, name: str, version: str | None) -> ModelInfo:
        infos = [info for info in self._engine.list_models().models if info.name == name]
        if not infos:
            known = sorted({info.name for info in self._engine.list_models().models})
            raise ModelNotFound(f"unknown model {name!r}; available: {known}")
        chosen = (
            next((i for i in infos if i.default), infos[0]) if version is None else next((i for i in infos if i.version == version), None)
        )
        if chosen is None or chosen.status == "retired":
            servable = sorted(i.version for i in infos if i.status != "retired")
            raise VersionNotFound(
                f"model {name!r} version {version!r} {'is retired' if chosen else 'does not exist'}; servable versions: {servable}"
            )
        return chosen

    def model_ready(self, name: str, version: str | None) -> bool:
        """Whether the version (the default one when None) answers now: loaded, or not in memory
        (evicted, or beyond MODEL_CACHE_SIZE) on a ready server, where it loads on first use.
        An unknown model or version raises ``ModelNotFound``."""
        state = self._version_info(name, version).state
        return state == "ready" or (state == "unloaded" and self.ready())

    async def model_metadata(self, name: str, version: str | None) -> ModelMetadata:
        """The signature of the version (the default one when None); loads it when needed."""
        spec, described, runtime = await self._engine.describe(name, version)
        signature = signature_of(runtime)
        return ModelMetadata(
            name=name,
            versions=[v for v, entry in spec.versions.items() if entry.status != "retired"],
            platform=PLATFORM,
            inputs=[signature.input],
            outputs=list(signature.outputs),
            parameters={"kind": signature.kind, "version": described, "labels": list(signature.labels)},
        )

    async def infer(self, name: str, version: str | None, request: InferRequest, routing_key: str | None = None) -> InferResult:
        """Run the request's input through ``name`` (pinned to ``version``, else as rollout routes it)."""
        # The kind alone decodes the request: no lease here, so rollout and failover stay the engine's,
        # and the version's own checks (feature count, limits) answer in its terms.
        signature = signature_of(self._engine.kind_of(name))
        requested = _requested(signature, request.outputs)
        predict = _predict_request(name, version, request.id, signature.request_field, signature.engine_inputs(request.inputs))
        response = await self._engine.predict(predict, routing_key=routing_key)
        by_name = {tensor.name: tensor for tensor in signature.output_tensors(response.results)}
        return InferResult(
            model_name=response.model,
            model_version=response.model_version,
            id=request.id,
            outputs=[by_name[output] for output in requested],
        )


def _requested(signature: KindSignature, outputs: list[str] | None) -> list[str]:
    if outputs is None:
        return list(signature.output_names)
    unknown = [o for o in outputs if o not in signature.output_names]
    if unknown:
        raise InvalidInput(f"unknown output {unknown[0]!r}; this model's outputs are {list(signature.output_names)}")
    return list(dict.fromkeys(outputs))


def _predict_request(name: str, version: str | None, request_id: str | None, input_field: str, inputs: list[Any]) -> PredictRequest:
    # A V2 id is any string; only one the native API accepts (printable ASCII) keys the engine's request.
    engine_id = request_id if request_id and is_request_id(request_id) else None
    try:
        return PredictRequest.model_validate({"id": engine_id, "model": name, "model_version": version, input_field: inputs})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        raise InvalidInput(f"the request does not fit the model: {where}: {first.get('msg', '')}") from exc
