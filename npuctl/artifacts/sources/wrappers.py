"""EPContext wrapper ONNX for a raw QNN context binary, from its graph I/O description.

The description is the JSON `qnn-context-binary-utility --context_binary=X.bin --json_file=X.json` writes
(info.graphs[].info.{graphName, graphInputs, graphOutputs}); this does the job of onnxruntime's
tools/qnn/gen_qnn_ctx_onnx_model.py, as a library. One wrapper per graph; the .bin is referenced, not embedded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
from onnx import TensorProto, helper

from npuctl.artifacts.errors import BuildError

EP_SOURCE = "QNNExecutionProvider"
_IR_VERSION = 10
"""Old enough for every onnxruntime-qnn that reads EPContext nodes (ORT >= 1.18)."""

QNN_DTYPES: dict[str, int] = {
    "QNN_DATATYPE_FLOAT_32": TensorProto.FLOAT, "QNN_DATATYPE_FLOAT_16": TensorProto.FLOAT16,
    "QNN_DATATYPE_UFIXED_POINT_8": TensorProto.UINT8, "QNN_DATATYPE_UINT_8": TensorProto.UINT8,
    "QNN_DATATYPE_UFIXED_POINT_16": TensorProto.UINT16, "QNN_DATATYPE_UINT_16": TensorProto.UINT16,
    "QNN_DATATYPE_UFIXED_POINT_32": TensorProto.UINT32, "QNN_DATATYPE_UINT_32": TensorProto.UINT32,
    "QNN_DATATYPE_UINT_64": TensorProto.UINT64,
    "QNN_DATATYPE_FIXED_POINT_8": TensorProto.INT8, "QNN_DATATYPE_INT_8": TensorProto.INT8,
    "QNN_DATATYPE_FIXED_POINT_16": TensorProto.INT16, "QNN_DATATYPE_INT_16": TensorProto.INT16,
    "QNN_DATATYPE_FIXED_POINT_32": TensorProto.INT32, "QNN_DATATYPE_INT_32": TensorProto.INT32,
    "QNN_DATATYPE_INT_64": TensorProto.INT64, "QNN_DATATYPE_BOOL_8": TensorProto.BOOL,
}
"""QNN tensor data types (QnnTypes.h names, as the utility writes them) -> ONNX element types."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: int
    """ONNX element type (TensorProto.FLOAT, ...)."""
    shape: tuple[int, ...]
    scale: float | None = None
    """Set for quantized (fixed-point) tensors."""
    zero_point: int | None = None

    @property
    def quantized(self) -> bool:
        return self.scale is not None


@dataclass(frozen=True)
class GraphInfo:
    name: str
    """The QNN graph name: the EPContext node must carry it to find the graph in the binary."""
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]


@dataclass(frozen=True)
class Description:
    sdk_version: str | None
    """The QNN SDK build id the binary was made with."""
    graphs: tuple[GraphInfo, ...]


def read_description(file: Path) -> Description:
    """Parse a qnn-context-binary-utility JSON. Raises BuildError naming the file and the missing field."""
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        info = data["info"]
        graphs = tuple(_graph(g["info"]) for g in info["graphs"])
    except (OSError, ValueError) as exc:
        raise BuildError("wrap", f"{file}: not a readable JSON graph description: {exc}") from exc
    except (KeyError, TypeError) as exc:
        raise BuildError("wrap", f"{file}: not a qnn-context-binary-utility description (missing {exc}); expected "
                         "info.graphs[].info.{graphName, graphInputs, graphOutputs}") from exc
    if not graphs:
        raise BuildError("wrap", f"{file}: describes no graph")
    return Description(info.get("buildId"), graphs)


