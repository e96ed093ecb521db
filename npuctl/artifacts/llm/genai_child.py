"""onnxruntime-genai's model builder run in this child process (`python -m npuctl.artifacts.llm.genai_child
<the builder's arguments>`), its casts made a slice of rows at a time as each weight is written, and its log read
as the step's progress (the layers converted).

The builder loads the checkpoint in its own dtype (transformers' `dtype="auto"`: bf16 for Llama/Qwen releases,
2 bytes per parameter, memory-mapped) and registers every weight as a lazy cast to the graph's dtype. As shipped,
that cast makes the whole fp32 tensor and, for a transposed weight, a contiguous copy of it: 8 bytes per element
of the largest tensor at once (the 128k-vocabulary lm_head of Llama-3.2: 2 GiB). Cast and written in slices of
rows, a tensor costs a slice. The bytes written are the same: the cast is elementwise, and the rows of a
row-major tensor are its consecutive blocks."""

from __future__ import annotations

import importlib
import json
import re
import runpy
import sys
from pathlib import Path
from typing import IO, Any, cast

from npuctl.artifacts import children, progress

SLICE_BYTES = 64 << 20
"""Bytes of the cast tensor made at once while it is written."""


class CastInSlices:
    """What a weight's lazy cast evaluates to: `source` as `dtype`, written a slice of rows at a time. Anything
    else read from it (numpy, bytes: the int4 quantizer) is the whole cast, as the builder's own would be."""

    def __init__(self, source: Any, dtype: Any, name: str) -> None:
        self.source, self.cast_to, self.name = source, dtype, name

    def whole(self) -> Any:
        from onnx_ir.tensor_adapters import TorchTensor

        return TorchTensor(self.source.to(self.cast_to), name=self.name)

    def tofile(self, file: IO[bytes]) -> None:
        from onnx_ir.tensor_adapters import TorchTensor

        if self.source.dim() == 0:
            self.whole().tofile(file)
            return
        row_bytes = max(1, self.source[0].numel() * self.cast_to.itemsize)
        rows = max(1, SLICE_BYTES // row_bytes)
        for start in range(0, self.source.shape[0], rows):
            TorchTensor(self.source[start:start + rows].to(self.cast_to), name=self.name).tofile(file)

    def numpy(self) -> Any:
        return self.whole().numpy()

    def tobytes(self) -> bytes:
        return bytes(self.whole().tobytes())

    def __array__(self, dtype: Any = None) -> Any:
        return self.whole().__array__(dtype)


def install() -> None:
    """Make the builder's cast initializers evaluate to CastInSlices (its other initializers are unchanged)."""
    import onnx_ir as ir
    import torch
    from onnx_ir.tensor_adapters import to_torch_dtype

    # The builder script imports its classes as the top-level `builders` package (its folder is put on sys.path
    # by onnxruntime_genai.models), a copy apart from onnxruntime_genai.models.builders: that copy is patched.
    importlib.import_module("onnxruntime_genai.models")
    base = importlib.import_module("builders.base")
    shipped = base.Model.make_initializer

    def make_initializer(self: Any, tensor: Any, /, name: str, *, to: Any = None, raw: bool = False) -> None:
        if raw or to is None or not isinstance(tensor, torch.Tensor):
            shipped(self, tensor, name, to=to, raw=raw)
            return
        cast_to = to_torch_dtype(to)
        # LazyTensor asks of what its function returns only what CastInSlices has (tofile, numpy, tobytes).
        lazy = ir.LazyTensor(lambda: cast(ir.TensorProtocol, CastInSlices(tensor, cast_to, name)), dtype=to,
                             shape=ir.Shape(tensor.shape), name=name)
        value = self.make_value(name, lazy.dtype, lazy.shape)
        value.const_value = lazy
        self.model.graph.register_initializer(value)

    base.Model.make_initializer = make_initializer


class BuilderLog:
    """The builder's stdout, passed on and read as progress: it prints `Reading layer N` as it converts each
    layer, then `Saving ONNX model`."""

    _LAYER = re.compile(r"Reading layer (\d+)")

    def __init__(self, out: IO[str], layers: int | None) -> None:
        self.out, self.layers = out, layers
        self.read_layers = 0
        self.pending = ""

    def write(self, text: str) -> int:
        self.out.write(text)
        *lines, self.pending = (self.pending + text).split("\n")
        for line in lines:
            self.read(line)
        return len(text)

    def flush(self) -> None:
        self.out.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.out, name)  # the rest of a text stream (encoding, isatty...) is stdout's

    def read(self, line: str) -> None:
        if found := self._LAYER.match(line):
            self.read_layers = int(found.group(1))  # counted from 0: the number of layers read before it
            progress.report(self.read_layers, self.layers, "layers", "converting")
        elif line.startswith("Reading final norm"):
            self.read_layers = self.layers or self.read_layers + 1
            progress.report(self.read_layers, self.layers, "layers", "converting")
        elif line.startswith("Saving ONNX model"):
            progress.report(self.read_layers, self.layers, "layers", "saving the model")


def layers(source: Path) -> int | None:
    """The checkpoint's layer count, if its config.json says (the builder's log does not)."""
    try:
        config = json.loads((source / "config.json").read_text(encoding="utf-8"))
        count = config.get("num_hidden_layers") or config.get("text_config", {}).get("num_hidden_layers")
    except (OSError, ValueError, AttributeError):
        return None
    return count if isinstance(count, int) and not isinstance(count, bool) and count > 0 else None


if __name__ == "__main__":
    install()
    source = Path(sys.argv[sys.argv.index("-i") + 1])
    sys.stdout = BuilderLog(sys.stdout, layers(source))
    sys.argv = ["onnxruntime_genai.models.builder", *sys.argv[1:]]
    with children.to_parent():
        runpy.run_module("onnxruntime_genai.models.builder", run_name="__main__", alter_sys=True)
