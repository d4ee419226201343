"""The MiniLM (BERT) sentence encoder as an ONNX graph, built from safetensors weights.

The graph reproduces sentence-transformers' all-MiniLM-L6-v2 pipeline without torch:
BERT encoder, attention-masked mean pooling, then L2 normalisation. Inputs are
``input_ids`` and ``attention_mask`` (int64, dynamic batch and sequence axes).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


@dataclass(frozen=True)
class BertConfig:
    """The fields of a Hugging Face ``config.json`` that the graph needs."""

    hidden_size: int
    num_heads: int
    num_layers: int
    intermediate_size: int
    layer_norm_eps: float
    max_position_embeddings: int

    @classmethod
    def from_file(cls, path: Path) -> BertConfig:
        raw = json.loads(path.read_text())
        if raw.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"{path}: only the erf GELU activation is supported")
        return cls(
            hidden_size=raw["hidden_size"],
            num_heads=raw["num_attention_heads"],
            num_layers=raw["num_hidden_layers"],
            intermediate_size=raw["intermediate_size"],
            layer_norm_eps=raw["layer_norm_eps"],
            max_position_embeddings=raw["max_position_embeddings"],
        )


class GraphBuilder:
    """Collects nodes and initializers with unique names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, hint: str, value: np.ndarray) -> str:
        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, **attrs: Any) -> str:
        out = self.name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def linear(self, x: str, weight: np.ndarray, bias: np.ndarray, hint: str) -> str:
        # torch Linear stores (out, in); ONNX MatMul wants (in, out).
        w = self.const(f"{hint}.weight", weight.T.astype(np.float32))
        b = self.const(f"{hint}.bias", bias.astype(np.float32))
        return self.op("Add", [self.op("MatMul", [x, w], f"{hint}.matmul"), b], f"{hint}.out")

    def layer_norm(self, x: str, weight: np.ndarray, bias: np.ndarray, eps: float, hint: str) -> str:
        w = self.const(f"{hint}.weight", weight.astype(np.float32))
        b = self.const(f"{hint}.bias", bias.astype(np.float32))
        return self.op("LayerNormalization", [x, w, b], hint, axis=-1, epsilon=eps)


def _gelu(g: GraphBuilder, x: str) -> str:
    # Exact (erf) GELU, as BERT uses; ONNX Runtime fuses this pattern into one Gelu kernel.
    scaled = g.op("Div", [x, g.const("sqrt2", np.array(np.sqrt(2.0), dtype=np.float32))])
    one_plus = g.op("Add", [g.op("Erf", [scaled]), g.const("one", np.array(1.0, dtype=np.float32))])
    half_x = g.op("Mul", [x, g.const("half", np.array(0.5, dtype=np.float32))])
    return g.op("Mul", [half_x, one_plus], "gelu")


def _attention(g: GraphBuilder, x: str, mask_bias: str, w: dict[str, np.ndarray], prefix: str, cfg: BertConfig) -> str:
    head_dim = cfg.hidden_size // cfg.num_heads
    split_shape = g.const("split_heads_shape", np.array([0, 0, cfg.num_heads, head_dim], dtype=np.int64))

    def heads(kind: str, perm: list[int]) -> str:
        proj = g.linear(x, w[f"{prefix}.self.{kind}.weight"], w[f"{prefix}.self.{kind}.bias"], f"{prefix}.{kind}")
        return g.op("Transpose", [g.op("Reshape", [proj, split_shape])], f"{kind}_heads", perm=perm)

    q = heads("query", [0, 2, 1, 3])  # (B, H, S, D)
    k = heads("key", [0, 2, 3, 1])  # (B, H, D, S)
    v = heads("value", [0, 2, 1, 3])  # (B, H, S, D)
    scale = g.const("attn_scale", np.array(1.0 / np.sqrt(head_dim), dtype=np.float32))
    scores = g.op("Add", [g.op("Mul", [g.op("MatMul", [q, k]), scale]), mask_bias], "attn_scores")
    probs = g.op("Softmax", [scores], "attn_probs", axis=-1)
    context = g.op("Transpose", [g.op("MatMul", [probs, v])], "context", perm=[0, 2, 1, 3])
    merge_shape = g.const("merge_heads_shape", np.array([0, 0, cfg.hidden_size], dtype=np.int64))
    context = g.op("Reshape", [context, merge_shape], "context_merged")
    out = g.linear(context, w[f"{prefix}.output.dense.weight"], w[f"{prefix}.output.dense.bias"], f"{prefix}.output")
    residual = g.op("Add", [out, x], "attn_residual")
    return g.layer_norm(
        residual, w[f"{prefix}.output.LayerNorm.weight"], w[f"{prefix}.output.LayerNorm.bias"], cfg.layer_norm_eps, f"{prefix}.ln"
    )


