"""The KV cache in the HTP's precision at the graph I/O (`spec.generation.attention: npu`): each past key/value input
uint16 followed by a DequantizeLinear, each present output a QuantizeLinear to uint16, with a fixed scale and zero
point per layer, so that the cache never crosses the host in float and no Quantize is left on the CPU before the
HTP's graph.

The scales come from the QDQ quantization, none is calibrated again:
- values: the cache holds V as GroupQueryAttention took it, the dequantized uint16 projection. Its scale and zero
  point are that DequantizeLinear's: every cached value is on that grid, so storing it adds no error;
- keys: the cache holds K after the rotary embedding (GroupQueryAttention's do_rotary). Rotating a pair
  (x1, x2) by an angle gives components of magnitude at most |(x1, x2)| <= sqrt(2) max(|x1|, |x2|), so K's
  projection range, made symmetric and widened by sqrt(2), covers every rotated key.
uint16 because the activations already are: the greedy tokens stay those of the float cache. onnxruntime-genai
allocates the cache with the graph input's element type (kv_cache.cpp, DefaultKeyValueCache: `type_` from the first
past input) and, sharing past and present buffers, never converts or copies it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from npuctl.artifacts.errors import BuildError

ELEMENT = "uint16"
ELEMENT_BYTES = 2
"""Bytes per cached element on the HTP path."""
_LEVELS = 65535
_MIDDLE = 32768
_PAST, _PRESENT = (3, 4), (1, 2)
"""GroupQueryAttention's past key/value inputs and present key/value outputs."""
_KEY, _VALUE, _PACKED = 1, 2, 0
"""Its key, value and (when K and V are packed with Q) packed QKV inputs."""


def cache_bytes(layers: int, kv_heads: int, head_size: int, context_length: int) -> int:
    """Bytes of one generation's KV cache: keys and values of every layer at the full context length."""
    return 2 * layers * kv_heads * head_size * context_length * ELEMENT_BYTES


def quantize_io(model: Any, nodes: list[Any], folder: Path, graph: str) -> None:
    """Make `model`'s KV cache graph I/O uint16, with a DequantizeLinear after each past input and a QuantizeLinear
    before each present output (`nodes`: its GroupQueryAttention nodes; `folder`: where its weights are)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    producers = {output: node for node in model.graph.node for output in node.output}
    initializers = {t.name: t for t in model.graph.initializer}
    inputs = {v.name: v for v in model.graph.input}
    outputs = {v.name: v for v in model.graph.output}
    added, dequantizers, quantizers = [], [], []
    for node in nodes:
        value = _projection(node, _VALUE, producers, initializers, folder, graph)
        scale, zero = _projection(node, _KEY, producers, initializers, folder, graph)
        widest = max(zero, _LEVELS - zero) * scale
        key = (math.sqrt(2) * widest / (_LEVELS - _MIDDLE), _MIDDLE)
        for past, present, (cache_scale, cache_zero) in ((_PAST[0], _PRESENT[0], key), (_PAST[1], _PRESENT[1], value)):
            graph_input, graph_output = node.input[past], node.output[present]
            if graph_input not in inputs or graph_output not in outputs:
                raise BuildError("llm-static", f"graph {graph}, {node.name}: its KV cache is not graph I/O "
                                 f"({graph_input}, {graph_output})")
            scale_name, zero_name = f"{graph_input}_scale", f"{graph_input}_zero_point"
            added += [numpy_helper.from_array(np.array(cache_scale, np.float32), scale_name),
                      numpy_helper.from_array(np.array(cache_zero, np.uint16), zero_name)]
            node.input[past] = f"{graph_input}_dequantized"
            node.output[present] = f"{graph_output}_float"
            dequantizers.append(helper.make_node("DequantizeLinear", [graph_input, scale_name, zero_name],
                                                 [node.input[past]], name=f"{graph_input}_DequantizeLinear"))
            quantizers.append(helper.make_node("QuantizeLinear", [node.output[present], scale_name, zero_name],
                                               [graph_output], name=f"{graph_output}_QuantizeLinear"))
            # The float tensors inside keep the static shapes: the EP's GroupQueryAttention reads the cache's size
            # from its present output (without it, the op stays on the CPU).
            for tensor, outer in ((node.input[past], inputs[graph_input]),
                                  (node.output[present], outputs[graph_output])):
                inner = model.graph.value_info.add()
                inner.CopyFrom(outer)
                inner.name = tensor
            inputs[graph_input].type.tensor_type.elem_type = TensorProto.UINT16
            outputs[graph_output].type.tensor_type.elem_type = TensorProto.UINT16
    model.graph.initializer.extend(added)
    # In topological order: the dequantizers read only graph inputs, the quantizers are read by none.
    ordered = [*dequantizers, *model.graph.node, *quantizers]
    del model.graph.node[:]
    model.graph.node.extend(ordered)


def _projection(node: Any, index: int, producers: dict[str, Any], initializers: dict[str, Any], folder: Path,
                graph: str) -> tuple[float, int]:
    """The uint16 scale and zero point of GroupQueryAttention input `index` (or of the packed QKV input when K and
    V are packed with Q): its DequantizeLinear's."""
    from onnx import TensorProto, numpy_helper

    name = node.input[index] if len(node.input) > index and node.input[index] else node.input[_PACKED]
    dequantize = producers.get(name)
    operands = list(dequantize.input[1:]) if dequantize is not None and dequantize.op_type == "DequantizeLinear" else []
    scale_tensor, zero_tensor = (initializers.get(n) for n in operands) if len(operands) == 2 else (None, None)
    if scale_tensor is None or zero_tensor is None or zero_tensor.data_type != TensorProto.UINT16:
        raise BuildError("llm-static", f"graph {graph}, {node.name}: its input {name} is not a uint16 "
                         "DequantizeLinear with a constant scale, which a uint16 KV cache's scale is taken from")
    scale = numpy_helper.to_array(scale_tensor, base_dir=str(folder))
    if scale.size != 1:
        raise BuildError("llm-static", f"graph {graph}, {node.name}: {name} is quantized per channel; a uint16 KV "
                         "cache needs one scale per tensor")
    return float(scale.reshape(())), int(numpy_helper.to_array(zero_tensor, base_dir=str(folder)).reshape(()))
