"""Sizing a graph (npuctl.runtime.graph_facts) without loading its weights: the files it refers to (external data,
context binaries beside it), its context binaries' bytes and its inputs, as onnx reads them, and the memory the
reading takes for a graph whose weights are embedded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from npuctl.runtime.footprint import PeakMemory, process_memory, return_free_memory
from npuctl.runtime.graph_facts import GraphError, graph_facts


def context_graph(folder: Path) -> Path:
    """EPContext nodes with their binary beside the graph (embed_mode 0) and embedded (1), an initializer in an
    external file and one embedded, and inputs of symbolic and fixed shapes."""
    (folder / "ctx.bin").write_bytes(b"\0" * 3000)
    nodes = [helper.make_node("EPContext", ["x"], ["y"], domain="com.microsoft", embed_mode=0,
                              ep_cache_context="ctx.bin"),
             helper.make_node("EPContext", ["ids"], ["z"], domain="com.microsoft", embed_mode=1,
                              ep_cache_context=b"\1" * 1234),
             helper.make_node("Add", ["w", "v"], ["s"])]
    weights = [numpy_helper.from_array(np.ones((64, 64), np.float32), "w"),
               numpy_helper.from_array(np.ones((4,), np.float32), "v")]
    graph = helper.make_graph(nodes, "ctx", [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [1, 8]),
                                             helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 16])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", "z", "s")],
                              weights)
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    path = folder / "ctx.onnx"
    onnx.save(model, path, save_as_external_data=True, location="ctx.onnx.data", size_threshold=1024)
    return path


def test_the_facts_are_onnx_s_without_its_weights(tmp_path: Path) -> None:
    path = context_graph(tmp_path)
    facts = graph_facts(path)
    assert facts.files == {path.resolve(), (tmp_path / "ctx.bin").resolve(), (tmp_path / "ctx.onnx.data").resolve()}
    assert facts.context_bytes == 3000 + 1234
    assert facts.inputs == {"x": ((1, 8), 2), "ids": (("batch", 16), 8)}


def test_an_embedded_weights_graph_is_read_without_its_weights_in_memory(tmp_path: Path) -> None:
    weights = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4096, 4096)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "big",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4096])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4096])], [weights])
    path = tmp_path / "big.onnx"
    onnx.save(helper.make_model(graph), path)  # 64 MiB, weights inside the graph's file
    del weights, graph
    return_free_memory()
    before = process_memory()
    with PeakMemory() as peak:
        facts = graph_facts(path)
    assert facts.files == {path.resolve()} and facts.inputs == {"x": (("n", 4096), 4)}
    assert peak.highest - before < 16 * 2**20, "onnx.load would hold the 64 MiB of weights, twice"


def _damaged(path: Path, damage: str) -> None:
    """`path` as a file that is not a whole ONNX graph: `damage` says how."""
    if damage == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif damage == "not onnx":
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    elif damage == "an input of no ONNX element type":
        model = onnx.load(str(path), load_external_data=False)
        model.graph.input[0].type.tensor_type.elem_type = 108
        onnx.save(model, path)
    else:  # an EPContext node whose embedded context is no string: its attribute's type is unset
        model = onnx.load(str(path), load_external_data=False)
        (context,) = [a for a in model.graph.node[1].attribute if a.name == "ep_cache_context"]
        context.type = onnx.AttributeProto.UNDEFINED
        onnx.save(model, path)


@pytest.mark.parametrize("damage", ["truncated", "not onnx", "an input of no ONNX element type",
                                    "a context attribute of no type"])
def test_a_file_that_is_no_whole_onnx_graph_is_an_error_naming_it(tmp_path: Path, damage: str) -> None:
    path = context_graph(tmp_path)
    _damaged(path, damage)
    with pytest.raises(GraphError) as refused:
        graph_facts(path)
    assert str(path.resolve()) in str(refused.value) and "not an ONNX graph" in str(refused.value)