def _feed_forward(g: GraphBuilder, x: str, w: dict[str, np.ndarray], prefix: str, cfg: BertConfig) -> str:
    hidden = _gelu(g, g.linear(x, w[f"{prefix}.intermediate.dense.weight"], w[f"{prefix}.intermediate.dense.bias"], f"{prefix}.ffn_in"))
    out = g.linear(hidden, w[f"{prefix}.output.dense.weight"], w[f"{prefix}.output.dense.bias"], f"{prefix}.ffn_out")
    residual = g.op("Add", [out, x], "ffn_residual")
    return g.layer_norm(
        residual,
        w[f"{prefix}.output.LayerNorm.weight"],
        w[f"{prefix}.output.LayerNorm.bias"],
        cfg.layer_norm_eps,
        f"{prefix}.ffn_ln",
    )


def _embeddings(g: GraphBuilder, w: dict[str, np.ndarray], cfg: BertConfig) -> str:
    words = g.op("Gather", [g.const("word_embeddings", w["embeddings.word_embeddings.weight"]), "input_ids"], "word_emb")
    # Every input is a single segment, so the token-type embedding is row 0 for every
    # position: fold it into the position table.
    positions_table = w["embeddings.position_embeddings.weight"] + w["embeddings.token_type_embeddings.weight"][0]
    # Positions 0..S-1 are the first S rows of the table: slice them (shape (S, H), broadcast over the batch).
    seq_len = g.op(
        "Slice",
        [
            g.op("Shape", ["input_ids"], "ids_shape"),
            g.const("one_1d", np.array([1], dtype=np.int64)),
            g.const("two_1d", np.array([2], dtype=np.int64)),
        ],
        "seq_len",
    )
    positions = g.op(
        "Slice",
        [
            g.const("position_embeddings", positions_table.astype(np.float32)),
            g.const("zero_1d", np.array([0], dtype=np.int64)),
            seq_len,
            g.const("zero_1d", np.array([0], dtype=np.int64)),
        ],
        "pos_emb",
    )
    summed = g.op("Add", [words, positions], "emb_sum")
    return g.layer_norm(summed, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], cfg.layer_norm_eps, "emb_ln")


def build_encoder_graph(weights: dict[str, np.ndarray], cfg: BertConfig) -> tuple[GraphBuilder, str, str]:
    """Build the encoder nodes; return the builder, the float mask name and the embedding output name."""
    g = GraphBuilder()
    mask = g.op("Cast", ["attention_mask"], "mask_f", to=TensorProto.FLOAT)  # (B, S)
    # Additive attention bias: 0 for real tokens, a large negative for padding, shaped (B, 1, 1, S).
    inverted = g.op("Sub", [g.const("one_f", np.array(1.0, dtype=np.float32)), mask], "mask_inverted")
    bias = g.op("Mul", [inverted, g.const("neg_large", np.array(-1e4, dtype=np.float32))], "mask_bias")
    bias = g.op("Unsqueeze", [bias, g.const("bias_axes", np.array([1, 2], dtype=np.int64))], "mask_bias_4d")

    x = _embeddings(g, weights, cfg)
    for i in range(cfg.num_layers):
        x = _attention(g, x, bias, weights, f"encoder.layer.{i}.attention", cfg)
        x = _feed_forward(g, x, weights, f"encoder.layer.{i}", cfg)

    # Attention-masked mean pooling over the sequence axis.
    mask3 = g.op("Unsqueeze", [mask, g.const("pool_axis", np.array([2], dtype=np.int64))], "mask_3d")
    summed = g.op(
        "ReduceSum",
        [g.op("Mul", [x, mask3], "masked_tokens"), g.const("seq_axis", np.array([1], dtype=np.int64))],
        "token_sum",
        keepdims=0,
    )
    counts = g.op("ReduceSum", [mask3, g.const("seq_axis", np.array([1], dtype=np.int64))], "token_count", keepdims=0)
    counts = g.op("Max", [counts, g.const("min_count", np.array(1e-9, dtype=np.float32))], "token_count_clamped")
    pooled = g.op("Div", [summed, counts], "mean_pooled")

    # L2 normalisation, as sentence-transformers' Normalize module (eps 1e-12).
    norm = g.op("ReduceL2", [pooled], "l2norm", axes=[1], keepdims=1)
    norm = g.op("Max", [norm, g.const("min_norm", np.array(1e-12, dtype=np.float32))], "l2norm_clamped")
    embedding = g.op("Div", [pooled, norm], "sentence_embedding")
    return g, mask, embedding


def make_model(g: GraphBuilder, outputs: list[tuple[str, str, list[str | int]]], name: str) -> onnx.ModelProto:
    """Wrap the builder's nodes in a model; ``outputs`` are (node output, public name, shape)."""
    nodes = list(g.nodes)
    graph_outputs = []
    for internal, public, shape in outputs:
        nodes.append(helper.make_node("Identity", [internal], [public], name=f"out_{public}"))
        graph_outputs.append(helper.make_tensor_value_info(public, TensorProto.FLOAT, shape))
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"]),
    ]
    graph = helper.make_graph(nodes, name, inputs, graph_outputs, initializer=g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="ml-inference-system")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model
