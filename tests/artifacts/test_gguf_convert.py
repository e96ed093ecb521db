"""A GGUF file dequantized into a transformers folder a tensor at a time (gguf_convert): the weights transformers'
own GGUF loader makes, each big tensor dequantized a slice of rows at a time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from npuctl.artifacts import progress
from npuctl.artifacts.sources import gguf_convert
from tests.tiny_gguf import write_gguf


def test_a_q4_0_file_becomes_the_weights_transformers_loads_a_slice_at_a_time(
        tiny_llama_source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = write_gguf(tiny_llama_source, tmp_path / "tiny.gguf", "Q4_0")
    tensors = {t.name: 4 * int(t.n_elements) for t in gguf.GGUFReader(str(file)).tensors}
    made: list[int] = []
    shipped = gguf.dequantize

    def counting(data: np.ndarray, qtype: Any) -> np.ndarray:
        values = shipped(data, qtype)
        made.append(values.nbytes)
        return values

    monkeypatch.setattr(gguf_convert, "SLICE_BYTES", 1024)
    monkeypatch.setattr(gguf, "dequantize", counting)
    reports: list[progress.Progress] = []
    with progress.reporting(lambda done, message: reports.append(done)):
        assert gguf_convert.main([str(file), str(tmp_path / "out")]) == 0
    monkeypatch.undo()
    # Its progress: tensors dequantized, up to all of them.
    assert [r.done for r in reports] == list(range(1, len(tensors) + 1))
    assert {(r.total, r.unit) for r in reports} == {(len(tensors), "tensors")}
    written = load_file(str(tmp_path / "out" / "model.safetensors"))
    loaded = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=file.name, dtype=torch.float32)
    expected = loaded.state_dict()
    assert sorted(written) == sorted(expected)
    assert all(torch.equal(written[name], expected[name]) for name in expected)
    # Big tensors (the embedding) are dequantized in slices within the bound; only Q/K (reordered whole) and the
    # 1-D norms (smaller than a slice) are dequantized whole.
    whole = max(size for name, size in tensors.items() if ".attn_q." in name or ".attn_k." in name)
    assert len(made) > len(tensors) and max(made) <= max(1024, whole) < max(tensors.values())
    assert (tmp_path / "out" / "config.json").is_file() and (tmp_path / "out" / "tokenizer.json").is_file()
