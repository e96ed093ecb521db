"""Attention on the HTP (`spec.generation.attention: npu`): GroupQueryAttention with its KV cache compiled into
the context/iterator graphs instead of running on the CPU between their partitions.

onnxruntime-qnn 2.7 (QNN SDK 2.51) has a GroupQueryAttention builder for the HTP, but takes the op only when
(1) the `op_affinity` provider option names a JSON file pinning the op type to the HTP: without one the EP
seeds GroupQueryAttention -> CPU and logs "filtered off QNN by the op_affinity provider option"; and (2) the
present KV output has a static length (the builder reads it as the cache size). StaticLLM leaves the past
length symbolic, so the KV cache is fixed here to the context length: past and present then share one buffer of
`contextLength` tokens, the layout onnxruntime-genai allocates with `past_present_share_buffer`.

The op itself stays float (its inputs dequantized from the uint16 projections); the KV cache is uint16 graph I/O
with a fixed scale per layer (npuctl.artifacts.llm.kv_cache), as Qualcomm's own packs have it: a DequantizeLinear
after each past input and a QuantizeLinear before each present output, both on the HTP."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from npuctl.artifacts.errors import BuildError
from npuctl.artifacts.llm import kv_cache

Attention = Literal["npu", "cpu"]
OP = "GroupQueryAttention"
AFFINITY_FILE = "op_affinity.json"
SWITCH = "set spec.generation.attention: cpu to run attention on the CPU"

_UNSUPPORTED: tuple[tuple[str, Any, str], ...] = (
    ("rotary_interleaved", 0, "interleaved rotary embedding"),
    ("softcap", 0.0, "attention logit soft-capping"),
    ("smooth_softmax", -1, "smooth softmax"),
    ("qk_output", 0, "QK output"),
)
"""Attribute, the only value QNN's GroupQueryAttention builder takes, and what another value means."""


def fix_kv_length(folder: Path, graphs: Iterable[str], context_length: int) -> None:
    """Give each graph's KV cache (past inputs, present outputs) the static length `context_length` and the HTP's
    uint16, after checking its GroupQueryAttention nodes are ones the HTP takes. Only the graph protos are
    rewritten: the weights stay in their external data file."""
    import onnx
    from onnxruntime.tools.onnx_model_utils import make_dim_param_fixed

    for name in graphs:
        path = folder / f"{name}.onnx"
        model = onnx.load(str(path), load_external_data=False)
        nodes = [n for n in model.graph.node if n.op_type == OP]
        if not nodes:
            raise BuildError("llm-static", f"graph {name} has no {OP} node to place on the HTP: {SWITCH}")
        for node in nodes:
            check_node(node, context_length)
        for dim_param in _kv_length_params(model.graph, nodes):
            make_dim_param_fixed(model.graph, dim_param, context_length)
        kv_cache.quantize_io(model, nodes, folder, name)
        onnx.save(model, str(path))


def check_node(node: Any, context_length: int) -> None:
    """Refuse a GroupQueryAttention the HTP builder would leave on the CPU, naming the cause and the switch."""
    import onnx

    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    for attribute, supported, meaning in _UNSUPPORTED:
        if attribute in attributes and attributes[attribute] != supported:
            raise BuildError("llm-static", f"{node.name}: the HTP's {OP} has no {meaning} ({attribute}="
                             f"{attributes[attribute]}): {SWITCH}")
    window = int(attributes.get("local_window_size", -1))
    if window != -1 and window < context_length:
        raise BuildError("llm-static", f"{node.name}: the HTP's {OP} has no sliding-window attention "
                         f"(local_window_size={window} < contextLength {context_length}): {SWITCH}")
    extra = [index for index, name in enumerate(node.input) if index >= 10 and name]
    if extra:
        raise BuildError("llm-static", f"{node.name}: the HTP's {OP} takes no attention_bias, head_sink or KV "
                         f"scales (inputs {extra}): {SWITCH}")


def provider_options(folder: Path) -> dict[str, str]:
    """The compile's extra QNN provider options: `op_affinity` pinning GroupQueryAttention to the HTP (the file
    written into `folder`, which the compile throws away)."""
    path = folder / AFFINITY_FILE
    path.write_text(json.dumps({"op_type": {OP: "htp"}}), encoding="utf-8")
    return {"op_affinity": str(path)}


def check_placed(graph: str, cpu_ops: dict[str, int]) -> None:
    """After compiling with attention on the HTP: refuse a graph whose attention the EP still left on the CPU."""
    if cpu_ops.get(OP):
        raise BuildError("compile", f"the QNN EP left {cpu_ops[OP]} {OP} node(s) of graph {graph} on the CPU "
                         f"(attention npu needs QNN SDK 2.48 or later and a static KV cache): {SWITCH}")


def verify_hint(attention: Attention) -> str:
    """What a failed verify adds when attention ran on the HTP: the switch that puts it back on the CPU."""
    return f"; attention ran on the HTP: {SWITCH}" if attention == "npu" else ""


def _kv_length_params(graph: Any, nodes: list[Any]) -> set[str]:
    """The symbolic length dims of the graph inputs that feed GroupQueryAttention's past key/value (inputs 3, 4)."""
    past = {name for node in nodes for name in node.input[3:5] if name}
    params = set()
    for value in graph.input:
        if value.name in past:
            dims = value.type.tensor_type.shape.dim
            if len(dims) == 4 and dims[2].dim_param:
                params.add(dims[2].dim_param)
    return params
