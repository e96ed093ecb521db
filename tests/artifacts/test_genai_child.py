"""The model builder's weights cast and written a slice at a time (genai_child): the same bytes as the builder's
own whole-tensor cast, never more than a slice made at once."""

from __future__ import annotations

import importlib
import io
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import onnx_ir as ir
import pytest
import torch
from onnx_ir import tensor_adapters

from npuctl.artifacts.llm import genai_child


def test_a_transposed_bf16_weight_is_written_as_the_same_fp32_bytes_a_slice_at_a_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    weight = torch.randn(48, 40).to(torch.bfloat16)  # lm_head-like: the builder writes weight.T
    made: list[int] = []
    shipped = tensor_adapters.TorchTensor.__init__

    def counting(self: Any, tensor: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        made.append(tensor.numel() * tensor.element_size())
        shipped(self, tensor, *args, **kwargs)

    monkeypatch.setattr(genai_child, "SLICE_BYTES", 1024)
    monkeypatch.setattr(tensor_adapters.TorchTensor, "__init__", counting)
    written = io.BytesIO()
    genai_child.CastInSlices(weight.T, torch.float32, "lm_head").tofile(written)
    assert written.getvalue() == weight.T.to(torch.float32).contiguous().numpy().tobytes()
    assert len(made) > 1 and max(made) <= 1024


def test_the_patched_builder_registers_initializers_that_save_as_the_shipped_ones(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    importlib.import_module("onnxruntime_genai.models")
    base = importlib.import_module("builders.base")  # the copy the builder script uses
    shipped = base.Model.make_initializer
    monkeypatch.setattr(base.Model, "make_initializer", shipped)  # restored after the test
    weight = torch.randn(64, 24).to(torch.bfloat16)

    def saved(make_initializer: Any, folder: Path) -> bytes:
        graph = ir.Graph([], [], nodes=[], name="g")
        builder = SimpleNamespace(model=ir.Model(graph, ir_version=10),
                                  make_value=lambda name, dtype, shape: ir.Value(
                                      name=name, type=ir.TensorType(dtype), shape=shape))
        make_initializer(builder, weight.T, "w", to=ir.DataType.FLOAT)
        folder.mkdir()
        ir.save(builder.model, str(folder / "m.onnx"), external_data="m.onnx.data", size_threshold_bytes=0)
        return (folder / "m.onnx.data").read_bytes()

    expected = saved(shipped, tmp_path / "shipped")
    genai_child.install()
    assert base.Model.make_initializer is not shipped
    assert saved(base.Model.make_initializer, tmp_path / "sliced") == expected
