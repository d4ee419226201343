"""ONNX Runtime sessions: graph optimisations, thread sizing and execution providers."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from engine.cpus import available_cpus

logger = logging.getLogger(__name__)

CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"


@dataclass(frozen=True)
class SessionConfig:
    """How to open a session. ``intra_op_threads`` 0 means: the CPUs available to the process."""

    intra_op_threads: int = 0
    providers: Sequence[str] = ("auto",)

    def resolved_threads(self) -> int:
        return self.intra_op_threads if self.intra_op_threads > 0 else available_cpus()

    def resolved_providers(self) -> list[str]:
        """``auto`` picks CUDA when this onnxruntime build has it, and always keeps CPU as fallback."""
        available = ort.get_available_providers()
        wanted: list[str] = []
        for name in self.providers:
            if name == "auto":
                wanted.extend(p for p in (CUDA_PROVIDER, CPU_PROVIDER) if p in available)
            elif name not in available:
                raise ValueError(f"execution provider {name!r} is not available in this onnxruntime build; available: {available}")
            else:
                wanted.append(name)
        if CPU_PROVIDER not in wanted:
            wanted.append(CPU_PROVIDER)
        return list(dict.fromkeys(wanted))


def open_session(model: Path | bytes, config: SessionConfig) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = config.resolved_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Shape-inference notices about the dynamic axes are noise at WARNING level.
    options.log_severity_level = 3
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, sess_options=options, providers=config.resolved_providers())
