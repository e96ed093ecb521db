"""MinMax calibration of a graph whose weights never are all in memory: the graph runs in parts.

onnxruntime's MinMaxCalibrater adds a ReduceMin and a ReduceMax (keepdims, then reshaped to [-1]) after every
tensor it calibrates and runs the whole augmented model once per sample: the session holds every weight (and
MatMul's pre-packed copies of them). Here the nodes, in topological order, are cut into parts whose weights
reach ~PART_BYTES; each part is a graph-only model whose weights are handed to its session from the data file
(SessionOptions.add_external_initializers), with the same reduce nodes after the tensors it makes. Parts run one
at a time over every sample; between them only the tensors later parts read are kept, per sample. Same kernels on
the same inputs (optimizations off, as the calibrater's session has them): the ranges are those onnxruntime's
calibrater computes, reduced over the samples as it does with the options quantize_static gives it when no Calib*
extra option is set (not symmetric, no moving average).

verify-quantized runs the fp32 reference the same way (`plan` and `run`, asking for the logits instead of ranges):
npuctl.artifacts.llm.decode.teacher_forced."""

from __future__ import annotations

from collections.abc import Iterator, Sequence, Set
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from npuctl.artifacts import progress
from npuctl.artifacts.errors import BuildError
from npuctl.artifacts.llm.weights import WeightsFolder, is_external, tensor_bytes

PART_BYTES = 256 << 20
"""Weights of one part of the graph (a single tensor bigger than this is a part of its own)."""
UNIT = "calibration samples"
_RESHAPE = "npuctl_calibration_reshape"
Feeds = dict[str, np.ndarray]


@dataclass
class Part:
    nodes: list[Any]
    weights: list[Any] = field(default_factory=list)
    """The initializers its nodes read."""
    inputs: list[str] = field(default_factory=list)
    """Graph inputs and tensors earlier parts made, that its nodes read."""
    calibrated: list[str] = field(default_factory=list)
    """Tensors to calibrate that it makes (or, for graph inputs, reads first)."""
    kept: list[str] = field(default_factory=list)
    """Tensors it makes that later parts read."""
    outputs: list[str] = field(default_factory=list)
    """Tensors asked for (`plan`'s outputs) that it makes."""


def tensors_to_calibrate(model: Any, op_types: Sequence[str]) -> set[str]:
    """The tensors onnxruntime's calibrater would calibrate in `model` (its own selection, run on the graph)."""
    from onnxruntime.quantization.calibrate import CalibraterBase

    class Selector(CalibraterBase):  # type: ignore[misc]
        def __init__(self) -> None:  # the base class loads the model with its weights: only its selection is used
            self.op_types_to_calibrate = list(op_types)

    selected, _ = Selector().select_tensors_to_calibrate(model)
    return set(selected)


def plan(graph: Any, calibrated: Set[str], step: str, part_bytes: int = PART_BYTES,
         outputs: Set[str] = frozenset()) -> list[Part]:
    """The graph's nodes cut into parts in their (topological) order, each reading ~part_bytes of weights; `run`
    gives the ranges of `calibrated` and the values of `outputs` (tensors nodes make). `step`: what errors name."""
    initializers = {t.name: t for t in graph.initializer}
    parts: list[Part] = []
    size = 0
    for node in graph.node:
        reads = [initializers[name] for name in dict.fromkeys(node.input) if name in initializers]
        grows = sum(tensor_bytes(t) for t in reads if is_external(t))
        # A node that reads no weights stays with what it reads: a cut before it would keep its inputs per sample.
        if not parts or (grows and size and size + grows > part_bytes):
            parts.append(Part([]))
            size = 0
        part = parts[-1]
        part.nodes.append(node)
        part.weights.extend(t for t in reads if t.name not in {w.name for w in part.weights})
        size += grows
    made_in: dict[str, int] = {}
    for index, part in enumerate(parts):
        for node in part.nodes:
            made_in.update((name, index) for name in node.output if name)
    graph_inputs = {i.name for i in graph.input}
    last_read: dict[str, int] = {}
    for index, part in enumerate(parts):
        for node in part.nodes:
            for name in node.input:
                if not name or name in initializers:
                    continue
                if name not in made_in and name not in graph_inputs:
                    raise BuildError(step, f"node {node.name!r} reads {name!r}, which no node makes")
                if made_in.get(name, -1) > index or (made_in.get(name) == index and _after(part, node, name)):
                    raise BuildError(step, f"the graph is not in topological order at node {node.name!r}")
                last_read[name] = index
                if made_in.get(name, -1) < index and name not in part.inputs:
                    part.inputs.append(name)
    for name, index in made_in.items():
        if last_read.get(name, index) > index:
            parts[index].kept.append(name)
        if name in calibrated:
            parts[index].calibrated.append(name)
        if name in outputs:
            parts[index].outputs.append(name)
    if missing := sorted(set(outputs) - set(made_in)):
        raise BuildError(step, f"no node of the graph makes {missing}")
    for name in sorted(calibrated & graph_inputs):
        first = next(i for i, p in enumerate(parts) if name in p.inputs)
        parts[first].calibrated.append(name)
    return parts


