"""ONNX graph rewrites for the NPU: fixed shapes per sequence bucket, and fixes that keep quantization sane."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from npuctl.artifacts.errors import BuildError

MODEL_FILE = "model.onnx"
"""The ONNX file every graph step writes into its folder."""

MASK_FLOOR = -1e4
"""BERT-style exports fill masked attention scores with finfo(float32).min (-3.4e38); that one constant
stretches every activation range it flows into, and quantization then maps all real values to zero
(measured: cosine 0.09 vs fp32). Any value at most this low acts the same after softmax."""
_HUGE_NEGATIVE = -1e30


@dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: np.dtype[Any]
    shape: tuple[int | str | None, ...]
    """Fixed sizes, symbolic names, or None for unknown dims."""


def inputs_of(model: onnx.ModelProto) -> list[InputSpec]:
    initializers = {i.name for i in model.graph.initializer}
    specs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim)
        specs.append(InputSpec(value.name, onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type), dims))
    return specs


def has_sequence_axis(model: onnx.ModelProto) -> bool:
    return any(len(spec.shape) > 1 and not isinstance(spec.shape[1], int) for spec in inputs_of(model))


def make_static(model: onnx.ModelProto, batch: int, sequence: int) -> onnx.ModelProto:
    """Fix every input's axis 0 to `batch` and a dynamic axis 1 to `sequence`. Other dynamic axes are an error:
    the NPU needs every size known, and only batch and sequence have an obvious value."""
    from onnxruntime.tools.onnx_model_utils import fix_output_shapes, make_input_shape_fixed

    static = onnx.ModelProto()
    static.CopyFrom(model)
    for spec in inputs_of(static):
        shape = []
        for axis, dim in enumerate(spec.shape):
            if isinstance(dim, int) and dim > 0:
                shape.append(dim)
            elif axis == 0:
                shape.append(batch)
            elif axis == 1:
                shape.append(sequence)
            else:
                raise BuildError("static-shapes", f"input {spec.name!r} has a dynamic axis {axis} ({dim or '?'}); "
                                 "only axis 0 (batch) and axis 1 (sequence) can be fixed: export the model "
                                 "with the other sizes fixed")
        make_input_shape_fixed(static.graph, spec.name, shape)
    fix_output_shapes(static)
    return static


def folded(path: Path) -> onnx.ModelProto:
    """The static model with everything computed from constants and fixed shapes folded away (onnxruntime's basic,
    ONNX-only optimizations): e.g. T5's relative position buckets (Log, integer arithmetic), which the HTP refuses."""
    import tempfile

    import onnxruntime as ort

    from npuctl.runtime import power

    with tempfile.TemporaryDirectory(prefix="npuctl-fold-") as folder:
        options = power.session_options()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(Path(folder) / MODEL_FILE)
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return onnx.load(options.optimized_model_filepath)


def clamp_mask_constants(model: onnx.ModelProto) -> int:
    """Raise huge negative float constants (attention-mask fill values) to MASK_FLOOR, in place.
    Returns how many tensors changed."""
    changed = 0
    tensors = list(model.graph.initializer)
    for node in model.graph.node:
        if node.op_type in ("Constant", "ConstantOfShape"):
            tensors.extend(a.t for a in node.attribute if a.type == onnx.AttributeProto.TENSOR)
    for tensor in tensors:
        if tensor.data_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
            continue
        values = numpy_helper.to_array(tensor)
        # Only small tensors: weights never hold mask fill values, and reading them all is slow.
        if values.size > 16 or not np.any(values < _HUGE_NEGATIVE):
            continue
        tensor.CopyFrom(numpy_helper.from_array(np.maximum(values, MASK_FLOOR).astype(values.dtype), tensor.name))
        changed += 1
    return changed


def read_inputs(model_path: Path) -> tuple[list[InputSpec], bool]:
    """The model's inputs, and whether it has a sequence axis (read once; the model is not kept)."""
    model = onnx.load(str(model_path), load_external_data=False)
    return inputs_of(model), has_sequence_axis(model)


def fixed_shape(shape: tuple[int | str | None, ...], batch: int, sequence: int) -> tuple[int | str | None, ...]:
    return tuple(d if isinstance(d, int) and d > 0 else batch if axis == 0 else sequence if axis == 1 else d
                 for axis, d in enumerate(shape))


def save(model: onnx.ModelProto, path: Path) -> None:
    """Save, putting weights in one external file only when the 2 GB protobuf limit requires it."""
    if model.ByteSize() < 2**31 - 2**24:
        onnx.save(model, str(path))
    else:
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=path.name + ".data")