def write_wrapper(binary: Path, graph: GraphInfo, out: Path, *, sdk_version: str | None = None,
                  quantized_io: bool = False) -> Path:
    """Write `out`, an ONNX model of one EPContext node running `graph` from `binary` (which must sit in
    `out`'s folder or below it). Quantized graph inputs and outputs get QuantizeLinear/DequantizeLinear
    nodes, so the wrapper takes and returns float32, unless `quantized_io`."""
    try:
        relative = binary.resolve().relative_to(out.parent.resolve()).as_posix()
    except ValueError as exc:
        raise BuildError("wrap", f"{binary} must be in {out.parent} or below it: the wrapper refers to it by a "
                         "relative path") from exc
    nodes: list[onnx.NodeProto] = []
    initializers: list[onnx.TensorProto] = []
    inputs, outputs = [], []
    for tensor in graph.inputs:
        if tensor.quantized and not quantized_io:
            outer = f"{tensor.name}_float"
            nodes.append(helper.make_node("QuantizeLinear", [outer, *_qparams(tensor, initializers)], [tensor.name],
                                          name=f"{tensor.name}_quantize"))
            inputs.append(helper.make_tensor_value_info(outer, TensorProto.FLOAT, tensor.shape))
        else:
            inputs.append(helper.make_tensor_value_info(tensor.name, tensor.dtype, tensor.shape))
    nodes.append(helper.make_node(
        "EPContext", [t.name for t in graph.inputs], [t.name for t in graph.outputs], name=graph.name,
        domain="com.microsoft", main_context=1, embed_mode=0, ep_cache_context=relative,
        ep_sdk_version=sdk_version or "unknown", partition_name=graph.name, source=EP_SOURCE))
    for tensor in graph.outputs:
        if tensor.quantized and not quantized_io:
            outer = f"{tensor.name}_float"
            nodes.append(helper.make_node("DequantizeLinear", [tensor.name, *_qparams(tensor, initializers)], [outer],
                                          name=f"{tensor.name}_dequantize"))
            outputs.append(helper.make_tensor_value_info(outer, TensorProto.FLOAT, tensor.shape))
        else:
            outputs.append(helper.make_tensor_value_info(tensor.name, tensor.dtype, tensor.shape))
    model = helper.make_model(helper.make_graph(nodes, graph.name, inputs, outputs, initializers),
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
                              producer_name="npuctl")
    model.ir_version = _IR_VERSION
    onnx.save(model, str(out))
    return out


def _graph(info: dict[str, Any]) -> GraphInfo:
    return GraphInfo(info["graphName"], tuple(_tensor(t["info"]) for t in info["graphInputs"]),
                     tuple(_tensor(t["info"]) for t in info["graphOutputs"]))


def _tensor(info: dict[str, Any]) -> TensorInfo:
    dtype_name = info["dataType"]
    if dtype_name not in QNN_DTYPES:
        raise BuildError("wrap", f"tensor {info['name']!r} has data type {dtype_name}, which ONNX cannot carry "
                         f"(known: {', '.join(sorted(QNN_DTYPES))})")
    quant = info.get("quantizeParams") or {}
    scale = zero_point = None
    if (quant.get("definition") == "QNN_DEFINITION_DEFINED"
            and quant.get("quantizationEncoding") == "QNN_QUANTIZATION_ENCODING_SCALE_OFFSET"):
        # QNN stores offset = -zero_point.
        scale, zero_point = float(quant["scaleOffset"]["scale"]), -int(quant["scaleOffset"]["offset"])
    return TensorInfo(info["name"], QNN_DTYPES[dtype_name], tuple(int(d) for d in info["dimensions"]), scale, zero_point)


def _qparams(tensor: TensorInfo, initializers: list[onnx.TensorProto]) -> list[str]:
    scale, zero_point = f"{tensor.name}_scale", f"{tensor.name}_zero_point"
    initializers += [helper.make_tensor(scale, TensorProto.FLOAT, [], [tensor.scale or 0.0]),
                     helper.make_tensor(zero_point, tensor.dtype, [], [tensor.zero_point or 0])]
    return [scale, zero_point]
