"""handlers/v2/proto/: the shipped modules are what grpc_tools makes of the .proto, and the .proto
is the protocol's: every message, field and call tritonclient's own compiled copy knows by the
same name has the same number and type, so the official client interoperates.

The shipped ``grpc_predict_v2_pb2`` is never imported here: it defines the same ``inference.*``
messages as ``tritonclient.grpc.service_pb2``, and protobuf's default pool refuses a second
definition. The .proto is read through protoc's descriptor set instead.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2

from handlers.v2.proto import GENERATED, PROTO, PROTO_DIR, generate

CALLS = ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer")


def test_shipped_modules_are_what_protoc_makes_of_the_proto(tmp_path: Path) -> None:
    generate(tmp_path)
    for name in GENERATED:
        shipped, made = (PROTO_DIR / name).read_text(), (tmp_path / name).read_text()
        assert shipped == made, f"handlers/v2/proto/{name} differs from the .proto's: regenerate it (handlers/v2/proto/__init__.py)"
    assert "from handlers.v2.proto import grpc_predict_v2_pb2" in (PROTO_DIR / "grpc_predict_v2_pb2_grpc.py").read_text()


def our_file(tmp_path: Path) -> descriptor_pb2.FileDescriptorProto:
    out = tmp_path / "proto.desc"
    command = [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_DIR}", f"--descriptor_set_out={out}", PROTO]
    subprocess.run(command, check=True, cwd=PROTO_DIR)
    files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    (found,) = files.file
    return found


def tritons_file() -> descriptor_pb2.FileDescriptorProto:
    try:
        from tritonclient.grpc import service_pb2
    except ImportError as exc:
        pytest.fail(f"tritonclient[grpc] is missing ({exc}): pip install -e '.[dev]'")
    found = descriptor_pb2.FileDescriptorProto()
    service_pb2.DESCRIPTOR.CopyToProto(found)
    return found


def messages(file: descriptor_pb2.FileDescriptorProto) -> dict[str, Any]:
    """Every message by full name (nested ones too), with its fields as name -> (number, type, label, type name, oneof)."""
    found: dict[str, Any] = {}

    def walk(prefix: str, message: descriptor_pb2.DescriptorProto) -> None:
        name = f"{prefix}.{message.name}"
        oneofs = [o.name for o in message.oneof_decl]
        found[name] = {
            f.name: (f.number, f.type, f.label, f.type_name, oneofs[f.oneof_index] if f.HasField("oneof_index") else None)
            for f in message.field
        }
        for nested in message.nested_type:
            walk(name, nested)

    for message in file.message_type:
        walk(f".{file.package}", message)
    return found


def test_every_message_and_field_matches_tritonclients(tmp_path: Path) -> None:
    ours, theirs = our_file(tmp_path), tritons_file()
    assert ours.package == theirs.package == "inference"
    assert ours.syntax == theirs.syntax == "proto3"
    our_messages, their_messages = messages(ours), messages(theirs)
    assert len(our_messages) >= 20
    for name, fields in our_messages.items():
        assert name in their_messages, f"{name} is not in tritonclient's proto"
        assert fields == their_messages[name], f"{name} differs from tritonclient's"


def test_the_service_and_its_calls_match_tritonclients(tmp_path: Path) -> None:
    (ours,), theirs = our_file(tmp_path).service, {s.name: s for s in tritons_file().service}
    assert ours.name == "GRPCInferenceService" and ours.name in theirs
    their_methods = {m.name: (m.input_type, m.output_type, m.client_streaming, m.server_streaming) for m in theirs[ours.name].method}
    our_methods = {m.name: (m.input_type, m.output_type, m.client_streaming, m.server_streaming) for m in ours.method}
    assert tuple(our_methods) == CALLS
    for name, signature in our_methods.items():
        assert signature == their_methods[name], f"{name}'s request or response type differs from tritonclient's"
