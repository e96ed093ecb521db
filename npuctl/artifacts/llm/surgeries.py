"""Olive's QNN graph surgeries on the genai builder's fp32 model without holding its weights: runs inside the
olive_steps child process.

Olive's GraphSurgeries pass loads the whole model, copies it into its DAG and into onnx-ir (to deduplicate
initializers), then writes every weight again: ~39 bytes per parameter at its peak, 23 GB for a 1B model.
The surgeons rewire the attention mask, pick one RoPE cache and scale the norm weights: only the norm weights
are read into memory, and only the graph is written. Its weights stay references into the builder's data file,
which stays in the builder's folder: llm-quantize reads them from there a tensor at a time
(npuctl.artifacts.llm.weights), so the store holds no second fp32 copy."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

NAMES = ("RemoveRopeMultiCache", "AttentionMaskToSequenceLengths", "SimplifiedLayerNormToL2Norm")
"""Olive's QNN recipe: RoPE caches cut to one, the attention mask becomes sequence lengths (what GQA on the CPU
takes), RMSNorm becomes L2 normalization (an HTP op)."""
_READ_BY_SURGEONS = {"SimplifiedLayerNormalization", "SkipSimplifiedLayerNormalization"}
"""Ops whose initializers a surgeon reads (the norm scales it multiplies by sqrt(hidden)); RemoveRopeMultiCache
copies its cache's TensorProto, which keeps an external one's reference."""
MODEL_FILE = "model.onnx"


def apply(source: Path, out: Path, head_size: int) -> None:
    """`source/model.onnx`'s graph with the surgeries applied and the KV head size fixed to a number (the
    builder writes the symbolic `kv_cache_dim`, which the calibration reader cannot make tensors of), written to
    `out` with the source's other files but not its weights' data files."""
    import onnx
    from olive.passes.onnx.graph_surgeries import Surgeon
    from onnxruntime.tools.onnx_model_utils import make_dim_param_fixed

    model = onnx.load(str(source / MODEL_FILE), load_external_data=False)
    read = _read_by_surgeons(model.graph)
    for tensor in model.graph.initializer:
        if _is_external(tensor) and tensor.name in read:
            onnx.external_data_helper.load_external_data_for_tensor(tensor, str(source))
    for name in NAMES:
        model = Surgeon.registry[name.lower()]()(model)
    make_dim_param_fixed(model.graph, "kv_cache_dim", head_size)
    _deduplicate(model.graph)
    out.mkdir(parents=True, exist_ok=True)
    data_files = {_location(t) for t in model.graph.initializer if _is_external(t)}
    # The tensors read above are small (norm weights): they go inline, under protobuf's 2 GB.
    onnx.save(model, str(out / MODEL_FILE))
    for file in source.iterdir():
        if file.is_file() and file.name not in data_files and not (out / file.name).exists():
            shutil.copy2(file, out / file.name)


def _read_by_surgeons(graph: Any) -> set[str]:
    return {name for node in _nodes(graph) if node.op_type in _READ_BY_SURGEONS for name in node.input}


def _nodes(graph: Any) -> Iterator[Any]:
    import onnx

    for node in graph.node:
        yield node
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from _nodes(attribute.g)
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                for subgraph in attribute.graphs:
                    yield from _nodes(subgraph)


def _deduplicate(graph: Any) -> None:
    """Identical in-memory initializers merged into one, as Olive's pass does after its surgeries (the norm
    scales of a checkpoint whose norms are all ones become one tensor)."""
    first: dict[tuple[int, tuple[int, ...], str], str] = {}
    renamed: dict[str, str] = {}
    kept = []
    for tensor in graph.initializer:
        if _is_external(tensor) or not tensor.raw_data:
            kept.append(tensor)
            continue
        digest = (tensor.data_type, tuple(tensor.dims), hashlib.sha256(tensor.raw_data).hexdigest())
        if digest in first:
            renamed[tensor.name] = first[digest]
        else:
            first[digest] = tensor.name
            kept.append(tensor)
    if not renamed:
        return
    for node in _nodes(graph):
        for index, name in enumerate(node.input):
            if name in renamed:
                node.input[index] = renamed[name]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def _is_external(tensor: Any) -> bool:
    import onnx

    return bool(tensor.HasField("data_location") and tensor.data_location == onnx.TensorProto.EXTERNAL)


def _location(tensor: Any) -> str:
    return str(next(entry.value for entry in tensor.external_data if entry.key == "location"))
