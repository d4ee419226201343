"""ONNX Runtime sessions: graph optimisations, thread sizing and execution providers."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import onnxruntime as ort

from engine.cpus import available_cpus

logger = logging.getLogger(__name__)

CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"
TENSORRT_PROVIDER = "TensorrtExecutionProvider"
GPU_PROVIDERS = frozenset({TENSORRT_PROVIDER, CUDA_PROVIDER, "ROCMExecutionProvider", "MIGraphXExecutionProvider", "DmlExecutionProvider"})


@dataclass(frozen=True)
class SessionConfig:
    """How to open and run a version's session.

    ``intra_op_threads`` 0 means: the CPUs available to the process. ``allow_spinning`` off
    stops idle runtime threads from spinning, which steals the CPU from other instances when
    several run at once. ``max_batch_tokens`` bounds the padded tokens of one runtime call."""

    intra_op_threads: int = 0
    providers: Sequence[str] = ("auto",)
    allow_spinning: bool = True
    max_batch_tokens: int = 8192
    shrink_arena: bool = True
    """Give the CPU arena's unused memory back after each run (``run_options``), so one large
    batch does not leave the process hundreds of MB larger for good."""

    def with_threads(self, intra_op_threads: int | None) -> SessionConfig:
        return self if intra_op_threads is None else replace(self, intra_op_threads=intra_op_threads)

    def resolved_threads(self) -> int:
        return self.intra_op_threads if self.intra_op_threads > 0 else available_cpus()

    def resolved_providers(self) -> list[str]:
        """The providers to ask for, best first, CPU always last as the fallback.

        ``auto`` picks CUDA when this onnxruntime build has it. A provider this build lacks is
        dropped with a warning (the session falls back); a name ONNX Runtime does not know is an error."""
        available = ort.get_available_providers()
        known = set(ort.get_all_providers())
        wanted: list[str] = []
        for name in self.providers:
            if name == "auto":
                wanted.extend(p for p in (CUDA_PROVIDER, CPU_PROVIDER) if p in available)
            elif name not in known:
                raise ValueError(f"unknown execution provider {name!r}; this onnxruntime build has: {available}")
            elif name not in available:
                logger.warning("execution provider %s is not in this onnxruntime build (it has %s): falling back", name, available)
            else:
                wanted.append(name)
        if CPU_PROVIDER not in wanted:
            wanted.append(CPU_PROVIDER)
        return list(dict.fromkeys(wanted))

    def gpu_requested(self) -> bool:
        """Whether the settings ask for an accelerator (by name, or ``auto`` on a build that has one)."""
        return runs_on_gpu(self.providers) or runs_on_gpu(self.resolved_providers())


def run_options(config: SessionConfig) -> ort.RunOptions | None:
    """Options for every ``session.run`` of a version (None: ONNX Runtime's defaults).

    ONNX Runtime's CPU arena keeps the peak of every run: one batch of 32 texts x 256 tokens
    leaves it ~300 MB larger. Shrinking after each run frees the chunks the run no longer uses
    (measured: no cost on a 32-text batch of short texts)."""
    if not config.shrink_arena:
        return None
    options = ort.RunOptions()
    options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return options


def runs_on_gpu(providers: Sequence[str]) -> bool:
    return any(p in GPU_PROVIDERS for p in providers)


def open_session(model: Path | bytes, config: SessionConfig) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = config.resolved_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if not config.allow_spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # Shape-inference notices about the dynamic axes are noise at WARNING level.
    options.log_severity_level = 3
    source = model if isinstance(model, bytes) else str(model)
    wanted = config.resolved_providers()
    session = ort.InferenceSession(source, sess_options=options, providers=wanted)
    actual = session.get_providers()
    if runs_on_gpu(wanted) and not runs_on_gpu(actual):
        # e.g. onnxruntime-gpu without a usable CUDA (driver, libraries): ONNX Runtime falls back silently.
        logger.warning("asked for %s, but the session runs on %s (GPU provider failed to load): CPU fallback", wanted, actual)
    return session
