"""The Open Inference Protocol's gRPC service (``grpc_predict_v2.proto``) and its Python modules.

The modules beside the .proto are generated and shipped, so that the image needs only grpcio and
protobuf at run time. After an edit of the .proto, regenerate them (grpcio-tools, the ``dev`` extra):

    python -c "from handlers.v2.proto import generate; generate()"

``tests/handlers/v2/test_proto.py`` fails when the shipped modules differ from what this makes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent
PROTO = "grpc_predict_v2.proto"
GENERATED = ("grpc_predict_v2_pb2.py", "grpc_predict_v2_pb2.pyi", "grpc_predict_v2_pb2_grpc.py")
# protoc writes a top-level import into the service module; the package imports it from here.
_PROTOC_IMPORT = "import grpc_predict_v2_pb2 as grpc__predict__v2__pb2"
_PACKAGE_IMPORT = "from handlers.v2.proto import grpc_predict_v2_pb2 as grpc__predict__v2__pb2"


def generate(out_dir: Path = PROTO_DIR) -> None:
    """Compile the .proto into ``out_dir`` with grpcio-tools: messages, type stubs and the service."""
    out = str(out_dir)
    command = [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_DIR}", f"--python_out={out}", f"--pyi_out={out}"]
    subprocess.run([*command, f"--grpc_python_out={out}", PROTO], cwd=PROTO_DIR, check=True)
    service = out_dir / "grpc_predict_v2_pb2_grpc.py"
    text = service.read_text()
    if _PROTOC_IMPORT not in text:
        raise RuntimeError(f"grpc_tools.protoc no longer writes {_PROTOC_IMPORT!r} into {service.name}: update handlers/v2/proto")
    service.write_text(text.replace(_PROTOC_IMPORT, _PACKAGE_IMPORT))
