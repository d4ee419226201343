"""engine/session.py: thread sizing, execution providers and the options of a real session."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from engine.cpus import available_cpus
from engine.session import CPU_PROVIDER, CUDA_PROVIDER, SessionConfig, open_session, run_options
from engine.tokenization import TextTokenizer
from tests.conftest import REPO_ROOT, V1_DIR, require_models


def test_resolved_threads_honours_an_override() -> None:
    assert SessionConfig(intra_op_threads=3).resolved_threads() == 3
    assert SessionConfig(intra_op_threads=1).resolved_threads() == 1


def test_resolved_threads_defaults_to_the_available_cpus() -> None:
    assert SessionConfig().resolved_threads() == available_cpus()
    assert SessionConfig(intra_op_threads=0).resolved_threads() == available_cpus()


def test_auto_provider_uses_cuda_only_when_present_and_always_keeps_cpu() -> None:
    providers = SessionConfig().resolved_providers()
    expected = [p for p in (CUDA_PROVIDER, CPU_PROVIDER) if p in ort.get_available_providers()]
    assert providers == expected
    assert providers[-1] == CPU_PROVIDER
    if CUDA_PROVIDER not in ort.get_available_providers():
        assert providers == [CPU_PROVIDER]


def test_explicit_cpu_provider() -> None:
    assert SessionConfig(providers=(CPU_PROVIDER,)).resolved_providers() == [CPU_PROVIDER]


def test_cpu_is_appended_as_fallback_and_duplicates_dropped() -> None:
    # Any other provider this build has (Azure ships in the CPU wheel) gets CPU added after it.
    for other in (p for p in ort.get_available_providers() if p != CPU_PROVIDER):
        assert SessionConfig(providers=(other,)).resolved_providers() == [other, CPU_PROVIDER]
    assert SessionConfig(providers=(CPU_PROVIDER, "auto", CPU_PROVIDER)).resolved_providers() == list(
        dict.fromkeys([CPU_PROVIDER, *SessionConfig().resolved_providers()])
    )


def test_unknown_provider_raises_a_clear_value_error() -> None:
    with pytest.raises(ValueError, match=r"unknown execution provider 'NoSuchExecutionProvider'") as info:
        SessionConfig(providers=("NoSuchExecutionProvider",)).resolved_providers()
    # The message lists what this build does offer.
    assert CPU_PROVIDER in str(info.value)


def test_a_known_provider_this_build_lacks_falls_back_to_cpu_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    missing = next(p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p not in ort.get_available_providers())
    config = SessionConfig(providers=(missing, CPU_PROVIDER))
    with caplog.at_level("WARNING", logger="engine.session"):
        assert config.resolved_providers() == [CPU_PROVIDER]
    assert f"execution provider {missing} is not in this onnxruntime build" in caplog.text
    assert config.gpu_requested()  # what /health reports as a fallback
    assert not SessionConfig(providers=(CPU_PROVIDER,)).gpu_requested()


def test_unavailable_provider_fails_open_session_before_loading() -> None:
    require_models()
    with pytest.raises(ValueError, match="NoSuchExecutionProvider"):
        open_session(V1_DIR / "model.onnx", SessionConfig(providers=("NoSuchExecutionProvider",)))


def test_open_session_sets_threads_and_full_graph_optimisation() -> None:
    require_models()
    session = open_session(V1_DIR / "model.onnx", SessionConfig(intra_op_threads=2, providers=(CPU_PROVIDER,)))
    options = session.get_session_options()
    assert options.intra_op_num_threads == 2
    assert options.inter_op_num_threads == 1
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert session.get_providers() == [CPU_PROVIDER]


def test_open_session_default_threads_and_it_runs() -> None:
    require_models()
    session = open_session(V1_DIR / "model.onnx", SessionConfig())
    assert session.get_session_options().intra_op_num_threads == available_cpus()
    feeds = TextTokenizer.from_file(V1_DIR / "tokenizer.json").encode(["a wonderful film", "dull"]).feeds()
    (probabilities,) = session.run(["probabilities"], feeds)
    assert probabilities.shape == (2, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_open_session_from_bytes() -> None:
    require_models()
    # From bytes, a graph must carry its weights: the build keeps them in model.onnx.data, so load them in.
    graph = onnx.load(str(V1_DIR / "model.onnx")).SerializeToString()
    session = open_session(graph, SessionConfig(intra_op_threads=1, providers=(CPU_PROVIDER,)))
    assert session.get_session_options().intra_op_num_threads == 1
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask"]


_ARENA_SCRIPT = """
import random, sys
from engine.kinds import ModelFiles
from engine.kinds.text_classification import TextClassifier
from engine.session import SessionConfig
from tests.conftest import V1_DIR

def rss_mb():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) // 1024 for line in status if line.startswith("VmRSS"))

classifier = TextClassifier(ModelFiles(V1_DIR / "model.onnx"), SessionConfig(intra_op_threads=1, shrink_arena=sys.argv[1] == "1"))
classifier.run(["a short text to settle the arena"] * 32)
before = rss_mb()
words = "an honest patient and quietly moving film about two brothers who travel".split()
rng = random.Random(0)
classifier.run([" ".join(rng.choice(words) for _ in range(2000))[:10_000] for _ in range(32)])  # 32 x 256 tokens
print(rss_mb() - before)
"""


def _arena_growth_mb(shrink: bool) -> int:
    done = subprocess.run(
        [sys.executable, "-c", _ARENA_SCRIPT, "1" if shrink else "0"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return int(done.stdout.strip().splitlines()[-1])


def test_a_large_batch_leaves_the_cpu_arena_bounded() -> None:
    """One batch of 32 texts x 256 tokens grows ONNX Runtime's arena by ~300 MB for good; with
    shrinkage after each run (the default) the process keeps little of it."""
    require_models()
    assert SessionConfig().shrink_arena
    kept = _arena_growth_mb(shrink=True)
    grown = _arena_growth_mb(shrink=False)
    assert grown > 150, grown  # what the arena keeps without shrinkage
    assert kept < 80, kept


def test_run_options_shrink_the_cpu_arena_unless_turned_off() -> None:
    options = run_options(SessionConfig())
    assert options is not None
    assert options.get_run_config_entry("memory.enable_memory_arena_shrinkage") == "cpu:0"
    assert run_options(SessionConfig(shrink_arena=False)) is None
