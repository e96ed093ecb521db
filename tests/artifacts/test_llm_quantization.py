"""The llm-quantize stage's parts (npuctl/artifacts/llm/{quantization,calibration,weights}.py) on a hand-made
graph whose weights are in an external data file, against onnxruntime's own calibrater and quantize_static."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from npuctl.artifacts import BuildError, progress
from npuctl.artifacts.llm import calibration, quantization
from npuctl.artifacts.llm.weights import WeightsFolder

WIDTH, HIDDEN, TOKENS, SAMPLES = 16, 128, 5, 6


def mlp(folder: Path, *, tied: bool = True) -> Path:
    """x -> MatMul -> Add(bias) -> SiLU -> MatMul -> Add(x) -> MatMul(Transpose(w2t)) -> y: a residual read two
    parts later, a graph input calibrated and read again later, a weight transposed in the graph (as the genai
    builder ties an embedding to lm_head), every tensor in model.onnx.data."""
    rng = np.random.default_rng(0)
    weights = {"w0": rng.standard_normal((WIDTH, HIDDEN)), "b0": rng.standard_normal(HIDDEN),
               "w1": rng.standard_normal((HIDDEN, WIDTH))}
    weights |= {"w2t": rng.standard_normal((HIDDEN, WIDTH))} if tied else {"w2": rng.standard_normal((WIDTH, HIDDEN))}
    nodes = [helper.make_node("MatMul", ["x", "w0"], ["h0"], name="up"),
             helper.make_node("Add", ["h0", "b0"], ["a0"], name="bias"),
             helper.make_node("Sigmoid", ["a0"], ["s0"], name="gate"),
             helper.make_node("Mul", ["a0", "s0"], ["m0"], name="silu"),
             helper.make_node("MatMul", ["m0", "w1"], ["h1"], name="down"),
             helper.make_node("Add", ["x", "h1"], ["r1"], name="residual"),
             *([helper.make_node("Transpose", ["w2t"], ["w2"], name="tied")] if tied else []),
             helper.make_node("MatMul", ["r1", "w2"], ["y"], name="head")]
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "tokens", WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "tokens", HIDDEN])],
        [numpy_helper.from_array((v * 0.3).astype(np.float32), k) for k, v in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(folder / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="model.onnx.data", size_threshold=0)
    return folder / "model.onnx"


def samples() -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    return [{"x": rng.standard_normal((1, TOKENS, WIDTH)).astype(np.float32) * (i + 1)} for i in range(SAMPLES)]


class Reader:
    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self.feeds = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.feeds, None)


def test_ranges_computed_part_by_part_are_onnxruntimes_minmax_calibraters(tmp_path: Path) -> None:
    from onnxruntime.quantization.calibrate import create_calibrator

    path = mlp(tmp_path / "model", tied=False)
    weights = WeightsFolder(path.parent, "llm-quantize")
    prepared = quantization.prepare(path, weights, tmp_path)
    ops = sorted({n.op_type for n in prepared.graph.node})
    tensors = calibration.tensors_to_calibrate(prepared, ops)
    part_bytes = (WIDTH + 1) * HIDDEN * 4  # one weight matrix per part, and the bias
    parts = calibration.plan(prepared.graph, tensors, "llm-quantize", part_bytes)
    # Each part reads one weight matrix (the bias joins the first); what later parts read is kept for them.
    assert [[n.name for n in p.nodes] for p in parts] == [["up", "bias", "gate", "silu"], ["down", "residual"],
                                                          ["head"]]
    assert parts[1].inputs == ["m0", "x"] and parts[2].inputs == ["r1"] and parts[0].kept == ["m0"]
    reports: list[tuple[str, str | None]] = []
    with progress.reporting(lambda report, message: reports.append((str(report), message))):
        mine = calibration.ranges(prepared, weights, samples(), tensors, part_bytes)
    calibrator = create_calibrator(path, ops, augmented_model_path=str(tmp_path / "augmented.onnx"),
                                   use_external_data_format=True)
    calibrator.collect_data(Reader(samples()))
    theirs = calibrator.compute_data()
    assert set(mine) == set(theirs) == tensors == {"x", "h0", "a0", "s0", "m0", "h1", "r1", "y"}
    for name in tensors:
        for got, expected in zip(mine[name].range_value, theirs[name].range_value, strict=True):
            assert got.dtype == expected.dtype and got.shape == expected.shape
            np.testing.assert_array_equal(got, expected)
    assert reports[-1] == (f"{SAMPLES}/{SAMPLES} calibration samples", "calibrating part 3 of 3 of the graph")
    assert len(reports) == 3 * SAMPLES


def quantize_static_as_olive(path: Path, out: Path, precision: str) -> onnx.ModelProto:
    """What Olive's OnnxStaticQuantization for the QNN EP does: quant_pre_process, get_qnn_qdq_config,
    quantize_static."""
    from onnxruntime.quantization import QuantType, quantize_static
    from onnxruntime.quantization.execution_providers.qnn import get_qnn_qdq_config
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = out / "pre" / "model.onnx"
    pre.parent.mkdir(parents=True)
    quant_pre_process(str(path), str(pre), auto_merge=True, save_as_external_data=True)
    weight_type = {"w8a16": QuantType.QUInt8, "w4a16": QuantType.QUInt4}[precision]
    config = get_qnn_qdq_config(str(pre), Reader(samples()), activation_type=QuantType.QUInt16,
                                weight_type=weight_type, per_channel=True, activation_symmetric=False,
                                calibration_providers=["CPUExecutionProvider"], nodes_to_exclude=[])
    quantize_static(str(pre), str(out / "model.onnx"), **{k: v for k, v in vars(config).items()})
    return onnx.load(str(out / "model.onnx"))


def contents(model: onnx.ModelProto, folder: Path) -> tuple[Any, ...]:
    nodes = [(n.op_type, n.domain, n.name, list(n.input), list(n.output), sorted(a.SerializeToString()
                                                                                for a in n.attribute))
             for n in model.graph.node]
    tensors = {t.name: (t.data_type, list(t.dims), numpy_helper.to_array(t, str(folder)).tobytes())
               for t in model.graph.initializer}
    return nodes, tensors


@pytest.mark.parametrize("precision", ["w8a16", "w4a16"])
def test_the_quantized_model_is_onnxruntimes_quantize_static_with_olives_qnn_options(
        tmp_path: Path, precision: str) -> None:
    path = mlp(tmp_path / "model")
    weights = WeightsFolder(path.parent, "llm-quantize")
    prepared = quantization.prepare(path, weights, tmp_path)
    assert "tied" not in {n.name for n in prepared.graph.node}  # folded: w2 is a weight, as the optimizer makes it
    quantization.quantize(prepared, weights, samples(), precision, tmp_path / "mine")
    expected = quantize_static_as_olive(path, tmp_path / "theirs", precision)
    mine = onnx.load(str(tmp_path / "mine" / "model.onnx"), load_external_data=False)
    assert contents(mine, tmp_path / "mine") == contents(expected, tmp_path / "theirs")
    assert any(n.op_type == "DequantizeLinear" for n in mine.graph.node)
    # The tensors of 1 KiB or more are in the data file, as onnxruntime's quantizer saves them.
    external = {t.name for t in mine.graph.initializer if t.data_location == TensorProto.EXTERNAL}
    big = {t.name for t in mine.graph.initializer if len(numpy_helper.to_array(t, str(tmp_path / "mine")).tobytes())
           >= 1024}
    assert external == big and external


def test_a_weight_whose_data_file_entry_does_not_fit_the_file_is_refused_naming_it(tmp_path: Path) -> None:
    path = mlp(tmp_path / "model")
    data = path.parent / "model.onnx.data"
    data.write_bytes(data.read_bytes()[: WIDTH * HIDDEN * 4 + 100])  # w0 whole, b0 cut short
    model = onnx.load(str(path), load_external_data=False)
    weights = WeightsFolder(path.parent, "llm-quantize")
    tensors = {t.name: t for t in model.graph.initializer}
    assert weights.read(tensors["w0"]).shape == (WIDTH, HIDDEN)
    with pytest.raises(BuildError) as refused:
        weights.read(tensors["b0"])
    assert refused.value.step == "llm-quantize" and "b0" in refused.value.message
    assert f"{HIDDEN * 4} bytes at offset" in refused.value.message
