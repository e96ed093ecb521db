"""Multiply-accumulates of a decoder-pipeline graph's nodes, for the placement figure "share of MACs on the HTP"
per prefill window and per decoded token. Only the ops that carry the work are counted: MatMul against a weight
(projections, MLP, lm_head) and GroupQueryAttention (QK^T and the weighted sum of V, over the whole KV cache: the
figure holds at a full context). Norms, rotary, activations and adds are a rounding error beside them; a Gather
(the token embedding) does no arithmetic."""

from __future__ import annotations

from pathlib import Path
from typing import Any

ATTENTION = "GroupQueryAttention"
LOGITS = "logits"


def node_macs(model: Path, tokens: int, kv_length: int) -> dict[str, int]:
    """Node name -> MACs of one run of `model` over `tokens` tokens, with a KV cache of `kv_length`."""
    import onnx

    graph = onnx.load(str(model), load_external_data=False).graph
    weights = {t.name: list(t.dims) for t in graph.initializer}
    # A quantized weight reaches its MatMul through a DequantizeLinear of the initializer.
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in weights:
            weights[node.output[0]] = weights[node.input[0]]
    macs = {}
    for node in graph.node:
        if node.op_type == "MatMul" and len(weights.get(node.input[1], [])) == 2:
            rows, columns = weights[node.input[1]]
            macs[node.name] = tokens * rows * columns
        elif node.op_type == ATTENTION:
            macs[node.name] = 2 * tokens * kv_length * _attribute(node, "num_heads") * _head_size(graph, node)
    return macs


def tokens_of(model: Path) -> int:
    """The tokens one run of a graph computes: the static sequence length of its logits [batch, sequence, vocab]
    when it has them (the prompt's lm_head takes a window and computes its last position only), else of its
    first input [batch, sequence, ...]; 1 when it is symbolic."""
    import onnx

    graph = onnx.load(str(model), load_external_data=False).graph
    value = next((o for o in graph.output if o.name == LOGITS), graph.input[0])
    dims = value.type.tensor_type.shape.dim
    return dims[1].dim_value if len(dims) > 1 and dims[1].dim_value > 0 else 1


def _attribute(node: Any, name: str) -> int:
    return next(int(a.i) for a in node.attribute if a.name == name)


def _head_size(graph: Any, node: Any) -> int:
    """From the past key input [batch, kv_heads, length, head_size]: a graph input in StaticLLM's graphs, or
    dequantized from one (npuctl.artifacts.llm.kv_cache)."""
    past = node.input[3]
    for dequantize in graph.node:
        if dequantize.op_type == "DequantizeLinear" and dequantize.output[0] == past:
            past = dequantize.input[0]
    for value in graph.input:
        if value.name == past:
            return int(value.type.tensor_type.shape.dim[3].dim_value)
    raise ValueError(f"{node.name}: its past key is not a graph input with a static head size")
