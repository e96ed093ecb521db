"""Constant folding of a graph whose weights stay on disk: what onnxruntime's optimizer pass in quant_pre_process
changes in the genai builder's graphs. A node whose inputs are all initializers (a tied embedding's Transpose of
the lm_head weight) becomes an initializer named as its output, computed by onnxruntime, so that the quantizer
sees a weight (quantized to the weight type) rather than an activation. The values are written to a data file of
their own, one node at a time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from npuctl.artifacts.llm.weights import WeightsFolder, append, is_external

LOCATION = "npuctl-folded.data"
"""The folded tensors' data file (in the scratch folder, added to the WeightsFolder)."""
_KEPT = {"QuantizeLinear", "DequantizeLinear"}
"""Ops onnxruntime's constant folding leaves in place."""


def fold(model: Any, weights: WeightsFolder, scratch: Path) -> None:
    """Fold `model`'s constant nodes in place (graph order, so chains fold too); initializers no node reads any
    more are dropped, as the optimizer drops them."""
    path = scratch / LOCATION
    weights.add(LOCATION, path)
    initializers = {t.name: t for t in model.graph.initializer}
    graph_inputs = {i.name for i in model.graph.input}
    outputs = {o.name for o in model.graph.output}
    folded = []
    with path.open("wb") as data:
        for node in list(model.graph.node):
            inputs = [name for name in node.input if name]
            if (node.op_type in _KEPT or not inputs or any(n not in initializers or n in graph_inputs for n in inputs)
                    or any(n in outputs for n in node.output) or len(node.output) != 1):
                continue
            values = _run(model, node, [initializers[n] for n in inputs], weights)
            tensor = append(data, node.output[0], values, LOCATION)
            model.graph.initializer.append(tensor)
            initializers[tensor.name] = tensor
            folded.append(node)
    for node in folded:
        model.graph.node.remove(node)
    used = {name for node in model.graph.node for name in node.input}
    for tensor in [t for t in model.graph.initializer if t.name not in used and t.name not in outputs]:
        model.graph.initializer.remove(tensor)


def _run(model: Any, node: Any, inputs: list[Any], weights: WeightsFolder) -> Any:
    """The node's output, computed by onnxruntime on the CPU from its initializers."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    handed = {t.name: ort.OrtValue.ortvalue_from_numpy(weights.read(t)) for t in inputs if is_external(t)}
    copies = []
    for tensor in inputs:
        copy = onnx.TensorProto()
        copy.CopyFrom(tensor)
        copies.append(copy)
    graph = helper.make_graph([node], "fold", [], [onnx.ValueInfoProto(name=node.output[0])], copies)
    sub = helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if handed:
        options.add_external_initializers(list(handed), list(handed.values()))
    session = ort.InferenceSession(sub.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {})[0]