def _after(part: Part, reader: Any, name: str) -> bool:
    """Whether `name` is made in `part` by a node at or after `reader`."""
    position = next(i for i, n in enumerate(part.nodes) if n is reader)
    return any(name in n.output for n in part.nodes[position:])


def ranges(model: Any, weights: WeightsFolder, samples: list[Feeds], calibrated: set[str],
           part_bytes: int = PART_BYTES) -> Any:
    """onnxruntime's TensorsData of the MinMax ranges of `calibrated` over `samples` (feeds of the model's graph
    inputs), the graph run part by part; each sample of each part reported done."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorsData

    parts = plan(model.graph, calibrated, weights.step, part_bytes)
    lows: dict[str, list[np.ndarray]] = {}
    highs: dict[str, list[np.ndarray]] = {}
    for index, number, values in run(model, weights, parts, samples):
        for name in parts[index].calibrated:
            lows.setdefault(name, []).append(values[f"{name}_ReduceMin"])
            highs.setdefault(name, []).append(values[f"{name}_ReduceMax"])
        progress.report(number + 1, len(samples), UNIT, f"calibrating part {index + 1} of {len(parts)} of the graph")
    pairs = {name: (np.nanmin(lows[name], axis=0), np.nanmax(highs[name], axis=0)) for name in lows}
    return TensorsData(CalibrationMethod.MinMax, pairs)


def run(model: Any, weights: WeightsFolder, parts: list[Part], samples: list[Feeds]) -> Iterator[tuple[int, int, Feeds]]:
    """`model`'s graph cut into `parts` (from `plan`) run over every sample (feeds of the graph's inputs): one
    part's session at a time, over every sample, keeping between parts only the tensors later parts read. Yields
    (part index, sample index, what that part made for that sample: its outputs and calibrated tensors' reductions
    by name), parts in order, samples in order within each."""
    kept: list[Feeds] = [dict(feeds) for feeds in samples]
    for index, part in enumerate(parts):
        session, handed = _session(model, part, weights, kept[0])
        outputs = [o.name for o in session.get_outputs()]
        for number, feeds in enumerate(kept):
            values = dict(zip(outputs, session.run(None, {name: feeds[name] for name in part.inputs}), strict=True))
            yield index, number, values
            feeds.update((name, values[name]) for name in part.kept)
            for name in [n for n in feeds if _done_with(n, parts, index)]:
                del feeds[name]
        del session, handed


def _done_with(name: str, parts: list[Part], index: int) -> bool:
    return not any(name in later.inputs for later in parts[index + 1:])


def _session(model: Any, part: Part, weights: WeightsFolder, feeds: Feeds) -> tuple[Any, dict[str, Any]]:
    """A session of `part`'s graph-only model, its external weights read from the data file and handed over
    (the session uses their memory: they live as long as it does)."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    inputs = [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(feeds[name].dtype), None)
              for name in part.inputs]
    nodes = list(part.nodes)
    outputs = [onnx.ValueInfoProto(name=name) for name in dict.fromkeys(part.kept + part.outputs)]
    for name in part.calibrated:
        for reduce in ("ReduceMin", "ReduceMax"):
            reduced = f"{name}_{reduce}"
            nodes.append(helper.make_node(reduce, [name], [f"{reduced}_Reshape"], keepdims=1, name=reduced))
            nodes.append(helper.make_node("Reshape", [f"{reduced}_Reshape", _RESHAPE], [reduced],
                                          name=f"{reduced}_Reshape"))
            outputs.append(onnx.ValueInfoProto(name=reduced))
    initializers = [onnx.numpy_helper.from_array(np.array([-1], dtype=np.int64), _RESHAPE)]
    handed: dict[str, Any] = {}
    for tensor in part.weights:
        copy = onnx.TensorProto()
        copy.CopyFrom(tensor)
        initializers.append(copy)
        if is_external(tensor):
            handed[tensor.name] = ort.OrtValue.ortvalue_from_numpy(weights.read(tensor))
    graph = helper.make_graph(nodes, "part", inputs, outputs, initializers)
    sub = helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    # Each part runs a few times and is dropped: the arena would keep its largest temporaries (a tied embedding's
    # 1 GB Transpose at Llama-3.2-1B) past their use, and pre-packing would copy every MatMul weight. Measured on
    # the fp32 reference in parts at Llama-3.2-1B: peak 4.07 GiB with both, 3.03 GiB without, no slower.
    options.enable_cpu_mem_arena = False
    options.add_session_config_entry("session.disable_prepacking", "1")
    if handed:
        options.add_external_initializers(list(handed), list(handed.values()))
    return ort.InferenceSession(sub.SerializeToString(), options, providers=["CPUExecutionProvider"]), handed
