"""Loading built artifacts: the NPU path on the HTP simulator (tiny graph only: the simulator is slow),
with the provider and coverage read back from ONNX Runtime; and the CPU path beside it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from npuctl.artifacts import Store, artifacts_of, build_deployment
from npuctl.runtime.devices import NpuKind, detect_host
from npuctl.runtime.loading import load_model
from npuctl.runtime.placement import NotServable, Reason, Where
from npuctl.runtime.tensors import TensorModel
from npuctl.schema.models import ModelDeployment

pytestmark = pytest.mark.skipif(detect_host().npu is not NpuKind.SIMULATOR, reason="needs the x86_64 HTP simulator")


def relu_model(path: Path) -> Path:
    """y = relu(x @ W + b), x: float32[batch, sequence, 8]."""
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["z"]),
         helper.make_node("Relu", ["z"], ["y"])],
        "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "sequence", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "sequence", 8])],
        [numpy_helper.from_array((rng.standard_normal((8, 8)) / 3).astype(np.float32), "W"),
         numpy_helper.from_array((rng.standard_normal(8) / 10).astype(np.float32), "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def tensor_deployment(folder: Path, **runtime: Any) -> ModelDeployment:
    return ModelDeployment.model_validate({
        "apiVersion": "npuctl.dev/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "relu"},
        "spec": {
            "model": {"source": f"file:{folder / 'relu.onnx'}", "task": "tensor"},
            "precision": "fp16", "targets": ["x-elite"], "shapes": {"sequenceLengths": [4]},
            "accuracy": {"samples": 2}, "runtime": runtime,
        },
    })


def test_the_simulator_runs_the_context_binary_when_allowed(tmp_path: Path) -> None:
    relu_model(tmp_path / "relu.onnx")
    built = build_deployment(tensor_deployment(tmp_path), store=Store(tmp_path / "store"), base_dir=tmp_path)
    artifacts = artifacts_of(built)
    x = np.random.default_rng(1).standard_normal((1, 4, 8)).astype(np.float32)

    on_npu = load_model(tensor_deployment(tmp_path, device="npu", allowSimulator=True), artifacts)
    on_cpu = load_model(tensor_deployment(tmp_path), artifacts)
    assert isinstance(on_npu, TensorModel) and isinstance(on_cpu, TensorModel)
    assert on_npu.info.where is Where.SIMULATOR
    assert on_npu.info.provider == "QNNExecutionProvider" and on_npu.info.npu_coverage == 1.0
    assert on_cpu.info.where is Where.CPU and on_cpu.info.provider == "CPUExecutionProvider"
    assert [spec.shape for spec in on_npu.inputs] == [(1, 4, 8)]  # the static NPU graph
    assert [spec.shape for spec in on_cpu.inputs] == [(-1, -1, 8)]  # the dynamic CPU graph
    assert np.allclose(on_npu.run({"x": x})["y"], on_cpu.run({"x": x})["y"], atol=0.02)

    with pytest.raises(NotServable) as refused:
        load_model(tensor_deployment(tmp_path, device="npu", fallback="none"), artifacts)
    assert refused.value.reason is Reason.SIMULATOR_NOT_ALLOWED
