"""The model builder's child (genai_child): its weights cast and written a slice at a time (the same bytes as the
builder's own whole-tensor cast, never more than a slice made at once), its log read as progress, and running out
of memory reported as that."""

from __future__ import annotations

import importlib
import io
import os
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import onnx_ir as ir
import pytest
import torch
from onnx_ir import tensor_adapters

from npuctl.artifacts import BuildError, BuildResult, Store, facts, progress
from npuctl.artifacts.llm import genai, genai_child


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


def test_the_builders_log_is_passed_on_and_read_as_layers_converted() -> None:
    out = io.StringIO()
    log = genai_child.BuilderLog(out, layers=2)
    reports: list[tuple[progress.Progress, str | None]] = []
    with progress.reporting(lambda done, message: reports.append((done, message))):
        log.write("Reading embedding layer\nReading layer 0\nReading la")
        log.write("yer 1\nReading final norm\nSaving ONNX model in out\n")
    assert out.getvalue().count("\n") == 5 and "Reading layer 1\n" in out.getvalue()
    assert [(r.done, r.total, r.unit, message) for r, message in reports] == [
        (0, 2, "layers", "converting"), (1, 2, "layers", "converting"), (2, 2, "layers", "converting"),
        (2, 2, "layers", "saving the model")]


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX's; Windows reports STATUS_NO_MEMORY")
def test_a_builder_killed_for_memory_is_reported_as_out_of_memory_with_its_peak_and_the_estimate(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The builder's child allocates 300 MB and is SIGKILLed, as the kernel does when memory runs out: Python runs
    # sitecustomize.py from PYTHONPATH first thing in every process.
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import os, signal, time\nhoard = bytearray(300 * 2**20)\nfor at in range(0, len(hoard), 4096):\n"
        "    hoard[at] = 1\ntime.sleep(1)\nos.kill(os.getpid(), signal.SIGKILL)\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(hook), *sys.path]))
    needs = facts.Preflight(parameters=10**9, peak_rss_bytes=7 << 30, stage_rss_bytes={"genai-builder": 3 << 30},
                            disk_bytes=16 * 10**9, seconds=600.0, available_memory_bytes=20 << 30,
                            free_disk_bytes=100 * 10**9)
    with pytest.raises(BuildError) as failed:
        genai.run_builder(tmp_path, tmp_path / "out", "fp32", needs)
    assert failed.value.step == "genai-builder"
    message = failed.value.message
    assert message.startswith("genai-builder ran out of memory: peak 0.3 GiB, pre-flight estimated 3.0 GiB")
    assert "20.0 GiB were available when the build started" in message and "npuctl build --publish" in message
    assert "exit -9" not in message


def test_the_builders_peak_memory_is_in_its_steps_facts(tiny_llama_build: BuildResult, tiny_llama_store: Store) -> None:
    (record,) = [r for r in tiny_llama_store.records() if r.step == "genai-builder"]
    assert isinstance(record.details, facts.GenaiBuilder) and record.details.memory is not None
    assert record.details.memory.peak_rss_bytes > 100 << 20  # a Python with torch and transformers loaded, at least
