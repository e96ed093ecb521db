"""Static QDQ quantization of the surgeries' graph for the QNN EP, with the weights read one tensor at a time.

It makes the model Olive's OnnxStaticQuantization pass made for the QNN EP (per-channel uint8/uint4 weights,
uint16 activations, MinMax calibration on CPU; GQA, MatMulNBits and GatherBlockQuantized left out): the same
onnxruntime code decides what to quantize and how (get_qnn_qdq_config, QDQQuantizer), on the graph alone.
What held the fp32 model in memory three times over (~12 bytes per parameter at the peak) is done otherwise:

- pre-processing (quant_pre_process) on the graph only: symbolic and onnx shape inference need no weight values
  (but a few biases). Of its onnxruntime optimizer pass (basic level), what changes the genai builder's graphs
  after the surgeries is constant folding (a tied embedding's Transpose of the lm_head weight becomes a weight):
  npuctl.artifacts.llm.folding does it, a node at a time (the pass's session holds the whole model). The other
  differences it makes are unused opset imports, explicit default attributes and another topological order;
- calibration part by part (npuctl.artifacts.llm.calibration);
- QDQ quantization reading each weight from the data file when the quantizer asks for it, and the output's data
  file written tensor by tensor (npuctl.artifacts.llm.weights).
What stays in memory is the quantized weights (1 byte per parameter at w8, 0.5 at w4) and one fp32 tensor with
the quantizer's temporaries."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from npuctl.artifacts import progress
from npuctl.artifacts.errors import BuildError
from npuctl.artifacts.llm import calibration, folding
from npuctl.artifacts.llm.weights import WeightsFolder, is_external, save

STEP = "llm-quantize"

EXCLUDED_OPS = ("GatherBlockQuantized", "GroupQueryAttention", "MatMulNBits")
"""Left unquantized: they run on the CPU and take float inputs."""
WEIGHT_TYPES = {"w8a16": "uint8", "w4a16": "uint4"}
"""Weight type of each NPU precision; activations are uint16 in both."""
_QUANT_TYPES = {"uint8": "QUInt8", "uint4": "QUInt4"}
"""onnxruntime's name of each weight type."""
MODEL_FILE = "model.onnx"


def prepare(source: Path, weights: WeightsFolder, scratch: Path) -> Any:
    """`source`'s graph (its weights not loaded) as onnxruntime's quant_pre_process leaves it, as Olive calls it
    (symbolic shape inference merging dims automatically, the optimizer's constant folding, onnx shape
    inference), tagged as pre-processed. Symbolic shape inference reads the values of the initializers some nodes
    take (an Add's bias): those it reads from `weights`, one at a time. Folded tensors go to a data file in
    `scratch`, which must last as long as `weights` is read."""
    import onnx
    from onnxruntime.quantization.quant_utils import add_pre_process_metadata
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    class GraphOnly(SymbolicShapeInference):  # type: ignore[misc]
        def _get_value(self, node: Any, index: int) -> Any:
            name = node.input[index]
            if name not in self.sympy_data_ and is_external(self.initializers_[name]):
                return weights.read(self.initializers_[name])
            return super()._get_value(node, index)

    model = onnx.load(str(source), load_external_data=False)
    # SymbolicShapeInference.infer_shapes with this class and Olive's arguments (int_max, auto_merge=True).
    inference = GraphOnly(2**31 - 1, True, False, 0)
    inference._preprocess(model)
    complete = False
    while inference.run_:
        complete = inference._infer_impl()
    inference._update_output_from_vi()
    if not complete:
        raise BuildError(STEP, f"symbolic shape inference left shapes unknown in {source}")
    model = inference.out_mp_
    folding.fold(model, weights, scratch)
    model = onnx.shape_inference.infer_shapes(model)
    add_pre_process_metadata(model)
    return model


def quantize(prepared: Any, weights: WeightsFolder, samples: list[calibration.Feeds], precision: str,
             out: Path) -> None:
    """The QDQ model of `prepared` (from `prepare`; its weights in `weights`) at `precision`, calibrated on
    `samples` (feeds of its inputs), written to `out/model.onnx` and its data file."""
    import onnx
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization.calibrate import CalibrationMethod
    from onnxruntime.quantization.execution_providers.qnn import get_qnn_qdq_config
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer
    from onnxruntime.quantization.quant_utils import add_infer_metadata, update_opset_version
    from onnxruntime.quantization.quantize import QuantFormat, check_static_quant_arguments

    excluded = [node.name for node in prepared.graph.node if node.op_type in EXCLUDED_OPS]
    weight_type = QuantType[_QUANT_TYPES[WEIGHT_TYPES[precision]]]
    config = get_qnn_qdq_config(prepared, None, calibrate_method=CalibrationMethod.MinMax,
                                activation_type=QuantType.QUInt16, weight_type=weight_type,
                                per_channel=True, activation_symmetric=False,
                                calibration_providers=["CPUExecutionProvider"], nodes_to_exclude=excluded)
    # quantize_static's own preparation: shape inference again, then the opset it needs (16-bit Q/DQ: 21).
    model = onnx.shape_inference.infer_shapes(prepared)
    add_infer_metadata(model)
    if update_opset_version(model, config.weight_type, config.activation_type,
                            config.extra_options.get("TensorQuantOverrides"), 0) is not model:
        raise BuildError(STEP, f"the graph's opset ({[(o.domain, o.version) for o in model.opset_import]}) is "
                         "older than 21, which uint16 activations need: the genai builder makes opset 21 or later")
    tensors = calibration.tensors_to_calibrate(model, config.op_types_to_quantize)
    ranges = calibration.ranges(model, weights, samples, tensors)
    check_static_quant_arguments(QuantFormat.QDQ, config.activation_type, config.weight_type)
    quantizer = QDQQuantizer(model, config.per_channel, config.reduce_range, config.weight_type,
                             config.activation_type, ranges, config.nodes_to_quantize or [],
                             config.nodes_to_exclude or [], config.op_types_to_quantize, config.extra_options)
    with _weights_read_from(weights):
        quantizer.quantize_model()
    progress.report(len(samples), len(samples), calibration.UNIT, "writing the quantized model")
    quantizer.model.topological_sort()  # as ONNXModel.save_model_to_file does
    out.mkdir(parents=True, exist_ok=True)
    save(quantizer.model.model, out / MODEL_FILE, weights)


@contextmanager
def _weights_read_from(weights: WeightsFolder) -> Iterator[None]:
    """While the block runs, onnxruntime's quantizer reads each float initializer it asks for from `weights`
    (one at a time, not kept in the model) instead of from the proto (which holds only its external reference).
    Its modules each import `tensor_proto_to_array` by name: each name is swapped, and put back after."""
    import onnx
    from onnxruntime.quantization import base_quantizer, qdq_quantizer, quant_utils

    original = quant_utils.tensor_proto_to_array
    reads = 0

    def tensor_proto_to_array(initializer: Any) -> Any:
        nonlocal reads
        if initializer.data_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
            return original(initializer)  # its error for other types
        reads += 1  # each weight is read twice: for its scale, then to quantize it
        progress.report(reads, None, "weight reads", "quantizing the weights")
        return weights.read(initializer)

    modules = (quant_utils, base_quantizer, qdq_quantizer)
    for module in modules:
        module.tensor_proto_to_array = tensor_proto_to_array
    try:
        yield
    finally:
        for module in modules:
            module.tensor_proto_to_array = original
