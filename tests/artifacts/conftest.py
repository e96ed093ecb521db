"""Tiny generated ONNX models and manifests for build tests: they compile on the HTP simulator in well under a second."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from npuctl.artifacts import Store
from npuctl.schema import LoadedDeployment
from tests.manifests import write_deployment

ManifestFactory = Callable[..., LoadedDeployment]


def tiny_model(path: Path, *, hidden: int = 16, layers: int = 2, seed: int = 0, extra_op: str | None = None) -> Path:
    """X [batch, sequence, hidden] -> (MatMul, Add, Relu) x layers -> Y, weights scaled to keep outputs near 1."""
    rng = np.random.default_rng(seed)
    nodes, inits, current = [], [], "x"
    for i in range(layers):
        w = (rng.standard_normal((hidden, hidden)) / np.sqrt(hidden)).astype(np.float32)
        b = (rng.standard_normal(hidden) * 0.1).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes += [helper.make_node("MatMul", [current, f"w{i}"], [f"m{i}"]),
                  helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"]),
                  helper.make_node("Relu", [f"a{i}"], [f"r{i}"])]
        current = f"r{i}"
    if extra_op:
        nodes.append(helper.make_node(extra_op, [current], ["extra"]))
        current = "extra"
    nodes.append(helper.make_node("Identity", [current], ["y"]))
    dims = ["batch", "sequence", hidden]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def write_manifest(folder: Path, *, name: str = "tiny", source: str = "file:tiny.onnx", **spec: Any) -> LoadedDeployment:
    """A tensor-task manifest for `folder/tiny.onnx` (JSON is YAML), loaded as the agent would."""
    body = {"model": {"source": source, "task": "tensor"}, "precision": "w8a16", "targets": ["x-elite"],
            "shapes": {"sequenceLengths": [8]}, "accuracy": {"samples": 2}} | spec
    return write_deployment(folder, name, body)


@pytest.fixture
def tiny_dir(tmp_path: Path) -> Path:
    tiny_model(tmp_path / "tiny.onnx")
    return tmp_path


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")
